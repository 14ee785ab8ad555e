// What the page tests share: a real `parley run` on free loopback ports
// with a temporary data folder, Debian's Chromium through playwright-core,
// signing in, and screenshots kept as artifacts.

import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');
export const artifacts = join(here, 'artifacts');
// SCREENS_DIR, when set, also gets a copy of every screenshot.
const screensDir = process.env.SCREENS_DIR || '';

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

// startParley runs `go run ./cmd/parley run` from the repository root and
// resolves once its page answers. The first run builds the binary, which
// can take minutes on a cold cache.
export async function startParley() {
  const [http, admin] = [await freePort(), await freePort()];
  const data = mkdtempSync(join(tmpdir(), 'parley-webtest-'));
  const out = [];
  const proc = spawn('go', ['run', './cmd/parley', 'run'], {
    cwd: repoRoot,
    env: {
      ...process.env,
      PARLEY_JWT_SECRET: 'web-test-secret-web-test-secret-0123456789',
      PARLEY_DATA_DIR: data,
      PARLEY_HTTP_ADDR: `127.0.0.1:${http}`,
      PARLEY_ADMIN_ADDR: `127.0.0.1:${admin}`
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true
  });
  const keep = (b) => { out.push(b.toString()); if (out.length > 400) out.shift(); };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  proc.on('exit', (code, sig) => { exited = `exit ${code ?? sig}`; });
  const url = `http://127.0.0.1:${http}/`;
  const deadline = Date.now() + 6 * 60 * 1000;
  for (;;) {
    if (exited) throw new Error(`parley run ended (${exited}):\n${out.join('')}`);
    if (Date.now() > deadline) throw new Error(`parley run did not serve ${url}:\n${out.join('')}`);
    try {
      const ready = await fetch(`http://127.0.0.1:${admin}/readyz`);
      const page = await fetch(url);
      if (ready.ok && page.ok) break;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url,
    log: () => out.join(''),
    async stop() {
      if (!exited) {
        // go run starts the binary as a child: end the whole group.
        try { process.kill(-proc.pid, 'SIGTERM'); } catch { /* gone */ }
        await new Promise((r) => { if (exited) r(); else proc.on('exit', r); setTimeout(r, 10000); });
      }
      rmSync(data, { recursive: true, force: true });
    }
  };
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.PARLEY_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage']
  });
}

export const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
export const DESKTOP = { viewport: { width: 1280, height: 800 } };

// signIn opens the page in a new browser context (a tab of its own: a
// device of its own, since the page keeps its device id per tab).
export async function signIn(browser, url, user, options = DESKTOP) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  page.on('pageerror', (e) => { page.errors = (page.errors || []).concat(String(e)); });
  await page.goto(url);
  await page.fill('#user-input', user);
  await page.click('#login-button');
  await page.waitForSelector('#status[data-state="connected"]');
  return page;
}

export async function screenshot(page, name) {
  mkdirSync(artifacts, { recursive: true });
  const file = join(artifacts, `${name}.png`);
  await page.screenshot({ path: file });
  if (screensDir) {
    mkdirSync(screensDir, { recursive: true });
    copyFileSync(file, join(screensDir, `${name}.png`));
  }
  return file;
}

// listItem is the conversation list's entry titled title.
export function listItem(page, title) {
  return page.locator('#conversation-list .conversation').filter({ has: page.locator('.conv-title', { hasText: title }) });
}

// unreadOf is the entry's unread count: its badge's, 0 without one.
export async function unreadOf(page, title) {
  return page.evaluate((t) => {
    const li = Array.from(document.querySelectorAll('#conversation-list .conversation'))
      .find((n) => (n.querySelector('.conv-title') || {}).textContent === t);
    if (!li) return -1;
    const b = li.querySelector('.unread');
    return b ? Number(b.dataset.count) : 0;
  }, title);
}

export async function createGroup(page, title, members) {
  await page.click('#new-button');
  await page.fill('#new-group-title', title);
  await page.fill('#new-group-members', members.join(', '));
  await page.click('#new-group-button');
  await page.waitForFunction((t) => document.querySelector('#conversation-title').textContent === t, title);
}

export async function send(page, text) {
  await page.fill('#composer-input', text);
  await page.click('#send-button');
  await page.waitForFunction((t) => Array.from(document.querySelectorAll('#messages .message.own'))
    .some((n) => n.querySelector('.text').textContent === t && n.dataset.seq), text);
}

// eventually retries fn until it returns without throwing.
export async function eventually(fn, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try { return await fn(); } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

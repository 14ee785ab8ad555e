// What the page tests share: a real `parley run` on free loopback ports
// with a temporary data folder, Debian's Chromium through playwright-core,
// signing in, and screenshots kept as artifacts.

import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { after, before } from 'node:test';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../../sdk/js/test/server.js';

const here = dirname(fileURLToPath(import.meta.url));
export const artifacts = join(here, 'artifacts');
// SCREENS_DIR, when set, also gets a copy of every screenshot.
const screensDir = process.env.SCREENS_DIR || '';

// startParley runs a real `parley run` with the SDK tests' starter (one
// way to build and start it in the repository) and gives the page's URL.
export async function startParley() {
  const s = await startServer();
  return { url: `http://${s.http}/`, log: () => s.log.join(''), stop: () => s.stop() };
}

// useParley registers the hooks every page test file needs: a server and
// a browser before its tests, both ended after them. The returned object
// holds them once the before hook has run.
export function useParley() {
  const ctx = { server: null, browser: null };
  before(async () => {
    ctx.server = await startParley();
    ctx.browser = await launch();
  });
  after(async () => {
    await ctx.browser?.close();
    // The server's last lines, for a failure to be read after the fact
    // (`make web-test` prints them when a test failed).
    if (ctx.server) {
      mkdirSync(artifacts, { recursive: true });
      writeFileSync(join(artifacts, `parley-run-${basename(process.argv[1] || 'test')}.log`), ctx.server.log());
    }
    await ctx.server?.stop();
  });
  return ctx;
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

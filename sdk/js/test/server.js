// Starts a real `parley run` for the tests: built from this repository
// with go, on free loopback ports, a temp data folder and a random
// signing secret; stop() kills it and removes the folder.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(fileURLToPath(import.meta.url), '../../../..');

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const b64url = (b) => Buffer.from(b).toString('base64url');

export async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'parley-sdk-js-'));
  // PARLEY_BIN reuses a built binary; otherwise build one (the Go build
  // cache makes a rebuild take seconds).
  let bin = process.env.PARLEY_BIN;
  if (!bin) {
    bin = join(dir, 'parley');
    execFileSync('go', ['build', '-o', bin, './cmd/parley'], { cwd: repo, stdio: 'inherit' });
  }
  const http = `127.0.0.1:${await freePort()}`;
  const admin = `127.0.0.1:${await freePort()}`;
  const secret = randomBytes(32).toString('hex');
  const log = [];
  const proc = spawn(bin, ['run', '-data', join(dir, 'data'), '-http', http, '-admin', admin], {
    env: { ...process.env, PARLEY_JWT_SECRET: secret },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (d) => { log.push(d.toString()); if (log.length > 200) log.shift(); };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  proc.on('exit', (code, sig) => { exited = `exit ${code ?? sig}`; });

  const deadline = Date.now() + 120000;
  for (;;) {
    if (exited) throw new Error(`parley run ended (${exited}):\n${log.join('')}`);
    try {
      const r = await fetch(`http://${admin}/readyz`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`parley run not ready in 120 s:\n${log.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url: `ws://${http}/ws`,
    http,
    log,
    // token fetches a dev token from the edge, as an app's login would.
    async token(user) {
      const r = await fetch(`http://${http}/v1/dev/token?user=${encodeURIComponent(user)}`);
      if (!r.ok) throw new Error(`dev token: HTTP ${r.status}`);
      return (await r.json()).token;
    },
    // mint signs a token with the server's secret and a chosen lifetime.
    mint(user, seconds) {
      const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
      const body = b64url(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + seconds }));
      const sig = createHmac('sha256', Buffer.from(secret)).update(`${head}.${body}`).digest('base64url');
      return `${head}.${body}.${sig}`;
    },
    async stop() {
      if (!exited) {
        const gone = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
        await gone;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

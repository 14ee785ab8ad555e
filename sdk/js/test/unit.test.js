// Parts that need no server: backoff, trackers, ids, and the lazy
// loading of the binary codec.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { backoffDelay, newClientMsgId, reconnectDefaults, StatusTracker, TypingTracker } from '../src/index.js';

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../src');

test('backoff doubles from minDelayMs up to maxDelayMs, jittered within [d/2, d]', () => {
  const p = reconnectDefaults({ minDelayMs: 100, maxDelayMs: 1000 });
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((n) => backoffDelay(p, n, () => 1)), [100, 200, 400, 800, 1000, 1000]);
  assert.deepEqual([0, 3, 10].map((n) => backoffDelay(p, n, () => 0)), [50, 400, 500]);
  const d = reconnectDefaults();
  assert.equal(d.minDelayMs, 250);
  assert.equal(d.maxDelayMs, 30000);
  assert.equal(d.keepAliveMs, 30000);
});

test('client message ids are UUIDv7, distinct and time-ordered', () => {
  const ids = Array.from({ length: 200 }, () => newClientMsgId());
  for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(new Set(ids).size, ids.length);
  const ms = parseInt(ids[0].replace(/-/g, '').slice(0, 12), 16);
  assert.ok(Math.abs(ms - Date.now()) < 5000);
});

test('status counts other devices and users, never the sender, and only grows', () => {
  const t = new StatusTracker('alice');
  t.sent('c', '5');
  t.sent('c', '7');
  const changed = t.apply([
    { conversationId: 'c', userId: 'alice', deviceId: 'a1', deliveredSeq: '9', readSeq: '9' },
    { conversationId: 'c', userId: 'bob', deviceId: 'b1', deliveredSeq: '6', readSeq: '5' },
    { conversationId: 'c', userId: 'bob', deviceId: 'b2', deliveredSeq: '7' },
  ]);
  assert.deepEqual(changed, [
    { conversationId: 'c', seq: 5, delivered: 2, read: 1 },
    { conversationId: 'c', seq: 7, delivered: 1, read: 0 },
  ]);
  assert.deepEqual(t.apply([{ conversationId: 'c', userId: 'bob', deviceId: 'b1', deliveredSeq: '1', readSeq: '1' }]), []);
  assert.deepEqual(t.event({ conversationId: 'c', seq: '8', senderId: 'carol', senderDeviceId: 'c1' }), [
    { conversationId: 'c', seq: 5, delivered: 3, read: 2 },
    { conversationId: 'c', seq: 7, delivered: 2, read: 1 },
  ]);
});

test('typing shows an indicator until it expires or stops', () => {
  let now = 1000;
  const t = new TypingTracker(() => now);
  t.apply([{ conversationId: 'c', userId: 'bob', expiresInMs: 6000 }, { conversationId: 'c', userId: 'al', expiresInMs: 100 }]);
  assert.deepEqual(t.typing('c'), ['al', 'bob']);
  now += 200;
  assert.deepEqual(t.typing('c'), ['bob']);
  t.apply([{ conversationId: 'c', userId: 'bob', stopped: true }]);
  assert.deepEqual(t.typing('c'), []);
});

// The page speaks JSON and cannot resolve @bufbuild/protobuf: no module
// it loads may import protobuf code statically; only codec.js reaches
// codec-proto.js, and only through import().
test('the binary codec is loaded lazily', () => {
  const staticImport = /^\s*(?:import|export)\b[^;]*?\bfrom\s*'([^']+)'/gm;
  const seen = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(staticImport)) {
      assert.ok(m[1].startsWith('./'), `${file} imports ${m[1]} statically`);
      visit(join(dirname(file), m[1]));
    }
  };
  visit(join(src, 'index.js'));
  assert.ok(!seen.has(join(src, 'codec-proto.js')), 'codec-proto.js is imported statically');
  assert.match(readFileSync(join(src, 'codec.js'), 'utf8'), /await import\('\.\/codec-proto\.js'\)/);
  for (const f of readdirSync(src)) if (f !== 'codec-proto.js') seen.has(join(src, f)) || assert.fail(`${f} is not reachable from index.js`);
});

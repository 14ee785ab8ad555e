// The SDK against a real `parley run`, on each subprotocol.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { Client, newClientMsgId } from '../src/index.js';
import { startServer } from './server.js';
import { collect, controlledWS, range, seqs, sleep, waitState } from './harness.js';

let server;
const clients = [];

before(async () => { server = await startServer(); });
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  if (server) await server.stop();
});

let userN = 0;
// user names are unique per test so no two tests share a conversation.
const uniq = (name) => `${name}-${process.pid}-${++userN}`;

// client connects a user; opts may add reconnect, WebSocket, etc.
async function client(subprotocol, user, opts = {}) {
  const ctl = controlledWS();
  const tokens = [];
  const c = new Client({
    url: server.url,
    WebSocket: ctl.WebSocket,
    subprotocol,
    getToken: async (info) => { tokens.push(info.reason); return server.token(user); },
    reconnect: { minDelayMs: 50, maxDelayMs: 200, attemptTimeoutMs: 5000 },
    gapWaitMs: 5000,
    ...opts,
  });
  clients.push(c);
  const events = collect(c);
  const me = await c.connect();
  assert.equal(me.userId, user);
  return { c, ctl, events, tokens };
}

// waitHistory waits until history holds the conversation up to seq.
async function waitHistory(c, conv, seq) {
  for (let i = 0; i < 100; i++) {
    const p = await c.history(conv, { limit: 1 });
    if (p.events.length && Number(p.events[0].seq) >= seq) return;
    await sleep(50);
  }
  throw new Error(`history of ${conv} never reached seq ${seq}`);
}

// waitInbox is waitHistory for an inbox, which exists only once its first
// item was sequenced and stored: NOT_FOUND until then.
async function waitInbox(c, inbox, seq) {
  for (let i = 0; i < 100; i++) {
    try {
      await waitHistory(c, inbox, seq);
      return;
    } catch (err) {
      if (err.code !== 'ERROR_CODE_NOT_FOUND') throw err;
      await sleep(50);
    }
  }
  throw new Error(`inbox ${inbox} never reached seq ${seq}`);
}

for (const subprotocol of ['json', 'binary']) {
  // Timeouts turn a wait that never ends into a failure.
  describe(`${subprotocol} subprotocol`, { timeout: 120000 }, () => {
    const wire = subprotocol === 'json' ? 'parley.v1.json' : 'parley.v1.proto';

    test('speaks the subprotocol and delivers each conversation in order', async () => {
      const alice = uniq('alice');
      const bob = uniq('bob');
      const a = await client(subprotocol, alice);
      const b = await client(subprotocol, bob);
      assert.deepEqual(a.ctl.protocols, [wire]);
      const g1 = (await a.c.createGroup('one', [bob])).conversationId;
      const g2 = (await a.c.createGroup('two', [bob])).conversationId;
      // Sent without waiting for each other: the server orders them.
      const sent = [];
      for (let i = 0; i < 15; i++) {
        sent.push(a.c.send(g1, `g1 ${i}`), b.c.send(g2, `g2 ${i}`));
      }
      const acc = await Promise.all(sent);
      assert.equal(new Set(acc.map((x) => `${x.conversationId}/${x.seq}`)).size, 30, 'every send has its own seq');
      for (const who of [a, b]) {
        await who.events.until((all) => all.filter((e) => e.conversationId === g1).length === 16
          && all.filter((e) => e.conversationId === g2).length === 16);
        assert.deepEqual(seqs(who.events.of(g1)), range(1, 16));
        assert.deepEqual(seqs(who.events.of(g2)), range(1, 16));
      }
      // Both members saw the same event at each seq.
      assert.deepEqual(a.events.of(g1).map((e) => e.eventId), b.events.of(g1).map((e) => e.eventId));
      // Each of alice's messages is at the seq her accepted said.
      for (const x of acc.filter((y) => y.conversationId === g1)) {
        assert.equal(b.events.of(g1)[Number(x.seq) - 1].clientMsgId, x.clientMsgId);
      }
      // The per-conversation stream carries the same, and only g2.
      const it = b.c.events(g2);
      const more = b.c.send(g2, 'after');
      const { value } = await it.next();
      await it.return();
      assert.equal(value.conversationId, g2);
      assert.equal(Number(value.seq), 17);
      assert.equal(value.clientMsgId, (await more).clientMsgId);
    });

    test('offline, then resume: missed events arrive once and in order', async () => {
      const alice = uniq('alice');
      const bob = uniq('bob');
      const a = await client(subprotocol, alice);
      const b = await client(subprotocol, bob);
      const g = (await a.c.createGroup('resume', [bob])).conversationId;
      await a.c.send(g, 'before');
      await b.events.until((all) => all.filter((e) => e.conversationId === g).length === 2);

      b.ctl.offline = true;
      const down = waitState(b.c, 'reconnecting');
      b.ctl.drop();
      await down;
      assert.equal(b.c.connected, false);
      for (let i = 0; i < 12; i++) await a.c.send(g, `missed ${i}`);
      await sleep(300); // bob keeps failing to redial meanwhile
      assert.equal(b.events.of(g).length, 2, 'nothing arrives while offline');

      const resumed = waitState(b.c, 'resumed');
      const connected = waitState(b.c, 'connected');
      b.ctl.offline = false;
      b.c.reconnectNow();
      assert.equal((await connected).resuming, true);
      const r = (await resumed).resumed;
      assert.ok((r.caughtUp || []).some((cu) => cu.conversationId === g && Number(cu.lastSeq) === 14), JSON.stringify(r));
      await b.events.until((all) => all.filter((e) => e.conversationId === g).length === 14);
      await a.c.send(g, 'live again');
      await b.events.until((all) => all.filter((e) => e.conversationId === g).length === 15);
      await sleep(200);
      const got = b.events.of(g);
      assert.deepEqual(seqs(got), range(1, 15));
      assert.deepEqual(got.slice(2, 14).map((e) => e.messagePosted.text), range(0, 11).map((i) => `missed ${i}`));
      assert.ok(b.tokens.length >= 2 && b.tokens.slice(1).every((x) => x === 'reconnect'), `token reasons ${b.tokens}`);
    });

    test('dedupe: an overlapping resume and repeated frames deliver each event once', async () => {
      const alice = uniq('alice');
      const bob = uniq('bob');
      const a = await client(subprotocol, alice);
      const b = await client(subprotocol, bob);
      const g = (await a.c.createGroup('dedupe', [bob])).conversationId;
      for (let i = 0; i < 5; i++) await a.c.send(g, `m${i}`);
      await b.events.until((all) => all.filter((e) => e.conversationId === g).length === 6);

      // The server is asked to resume from 0: it sends seqs 1-8 again.
      b.ctl.rewindResume = true;
      const resumed = waitState(b.c, 'resumed');
      b.ctl.drop();
      const r = (await resumed).resumed;
      assert.ok((r.caughtUp || []).some((cu) => cu.conversationId === g), JSON.stringify(r));
      // Every frame now arrives twice.
      b.ctl.duplicate = true;
      await a.c.send(g, 'm5');
      await a.c.send(g, 'm6');
      await b.events.until((all) => all.filter((e) => e.conversationId === g).length >= 8);
      await sleep(300);
      assert.deepEqual(seqs(b.events.of(g)), range(1, 8));
    });

    test('send: a retry under the same client id makes one message', async () => {
      const alice = uniq('alice');
      const bob = uniq('bob');
      const a = await client(subprotocol, alice);
      const b = await client(subprotocol, bob);
      const g = (await a.c.createGroup('retry', [bob])).conversationId;

      // The same id twice: one seq, the second answer a duplicate.
      const id = newClientMsgId();
      const first = await a.c.send(g, 'once', { clientMsgId: id });
      const again = await a.c.send(g, 'once', { clientMsgId: id });
      assert.equal(again.seq, first.seq);
      assert.equal(again.duplicate, true);
      assert.ok(!first.duplicate);

      // The connection dies right after the frame is written, before
      // the answer: the SDK reconnects and sends it again, same id.
      const lostId = newClientMsgId();
      let cut = 0;
      a.ctl.onSend = (ws, data, send) => {
        if (cut || !Buffer.from(data).includes(Buffer.from(lostId))) return false;
        cut++;
        send(data, () => ws.terminate());
        return true;
      };
      const acc = await a.c.send(g, 'lost answer', { clientMsgId: lostId });
      assert.equal(cut, 1, 'the connection was cut under the send');
      assert.equal(acc.clientMsgId, lostId);

      await b.events.until((all) => all.some((e) => e.clientMsgId === lostId));
      await a.c.send(g, 'after');
      await b.events.until((all) => all.filter((e) => e.conversationId === g).length === 4);
      await waitHistory(a.c, g, 4);
      const hist = (await a.c.history(g, { afterSeq: 0 })).events;
      assert.deepEqual(seqs(hist), range(1, 4));
      assert.equal(hist.filter((e) => e.clientMsgId === id).length, 1);
      assert.equal(hist.filter((e) => e.clientMsgId === lostId).length, 1);
      assert.equal(hist.find((e) => e.clientMsgId === lostId).seq, acc.seq);
      assert.equal(b.events.of(g).filter((e) => e.clientMsgId === lostId).length, 1);
    });

    test('history pages backward and forward', async () => {
      const alice = uniq('alice');
      const a = await client(subprotocol, alice);
      const g = (await a.c.createGroup('paging', [])).conversationId;
      for (let i = 0; i < 25; i++) await a.c.send(g, `p${i}`);
      await waitHistory(a.c, g, 26);

      const back = [];
      for await (const page of a.c.historyPages(g, { limit: 10 })) back.push(page);
      assert.deepEqual(back.map((p) => seqs(p.events)), [range(17, 26), range(7, 16), range(1, 6)]);
      assert.deepEqual(back.map((p) => p.hasMore), [true, true, false]);

      const fwd = [];
      for await (const page of a.c.historyPages(g, { direction: 'forward', afterSeq: 3, limit: 10 })) fwd.push(page);
      assert.deepEqual(fwd.map((p) => seqs(p.events)), [range(4, 13), range(14, 23), range(24, 26)]);
      assert.equal(fwd[0].events[0].messagePosted.text, 'p2');
      assert.equal(fwd[0].events[0].conversationId, g);
    });

    test('contact requests and invitations through the inbox', async () => {
      const alice = uniq('alice');
      const bob = uniq('bob');
      const a = await client(subprotocol, alice);
      assert.equal(await a.c.requestContact(bob), 'CONTACT_STATE_OUTGOING');
      // bob was offline: his inbox holds the request when he connects.
      const b = await client(subprotocol, bob);
      const me = await b.c.connect();
      assert.ok(me.inboxId);
      await waitInbox(b.c, me.inboxId, 2);
      const inbox = await b.c.history(me.inboxId, { afterSeq: 0 });
      assert.equal(inbox.events[0].conversationCreated.kind, 'CONVERSATION_KIND_INBOX');
      assert.deepEqual(inbox.events[1].contactUpdated,
        { userId: alice, action: 'CONTACT_ACTION_REQUESTED', state: 'CONTACT_STATE_INCOMING', ownerId: bob });
      assert.equal(await b.c.respondContact(alice, true), 'CONTACT_STATE_CONTACT');
      // The list is read from history, a moment behind the inbox.
      let contacts = [];
      for (let i = 0; i < 100; i++) {
        contacts = await a.c.listContacts();
        if (contacts.length && contacts[0].state === 'CONTACT_STATE_CONTACT') break;
        await sleep(50);
      }
      assert.deepEqual(contacts.map((x) => [x.userId, x.state]), [[bob, 'CONTACT_STATE_CONTACT']]);

      const club = (await a.c.createGroup('club', [], { consent: true })).conversationId;
      await a.c.addMember(club, bob);
      await waitInbox(b.c, me.inboxId, 4);
      const item = (await b.c.history(me.inboxId, { limit: 1 })).events[0].invitationUpdated;
      assert.equal(item.conversationId, club);
      assert.equal(item.action, 'INVITATION_ACTION_INVITED');
      const joined = await b.c.respondInvitation(club, true);
      assert.equal(joined.joined, true);
      assert.equal(Number(joined.seq), 3);
      await assert.rejects(b.c.respondInvitation(uniq('nowhere'), true), { code: 'ERROR_CODE_NOT_FOUND' });
      assert.deepEqual(await b.c.setContactsOnly(true), { contactsOnly: true });
    });

    test('receipts, status, typing and presence', async () => {
      const alice = uniq('alice');
      const bob = uniq('bob');
      const a = await client(subprotocol, alice, { trackStatus: true });
      const b = await client(subprotocol, bob);
      const g = (await a.c.createGroup('status', [bob])).conversationId;
      const statuses = [];
      a.c.on('status', (list) => statuses.push(...list));
      const m = await a.c.send(g, 'read me');
      assert.deepEqual(a.c.status(g, m.seq), { conversationId: g, seq: Number(m.seq), delivered: 0, read: 0 });
      await b.events.until((all) => all.some((e) => e.clientMsgId === m.clientMsgId));

      const pushed = new Promise((res) => a.c.on('receipts', (rs) => { if (rs.some((r) => r.userId === bob)) res(rs); }));
      const own = await b.c.mark(g, { deliveredSeq: m.seq, readSeq: m.seq });
      assert.equal(own.userId, bob);
      assert.equal(Number(own.readSeq), Number(m.seq));
      await pushed;
      assert.deepEqual(a.c.status(g, m.seq), { conversationId: g, seq: Number(m.seq), delivered: 1, read: 1 });
      assert.ok(statuses.some((s) => s.seq === Number(m.seq) && s.read === 1));
      assert.deepEqual(await a.c.seenBy(g, m.seq), [bob]);

      const typing = new Promise((res) => b.c.on('typing', (ts) => res(ts)));
      await a.c.typing(g);
      const ts = await typing;
      assert.equal(ts[0].userId, alice);
      assert.equal(ts[0].conversationId, g);

      const seen = await b.c.watchPresence([alice]);
      assert.equal(seen[0].userId, alice);
      assert.equal(seen[0].state, 'PRESENCE_STATE_ONLINE');
    });

    test('token provider: a token about to expire is refreshed on the connection', { timeout: 15000 }, async () => {
      const alice = uniq('alice');
      const reasons = [];
      const c = new Client({
        url: server.url,
        WebSocket: controlledWS().WebSocket,
        subprotocol,
        // 50 s: inside the server's one-minute warning, so it warns at once.
        getToken: async ({ reason }) => { reasons.push(reason); return server.mint(alice, reason === 'expiring' ? 3600 : 50); },
      });
      clients.push(c);
      const refreshed = new Promise((res) => c.on('tokenRefreshed', res));
      const me = await c.connect();
      const first = Date.parse(me.tokenExpires);
      const r = await refreshed;
      assert.deepEqual(reasons, ['connect', 'expiring']);
      assert.ok(Date.parse(r.expires) > first + 3000 * 1000, `${r.expires} after ${me.tokenExpires}`);
      assert.equal(c.tokenExpires, Date.parse(r.expires));
    });

    test('a refused token ends the client', async () => {
      const c = new Client({ url: server.url, WebSocket: controlledWS().WebSocket, subprotocol, token: 'not-a-jwt' });
      clients.push(c);
      await assert.rejects(c.connect(), (err) => err.code === 'AUTH_REJECTED' && err.cause.code === 'ERROR_CODE_UNAUTHENTICATED');
      assert.equal(c.state, 'closed');
    });
  });
}

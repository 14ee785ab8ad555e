// A typed use of the SDK: `tsc -p types` (in npm test) checks that
// index.d.ts describes an API a TypeScript app can call. Never run.

import { Client, ParleyError, type ContactStateName, type EventJson, type MessageStatus, type StateChange } from '@parley/sdk';

export async function example(url: string, getToken: () => Promise<string>): Promise<void> {
  const c = new Client({
    url,
    getToken: ({ reason }) => (reason === 'expiring' ? getToken() : getToken()),
    subprotocol: 'binary',
    reconnect: { minDelayMs: 100, maxDelayMs: 5000 },
    trackStatus: true,
    cursors: () => [{ conversationId: 'c', lastSeq: '4' }],
  });
  const off = c.on('state', (s: StateChange) => {
    if (s.state === 'reconnecting') console.log(s.delayMs, s.error?.code);
  });
  c.on('events', (evs: EventJson[]) => evs.forEach((e) => console.log(e.conversationId, e.seq, e.messagePosted?.text)));
  c.on('status', (ss: MessageStatus[]) => ss.forEach((s) => console.log(s.seq, s.read)));
  const me = await c.connect();
  console.log(me.userId, me.tokenExpires);

  const group = await c.createGroup('team', ['bob']);
  const conv: string = group.conversationId ?? '';
  const acc = await c.send(conv, { text: 'hi', mentionIds: ['bob'] }, { clientMsgId: 'x' });
  console.log(acc.seq, acc.duplicate);
  for await (const page of c.historyPages(conv, { limit: 50 })) {
    for (const e of page.events) console.log(e.seq);
  }
  for await (const e of c.events(conv)) {
    if (e.seq === '10') break;
  }
  try {
    await c.request({ ping: {} }, { wait: false });
  } catch (err) {
    if (err instanceof ParleyError && err.code === 'NOT_CONNECTED') console.log(err.retryAfterMs);
  }
  await c.mark(conv, { readSeq: acc.seq ?? 0 });
  const list = await c.listConversations({ limit: 10 });
  console.log(list.conversations[0]?.unreadCount, list.syncToken);
  const st: ContactStateName = await c.requestContact('bob');
  for (const ct of await c.listContacts()) console.log(ct.userId, ct.state, st);
  const club = await c.createGroup('club', [], { consent: true });
  const answer = await c.respondInvitation(club.conversationId ?? '', true);
  console.log(me.inboxId, answer.joined, answer.seq, (await c.setContactsOnly(true)).contactsOnly, (await c.getSettings()).contactsOnly);
  off();
  await c.close();
}

// One definition of unread (docs/PROTOCOL.md, "Unread"): the same group
// seen from bob's open tab (counting pushed events), a fresh tab of bob's
// (a new device, counting from the server's list) and another member,
// carol, shows the same unread count at every step.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createGroup, DESKTOP, eventually, listItem, screenshot, send, signIn, useParley, unreadOf } from './parley.js';

const GROUP = 'Unread agreement';
const ctx = useParley();

test('unread agrees across an open tab, a fresh device and another member', async () => {
  const alice = await signIn(ctx.browser, ctx.server.url, 'alice');
  const tab = await signIn(ctx.browser, ctx.server.url, 'bob');
  const carol = await signIn(ctx.browser, ctx.server.url, 'carol');
  let fresh = 0;

  // freshCount signs bob in on a new device and reads the group's count
  // from the list it loads, reloading while the server has not stored
  // the step yet.
  const freshCount = async (want) => {
    const page = await signIn(ctx.browser, ctx.server.url, 'bob', DESKTOP);
    fresh++;
    try {
      let got = -1;
      await eventually(async () => {
        await listItem(page, GROUP).waitFor({ timeout: 5000 });
        got = await unreadOf(page, GROUP);
        if (got !== want) {
          await page.reload();
          await page.waitForSelector('#status[data-state="connected"]');
          throw new Error(`fresh device ${fresh}: ${got}`);
        }
      }).catch(() => {});
      return got;
    } finally {
      await page.context().close();
    }
  };

  const step = async (name, bob, carolWant) => {
    const got = {};
    for (const [who, page, want] of [['bob-tab', tab, bob], ['carol', carol, carolWant]]) {
      await eventually(async () => {
        got[who] = await unreadOf(page, GROUP);
        assert.equal(got[who], want);
      }).catch(() => {});
    }
    got['bob-fresh'] = await freshCount(bob);
    assert.deepEqual(got, { 'bob-tab': bob, carol: carolWant, 'bob-fresh': bob }, `${name}: unread counts`);
  };

  await createGroup(alice, GROUP, ['bob', 'carol']);
  await listItem(tab, GROUP).waitFor();
  await listItem(carol, GROUP).waitFor();
  await step('created', 0, 0);

  // The case of the bug: one message and its creation event.
  await send(alice, 'one');
  await step('one message and its creation event', 1, 1);
  await screenshot(tab, 'unread-open-tab');

  // A reaction and a member added count for nobody.
  const one = alice.locator('#messages .message.event', { hasText: 'one' });
  await one.hover();
  await one.locator('.act-react').click();
  await alice.locator('#messages .react-picker button').first().click();
  await alice.waitForSelector('#messages .message.event .reaction');
  await alice.click('#members-button');
  await alice.fill('#add-member-input', 'dave');
  await alice.click('#add-member-button');
  await alice.waitForFunction(() => document.querySelector('#messages').textContent.includes('alice added dave'));
  await step('a reaction and a member added', 1, 1);

  await send(alice, 'two');
  await step('alice posted again', 2, 2);

  // bob reads and posts on his laptop: his tab counts nothing left.
  const laptop = await signIn(ctx.browser, ctx.server.url, 'bob');
  await listItem(laptop, GROUP).click();
  await send(laptop, 'three');
  await step('bob posted on his laptop', 0, 3);
  await laptop.context().close();

  await send(alice, 'four');
  await step('alice posted after bob', 1, 4);
  await screenshot(carol, 'unread-other-member');

  for (const [who, page] of [['alice', alice], ['bob', tab], ['carol', carol]]) {
    assert.deepEqual(page.errors || [], [], `${who}: no page errors`);
  }
});

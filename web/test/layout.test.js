// The page's layout at a phone's width (390 px) and a desktop's (1280 px):
// nothing wider than the screen, a readable header with Mute on screen,
// the new-chat forms behind "New", message actions behind hover or a tap,
// date separators, and one pane at a time on the phone.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createGroup, DESKTOP, listItem, PHONE, screenshot, send, signIn, useParley } from './parley.js';

const TITLE = 'Weekend plans for the whole climbing club';
const ctx = useParley();

// layout measures what the assertions need in one go.
function layout(page) {
  return page.evaluate(() => {
    const vw = window.innerWidth;
    const box = (sel) => {
      const n = document.querySelector(sel);
      if (!n) return null;
      const r = n.getBoundingClientRect();
      const cs = getComputedStyle(n);
      return { left: r.left, right: r.right, width: r.width, height: r.height, shown: r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' };
    };
    // Every shown element that reaches past the right edge.
    const past = Array.from(document.querySelectorAll('body *')).filter((n) => {
      const r = n.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && r.right > vw + 0.5 && !n.closest('.sr-only');
    }).map((n) => n.id || n.className || n.tagName).slice(0, 10);
    return {
      vw,
      scrollWidth: document.documentElement.scrollWidth,
      header: box('#chat-header'),
      title: box('#conversation-title'),
      mute: box('#mute-button'),
      sidebar: box('#sidebar'),
      chat: box('#chat'),
      back: box('#back-button'),
      past
    };
  });
}

function assertFits(l, where) {
  assert.ok(l.scrollWidth <= l.vw, `${where}: the page scrolls sideways (${l.scrollWidth} > ${l.vw})`);
  assert.deepEqual(l.past, [], `${where}: elements reach past the right edge`);
}

function assertHeader(l, where) {
  assert.ok(l.header.width <= l.vw, `${where}: the chat header is ${l.header.width} px wide in ${l.vw}`);
  assert.ok(l.title.shown && l.title.width > 40, `${where}: the title is ${l.title.width} px wide`);
  assert.ok(l.mute.shown && l.mute.left >= 0 && l.mute.right <= l.vw, `${where}: Mute at ${l.mute.left}-${l.mute.right} in ${l.vw}`);
}

// opacityOfActions is the computed opacity of the actions of the message
// whose text is text.
function opacityOfActions(page, text) {
  return page.evaluate((t) => {
    const m = Array.from(document.querySelectorAll('#messages .message.event')).find((n) => n.querySelector('.text').textContent === t);
    return m ? getComputedStyle(m.querySelector('.msg-actions')).opacity : 'none';
  }, text);
}

test('layout at 1280 px and 390 px', async () => {
  const alice = await signIn(ctx.browser, ctx.server.url, 'alice', DESKTOP);
  const bob = await signIn(ctx.browser, ctx.server.url, 'bob', PHONE);

  // The forms are behind "New" on both.
  for (const [who, page] of [['alice', alice], ['bob', bob]]) {
    assert.equal(await page.isVisible('#new-direct-input'), false, `${who}: the new-chat form shows before "New"`);
    assert.equal(await page.isVisible('#new-group-title'), false, `${who}: the new-group form shows before "New"`);
    assert.equal(await page.isVisible('#join-id'), false, `${who}: the join form shows before "New"`);
    assert.equal(await page.textContent('#whoami'), who, `${who}: the top bar shows the user's name, not a device id`);
  }
  await bob.click('#new-button');
  assert.equal(await bob.isVisible('#new-group-title'), true, 'bob: "New" shows the forms');
  assertFits(await layout(bob), 'phone, forms open');
  await screenshot(bob, 'phone-390-new-forms');
  await bob.click('#new-button');
  assert.equal(await bob.isVisible('#new-group-title'), false, 'bob: a second tap on "New" hides the forms');

  await createGroup(alice, TITLE, ['bob', 'carol']);
  assert.equal(await alice.isVisible('#new-group-title'), false, 'alice: the forms close once the group is made');
  await send(alice, 'Saturday at the crag?');
  await send(alice, 'Bring the long rope.');

  // Desktop: both panes, a header that fits, a day separator.
  await alice.waitForSelector('#messages .day-separator');
  const day = await alice.evaluate(() => {
    const first = document.querySelector('#messages').firstElementChild;
    return { first: first.className, label: first.textContent, count: document.querySelectorAll('#messages .day-separator').length };
  });
  assert.equal(day.first, 'day-separator', 'the list starts with a date separator');
  assert.equal(day.label, 'Today');
  assert.equal(day.count, 1, 'one separator for one day');
  let l = await layout(alice);
  assertFits(l, 'desktop');
  assertHeader(l, 'desktop');
  assert.ok(l.sidebar.shown && l.chat.shown, 'desktop: the list and the chat side by side');
  assert.equal(await opacityOfActions(alice, 'Bring the long rope.'), '0', 'desktop: actions hidden until hover');
  await screenshot(alice, 'desktop-1280-chat');
  await alice.hover('#messages .message.event:last-child .text');
  await alice.waitForFunction(() => getComputedStyle(document.querySelector('#messages .message.event:last-child .msg-actions')).opacity === '1');
  await screenshot(alice, 'desktop-1280-actions-on-hover');

  // Phone: the list alone, then the chat alone with a way back.
  await listItem(bob, TITLE).waitFor();
  l = await layout(bob);
  assertFits(l, 'phone, list');
  assert.ok(l.sidebar.shown && !l.chat.shown, 'phone: the list alone');
  await screenshot(bob, 'phone-390-list');
  await listItem(bob, TITLE).click();
  await bob.waitForFunction(() => document.querySelectorAll('#messages .message.event').length === 2);
  l = await layout(bob);
  assertFits(l, 'phone, chat');
  assertHeader(l, 'phone');
  assert.ok(!l.sidebar.shown && l.chat.shown, 'phone: the chat alone');
  assert.ok(l.back.shown, 'phone: a back button');
  assert.equal(await bob.textContent('#conversation-title'), TITLE);
  assert.equal(await bob.locator('#messages .day-separator').count(), 1, 'phone: a date separator');
  assert.equal(await opacityOfActions(bob, 'Saturday at the crag?'), '0', 'phone: actions hidden until a tap');
  await screenshot(bob, 'phone-390-chat');
  await bob.locator('#messages .message.event', { hasText: 'Saturday at the crag?' }).locator('.text').tap();
  await bob.waitForFunction(() => {
    const m = document.querySelector('#messages .message.actions-open');
    return m && getComputedStyle(m.querySelector('.msg-actions')).opacity === '1';
  });
  assert.equal(await opacityOfActions(bob, 'Bring the long rope.'), '0', 'phone: the tap shows one message\'s actions');
  l = await layout(bob);
  assertFits(l, 'phone, actions shown');
  await screenshot(bob, 'phone-390-actions-on-tap');
  await bob.click('#back-button');
  l = await layout(bob);
  assert.ok(l.sidebar.shown && !l.chat.shown, 'phone: back shows the list');

  // 360 px, the narrowest phone the page is made for.
  await bob.setViewportSize({ width: 360, height: 740 });
  await listItem(bob, TITLE).click();
  l = await layout(bob);
  assertFits(l, 'phone 360, chat');
  assertHeader(l, 'phone 360');
  await screenshot(bob, 'phone-360-chat');

  assert.deepEqual(alice.errors || [], [], 'alice: no page errors');
  assert.deepEqual(bob.errors || [], [], 'bob: no page errors');
});

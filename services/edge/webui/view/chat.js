// The open conversation: loading its history, fitting pushed events in
// order, older pages, and reporting what was read.

import { describe } from '../protocol.js';
import { changeMessage, convName, foldReceipt, forget, messageFrom, myId, newOpen, noteEvent, state } from '../store.js';
import { client, request, SS_OPEN, ssSet } from '../session.js';
import { seqOf } from '../util.js';
import { $, showError, showToast } from './dom.js';
import { renderList } from './list.js';
import { fillQuote, messageNode, refreshQuotes, systemNode } from './message.js';
import { settleInbox } from './inbox.js';
import { loadReceipts, renderReceipts, renderSeenBy } from './receipts.js';
import { renderChatHeader } from './header.js';
import { updateWatch } from './presence.js';
import { renderTypingLine, stopTyping } from './typing.js';
import { removeOutbox, renderCompose, renderOutbox } from './composer.js';
import { watchDays } from './days.js';

var HISTORY_PAGE = 50;
var SYNC_PAGE = 100;
var MAX_SYNC_PAGES = 50;
export var MARK_DELAY_MS = 800;

export function openConversation(id) {
  if (!id) return;
  document.body.classList.add('chat-open');
  if (state.open && state.open.id === id) { renderList(); $('composer-input').focus(); return; }
  if (state.open) { clearTimeout(state.open.syncTimer); clearTimeout(state.open.markTimer); }
  stopTyping();
  var c = state.convs.get(id);
  if (c) c.unread = 0;
  state.open = newOpen(id);
  ssSet(SS_OPEN, id);
  $('messages').textContent = '';
  $('add-member-input').value = '';
  $('composer-input').value = '';
  $('rename-form').hidden = true;
  renderChat();
  renderCompose();
  renderTypingLine();
  renderList();
  loadInitial(state.open);
  if (window.matchMedia('(min-width: 761px)').matches) $('composer-input').focus();
}

function closeConversationView() {
  document.body.classList.remove('chat-open');
}

export function renderChat() {
  var o = state.open;
  $('chat-empty').hidden = !!o;
  $('chat-view').hidden = !o;
  if (!o) { setHistoryNote(''); updateWatch(); renderTypingLine(); return; }
  renderChatHeader();
  renderOlderButton();
  renderOutbox();
}

function setHistoryNote(text) {
  var n = $('history-note');
  n.textContent = text || '';
  n.hidden = !text;
}

// pageMax is the newest seq of a history page: its messages show every
// change up to it, so its own change events are in them already.
function pageMax(evs) { return evs.length ? seqOf(evs[evs.length - 1].seq) : 0; }

export function loadInitial(o) {
  if (o.loading) return;
  o.loading = true;
  setHistoryNote('Loading messages…');
  request({ getHistory: { conversationId: o.id, limit: HISTORY_PAGE } }).then(function (f) {
    if (o !== state.open) return;
    var page = f.history || {};
    var evs = page.events || [];
    $('messages').textContent = '';
    o.firstSeq = 0;
    o.lastSeq = 0;
    o.msgs = new Map();
    var snap = { asOf: pageMax(evs) };
    evs.forEach(function (ev) { appendEvent(o, ev, snap); });
    o.firstSeq = evs.length ? seqOf(evs[0].seq) : 0;
    o.hasMore = !!page.hasMore;
    o.loaded = true;
    o.loading = false;
    setHistoryNote(evs.length || o.buffer.size ? '' : 'No messages yet.');
    renderOlderButton();
    renderChatHeader();
    renderOutbox();
    renderReceipts(o);
    loadReceipts(o);
    scrollToBottom();
    drainBuffer(o);
    var c = state.convs.get(o.id);
    if (c && c.lastSeq > o.lastSeq) syncOpen(o);
  }, function (err) {
    if (o !== state.open) return;
    o.loading = false;
    if (err.code === 'DISCONNECTED') {
      setHistoryNote('Messages will load when the connection is back.');
    } else {
      setHistoryNote(describe(err));
      if (err.code !== 'TIMEOUT') showError(err);
    }
  });
}

// applyToOpen takes a pushed event for the open conversation: drop what we
// have, show the next one, and fetch the range when one skips ahead.
export function applyToOpen(o, ev) {
  var s = seqOf(ev.seq);
  if (!s || s <= o.lastSeq) return;
  if (o.loading || o.syncing || !o.loaded || s !== o.lastSeq + 1) {
    o.buffer.set(s, ev);
    if (o.loaded && !o.loading && !o.syncing) syncOpen(o);
    return;
  }
  var stick = nearBottom();
  appendEvent(o, ev, null);
  setHistoryNote('');
  if (stick || ev.senderId === myId()) scrollToBottom();
}

export function drainBuffer(o) {
  var stick = nearBottom();
  var appended = false;
  while (o.buffer.has(o.lastSeq + 1)) {
    var ev = o.buffer.get(o.lastSeq + 1);
    o.buffer.delete(o.lastSeq + 1);
    appendEvent(o, ev, null);
    appended = true;
  }
  o.buffer.forEach(function (_, s) { if (s <= o.lastSeq) o.buffer.delete(s); });
  if (appended) { setHistoryNote(''); if (stick) scrollToBottom(); }
  if (o.buffer.size && !o.syncTimer) {
    // Still a gap: the missing events may not be stored yet. Try again soon.
    o.syncTimer = setTimeout(function () { o.syncTimer = 0; if (o === state.open) syncOpen(o); }, 1000);
  }
}

// syncOpen fetches every event after the last one shown.
export function syncOpen(o) {
  if (o.syncing || o.loading || !o.loaded || !client.connected) return;
  o.syncing = true;
  var pages = 0;
  var stick = nearBottom();
  var step = function () {
    return request({ getHistory: { conversationId: o.id, afterSeq: String(o.lastSeq), limit: SYNC_PAGE } }).then(function (f) {
      if (o !== state.open) return;
      var page = f.history || {};
      var evs = page.events || [];
      var snap = { asOf: pageMax(evs) };
      evs.forEach(function (ev) {
        if (seqOf(ev.seq) > o.lastSeq) appendEvent(o, ev, snap);
      });
      if (evs.length) setHistoryNote('');
      pages++;
      if (page.hasMore && evs.length && pages < MAX_SYNC_PAGES) return step();
    });
  };
  step().then(function () {
    if (o !== state.open) return;
    o.syncing = false;
    if (stick) scrollToBottom();
    drainBuffer(o);
    renderChatHeader();
    renderReceipts(o);
  }, function (err) {
    o.syncing = false;
    if (o !== state.open) return;
    if (err.code !== 'DISCONNECTED') showError(err);
  });
}

function loadOlder() {
  var o = state.open;
  if (!o || !o.loaded || !o.hasMore || o.olderLoading || !o.firstSeq) return;
  o.olderLoading = true;
  var btn = $('load-older');
  btn.disabled = true;
  btn.textContent = 'Loading…';
  request({ getHistory: { conversationId: o.id, beforeSeq: String(o.firstSeq), limit: HISTORY_PAGE } }).then(function (f) {
    if (o !== state.open) return;
    var page = f.history || {};
    var evs = (page.events || []).filter(function (ev) { return seqOf(ev.seq) < o.firstSeq; });
    var scroller = $('scroller');
    var before = scroller.scrollHeight - scroller.scrollTop;
    var box = $('messages');
    var frag = document.createDocumentFragment();
    var c = state.convs.get(o.id);
    // These messages are as they are now: every change shown so far is
    // in them, and the changes in this page too.
    var snap = { asOf: o.lastSeq };
    evs.forEach(function (ev) {
      if (c) noteEvent(c, ev, false);
      var node = eventNode(o, ev, snap);
      if (node) frag.appendChild(node);
    });
    box.insertBefore(frag, box.firstChild);
    settleInbox(box);
    if (evs.length) o.firstSeq = seqOf(evs[0].seq);
    o.hasMore = !!page.hasMore && evs.length > 0;
    scroller.scrollTop = scroller.scrollHeight - before;
    refreshQuotes(o);
    renderChatHeader();
    renderReceipts(o);
  }, showError).then(function () {
    o.olderLoading = false;
    btn.disabled = false;
    btn.textContent = 'Load older messages';
    if (o === state.open) renderOlderButton();
  });
}

function renderOlderButton() {
  var o = state.open;
  $('load-older').hidden = !(o && o.loaded && o.hasMore && o.firstSeq > 1);
}

// appendEvent shows an event after the newest one. snap is set for
// events read from history, null for live ones.
function appendEvent(o, ev, snap) {
  var s = seqOf(ev.seq);
  if (s <= o.lastSeq) return;
  o.lastSeq = s;
  if (!o.firstSeq) o.firstSeq = s;
  var c = state.convs.get(o.id);
  if (c) noteEvent(c, ev, false);
  var node = eventNode(o, ev, snap);
  if (node) $('messages').appendChild(node);
  if (ev.contactUpdated || ev.invitationUpdated) settleInbox($('messages'));
  // The server moves a sender's positions to their own event and
  // pushes no receipt for it.
  if (ev.senderId && foldReceipt(o.rc, { userId: ev.senderId, deviceId: ev.senderDeviceId, deliveredSeq: ev.seq, readSeq: ev.seq }) && !snap) {
    renderReceipts(o);
  }
  // Our role decides the actions each message offers (delete for
  // moderators, reply for those who may post).
  var who = ev.roleChanged || ev.memberMuted;
  if (!snap && ((who && who.userId === myId()) || ev.ownershipTransferred)) {
    o.msgs.forEach(function (m) { rerender(o, m); });
  }
  // Our own message arrived: it is no longer "sending".
  if (ev.messagePosted && ev.senderId === myId() && ev.clientMsgId) removeOutbox(ev.clientMsgId, o.id);
  // Which message is our latest, the one seen-by goes under, may have
  // changed.
  if (!snap && ((ev.messagePosted && ev.senderId === myId()) || ev.messageDeleted)) renderSeenBy(o);
  scheduleMark(o);
}

// eventNode makes the node of an event, or applies it to the message it
// changes (edits, deletes, reactions have no line of their own).
function eventNode(o, ev, snap) {
  // A message the application posted as itself is a notice, not a
  // person's line: no reply, reaction or edit applies to it here.
  if (ev.messagePosted && !ev.messagePosted.system) {
    var m = messageFrom(ev, snap);
    o.msgs.set(m.seq, m);
    o.quotes.delete(m.seq);
    return messageNode(o, m);
  }
  if (ev.messageEdited || ev.messageDeleted || ev.reactionAdded || ev.reactionRemoved) {
    applyChange(o, ev);
    return null;
  }
  return systemNode(ev);
}

function applyChange(o, ev) {
  var ch = changeMessage(o, ev);
  if (!ch) return;
  rerender(o, ch.m);
  if (ch.refresh) refreshMessage(o, ch.m.seq);
}

export function fetchMessage(o, seq) {
  return request({ getHistory: { conversationId: o.id, afterSeq: String(seq - 1), limit: 1 } }).then(function (f) {
    var evs = (f.history && f.history.events) || [];
    var ev = evs[0];
    return ev && seqOf(ev.seq) === seq && ev.messagePosted ? ev : null;
  });
}

// refreshMessage rereads a message whose counts came from history: a
// change may be both in them and in a later event, and which it is
// cannot be told (a page's counts may be newer than its last seq, and a
// reread may overtake the push of what it holds). Every later reaction
// rereads it again, so the counts settle on the server's once the
// reactions stop.
function refreshMessage(o, seq) {
  if (o.refreshing.has(seq)) { o.refreshing.set(seq, true); return; }
  o.refreshing.set(seq, false);
  fetchMessage(o, seq).then(function (ev) {
    if (o !== state.open || !ev) return;
    var m = o.msgs.get(seq);
    if (!m) return;
    var fresh = messageFrom(ev, { asOf: o.lastSeq });
    o.msgs.set(seq, fresh);
    rerender(o, fresh);
  }, function () { /* the counts stay as counted */ }).then(function () {
    var again = o.refreshing.get(seq);
    o.refreshing.delete(seq);
    if (again && o === state.open) refreshMessage(o, seq);
  });
}

export function msgNodeOf(seq) {
  return document.querySelector('#messages .message[data-seq="' + seq + '"]');
}

function rerender(o, m) {
  var old = msgNodeOf(m.seq);
  if (old) {
    old.replaceWith(messageNode(o, m));
    if (m.senderId === myId()) renderSeenBy(o);
  }
  document.querySelectorAll('#messages .quote[data-reply-to="' + m.seq + '"]').forEach(function (q) { fillQuote(o, q, m.seq); });
  if (o.compose.replyTo === m.seq || o.compose.editSeq === m.seq) renderCompose();
}

function nearBottom() {
  var s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

export function scrollToBottom() {
  var s = $('scroller');
  s.scrollTop = s.scrollHeight;
}

export function scrollToMessage(seq) {
  var n = msgNodeOf(seq);
  if (!n) { showToast('That message is further back: load older messages to see it.', true); return; }
  n.scrollIntoView({ block: 'center' });
  n.classList.add('highlight');
  setTimeout(function () { n.classList.remove('highlight'); }, 1600);
}

// scheduleMark reports the open conversation read up to what it shows,
// so the unread count follows on the user's other devices and reloads.
export function scheduleMark(o) {
  if (document.hidden || o.markTimer) return;
  o.markTimer = setTimeout(function () {
    o.markTimer = 0;
    if (o !== state.open || !client.connected || o.lastSeq <= o.markedSeq) return;
    var seq = o.lastSeq;
    request({ mark: { conversationId: o.id, deliveredSeq: String(seq), readSeq: String(seq) } }).then(function () {
      o.markedSeq = Math.max(o.markedSeq, seq);
    }, function () { /* the next event tries again */ });
  }, MARK_DELAY_MS);
}

// leftConversation forgets a conversation the user left or was removed
// from: the server sends nothing more of it, and history is closed.
export function leftConversation(id, ev) {
  var c = state.convs.get(id);
  var name = c ? convName(c) : 'the conversation';
  forget(id, ev);
  if (state.open && state.open.id === id) {
    clearTimeout(state.open.syncTimer);
    state.open = null;
    ssSet(SS_OPEN, '');
    $('messages').textContent = '';
    document.body.classList.remove('chat-open');
    renderChat();
  }
  renderList();
  if (ev && ev.memberRemoved && ev.senderId !== myId()) showToast((ev.senderId || 'An admin') + ' removed you from ' + name + '.', true);
  else showToast('You left ' + name + '.', true);
}

// Message actions (reply, react, edit, delete) show on hover where there
// is a pointer that hovers; on a touch screen a tap on a message, or a
// long press, shows them on that message alone.
var LONG_PRESS_MS = 450;
var canHover = window.matchMedia('(hover: hover)');

function showActions(node) {
  document.querySelectorAll('#messages .message.actions-open').forEach(function (n) {
    if (n !== node) n.classList.remove('actions-open');
  });
  if (node) node.classList.add('actions-open');
}

function initMessageActions(box) {
  var press = 0;
  var pressed = null;
  var cancel = function () { clearTimeout(press); press = 0; };
  box.addEventListener('pointerdown', function (e) {
    cancel();
    pressed = null;
    if (e.pointerType !== 'touch') return;
    var node = e.target.closest('.message.event');
    if (!node) return;
    press = setTimeout(function () { press = 0; pressed = node; showActions(node); }, LONG_PRESS_MS);
  });
  ['pointerup', 'pointercancel', 'pointermove'].forEach(function (t) { box.addEventListener(t, cancel); });
  box.addEventListener('contextmenu', function (e) {
    // A long press on a touch screen opens the actions, not the menu.
    if (!canHover.matches && e.target.closest('.message.event')) e.preventDefault();
  });
  box.addEventListener('click', function (e) {
    if (e.target.closest('button, a, input, textarea, .quote')) return;
    var node = e.target.closest('.message.event');
    if (pressed) { pressed = null; return; }
    if (canHover.matches && !node) return;
    if (!node || node.classList.contains('actions-open')) showActions(null);
    else if (!canHover.matches) showActions(node);
  });
}

export function initChat() {
  $('load-older').addEventListener('click', loadOlder);
  $('back-button').addEventListener('click', closeConversationView);
  watchDays($('messages'));
  initMessageActions($('messages'));
}

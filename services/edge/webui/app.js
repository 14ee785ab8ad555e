// The page's entry: sign-in and sign-out, the connection's events, pushes
// handed to the views, and the wiring of the page's controls.

import { describe, fetchToken } from './protocol.js';
import { clearTypingIn, convFromWire, dropTyping, myId, noteAudiences, noteEvent, state } from './store.js';
import { client, getDeviceId, request, SS_OPEN, SS_TOKEN, SS_USER, ssGet, ssSet } from './session.js';
import { seqOf, USER_RE } from './util.js';
import { $, hideToast, setStatus, showError, showToast } from './view/dom.js';
import { applyFlags, closeConvMenu, initList, loadList, renderList, scheduleListRefresh } from './view/list.js';
import { applyToOpen, drainBuffer, initChat, leftConversation, loadInitial, MARK_DELAY_MS, openConversation, renderChat, scheduleMark, syncOpen } from './view/chat.js';
import { loadReceipts, onReceipts } from './view/receipts.js';
import { initHeader, loadBlocks, renderChatHeader } from './view/header.js';
import { checkIdle, IDLE_CHECK_MS, onActivity, onPresence, updateWatch } from './view/presence.js';
import { onTyping, renderTypingLine, resetTypingOut, stopTyping } from './view/typing.js';
import { flushOutbox, initComposer, renderOutbox } from './view/composer.js';
import { initForms, setNewPanel } from './view/forms.js';

var CONNECTING_TEXT = { connect: 'connecting…', 'catch-up': 'catching up…', token: 'signing in again…' };

function onLoginSubmit(e) {
  e.preventDefault();
  var name = $('user-input').value.trim();
  var errBox = $('login-error');
  errBox.textContent = '';
  if (!USER_RE.test(name)) {
    errBox.textContent = 'User names are 1–64 characters: letters, digits, “-”, “_” or “.”.';
    $('user-input').focus();
    return;
  }
  $('login-button').disabled = true;
  fetchToken(name).then(function (token) {
    state.user = name;
    ssSet(SS_USER, name);
    ssSet(SS_TOKEN, token);
    enterApp();
    client.start(name, token, true);
  }, function (err) {
    errBox.textContent = describe(err);
  }).then(function () {
    $('login-button').disabled = false;
  });
}

function enterApp() {
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('whoami').hidden = false;
  $('signout').hidden = false;
  $('me-user').textContent = state.user;
  renderList();
  renderChat();
}

function signOut(message) {
  client.stop();
  clearTimeout(state.listTimer);
  if (state.open) clearTimeout(state.open.syncTimer);
  state.user = '';
  state.me = null;
  state.convs = new Map();
  state.blocked = new Map();
  state.blockedHere = new Map();
  state.gone = new Map();
  state.open = null;
  state.outbox = [];
  state.listRetries = 0;
  state.restoreOpen = '';
  state.delivered.forEach(function (d) { clearTimeout(d.timer); });
  state.delivered = new Map();
  clearTypingIn();
  resetTypingOut();
  state.presence = new Map();
  state.watching = '';
  clearTimeout(state.watchTimer);
  state.idleSent = false;
  closeConvMenu();
  setNewPanel(false);
  document.title = 'Parley';
  ssSet(SS_USER, '');
  ssSet(SS_TOKEN, '');
  ssSet(SS_OPEN, '');
  document.body.classList.remove('chat-open');
  $('app-view').hidden = true;
  $('whoami').hidden = true;
  $('signout').hidden = true;
  $('login-view').hidden = false;
  $('conversation-list').textContent = '';
  $('messages').textContent = '';
  $('outbox').textContent = '';
  $('login-error').textContent = message || '';
  setStatus('signed-out', 'signed out');
  hideToast();
  $('user-input').focus();
}

// ---------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------
function onStatus(kind, detail) {
  if (kind === 'connected') setStatus('connected', 'connected');
  else if (kind === 'disconnected') setStatus('disconnected', 'disconnected · reconnecting in ' + detail.retryIn + 's');
  else setStatus('connecting', CONNECTING_TEXT[detail.phase] || CONNECTING_TEXT.connect);
}

function onAuthenticated(me) {
  state.me = me;
  noteAudiences(me.audiences);
  renderList();
  $('me-user').textContent = me.userId;
  $('whoami').title = 'user ' + me.userId + ', device ' + me.deviceId + ', session ' + me.sessionId;
  // A new connection starts not idle, and watches no one.
  state.idleSent = false;
  state.watching = '';
  state.watchRetries = 0;
  checkIdle();
  flushOutbox();
}

// afterConnect syncs what a connection may have missed; caughtUp names
// the conversations a resume already brought up to date.
function afterConnect(caughtUp) {
  loadList();
  loadBlocks();
  updateWatch();
  var o = state.open;
  if (o) {
    // Positions moved while away, and their pushes were not kept.
    if (o.loaded) loadReceipts(o);
    if (!o.loaded) loadInitial(o);
    else if (!caughtUp || !caughtUp.has(o.id)) syncOpen(o);
    else drainBuffer(o);
  } else if (state.restoreOpen) {
    var id = state.restoreOpen;
    state.restoreOpen = '';
    openConversation(id);
  }
}

function onClosed() {
  resetTypingOut();
  clearTimeout(state.watchTimer);
  renderOutbox();
}

// ---------------------------------------------------------------------
// Pushes
// ---------------------------------------------------------------------
function handlePush(events) {
  var refresh = false;
  var typed = false;
  events.forEach(function (ev) {
    if (!ev || !ev.conversationId) return;
    var id = ev.conversationId;
    var c = state.convs.get(id);
    var gone = state.gone.get(id);
    if (!c && gone && seqOf(ev.seq) <= gone) return;
    if (!c) {
      state.gone.delete(id);
      // Someone created a conversation with us or added us to one.
      c = convFromWire({ conversationId: id, lastActivity: ev.time });
      c.localOnly = true;
      c.placeholder = !ev.conversationCreated;
      state.convs.set(id, c);
      refresh = true;
    }
    if (state.open && state.open.id === id) applyToOpen(state.open, ev);
    else {
      noteEvent(c, ev, true);
      noteDelivered(id, seqOf(ev.seq));
    }
    // A message ends its author's indicator, whether or not a stop
    // follows.
    if (ev.messagePosted && dropTyping(id, ev.senderId)) typed = true;
    var out = ev.memberRemoved || ev.memberLeft;
    if (out && (out.userId || ev.senderId) === myId()) leftConversation(id, ev);
  });
  if (refresh) scheduleListRefresh(0);
  if (typed) renderTypingLine();
  renderList();
  renderChatHeader();
}

// noteDelivered reports a pushed event of a conversation not open as
// delivered to this device, so its sender sees it arrive; reading it
// is for when it is open.
function noteDelivered(id, seq) {
  if (!seq) return;
  var d = state.delivered.get(id);
  if (!d) { d = { want: 0, marked: 0, timer: 0 }; state.delivered.set(id, d); }
  if (seq <= d.want) return;
  d.want = seq;
  if (d.timer) return;
  d.timer = setTimeout(function () {
    d.timer = 0;
    if (!client.connected || d.want <= d.marked || !state.convs.has(id)) return;
    var s = d.want;
    request({ mark: { conversationId: id, deliveredSeq: String(s) } }).then(function () {
      d.marked = Math.max(d.marked, s);
    }, function () { /* the next push tries again */ });
  }, MARK_DELAY_MS);
}

// ---------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------
function init() {
  client
    .on('status', onStatus)
    .on('authenticated', onAuthenticated)
    .on('ready', afterConnect)
    .on('closed', onClosed)
    .on('token', function (token) { ssSet(SS_TOKEN, token); })
    .on('signedOut', signOut)
    .on('error', showError)
    .on('notice', showToast)
    .on('events', handlePush)
    .on('receipts', onReceipts)
    .on('typing', onTyping)
    .on('presence', onPresence)
    .on('flags', applyFlags);
  $('login-form').addEventListener('submit', onLoginSubmit);
  $('signout').addEventListener('click', function (e) { e.preventDefault(); signOut(''); });
  initForms();
  initList();
  initChat();
  initHeader();
  initComposer();
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) stopTyping();
    else state.lastInput = Date.now();
    checkIdle();
    if (!document.hidden && state.open) scheduleMark(state.open);
  });
  ['pointerdown', 'keydown', 'wheel', 'touchstart', 'mousemove', 'focus'].forEach(function (type) {
    window.addEventListener(type, onActivity, { capture: true, passive: true });
  });
  setInterval(checkIdle, IDLE_CHECK_MS);
  $('toast-close').addEventListener('click', hideToast);
  window.addEventListener('online', function () { client.retry(); });
  getDeviceId();

  // A reload of this tab keeps its sign-in.
  var user = ssGet(SS_USER);
  var token = ssGet(SS_TOKEN);
  if (user && token && USER_RE.test(user)) {
    state.user = user;
    state.restoreOpen = ssGet(SS_OPEN);
    enterApp();
    client.start(user, token, false);
  } else {
    $('user-input').focus();
  }
}

init();

// Typing indicators: others', shown until renewed or stopped, and this
// page's own, sent while the user types.

import { dropTyping, KIND_DIRECT, myId, postBlock, state, typingUsers } from '../store.js';
import { client, request } from '../session.js';
import { $ } from './dom.js';
import { renderList } from './list.js';

// The edge forwards one typing indicator per 500 ms per connection and
// shows one for 6 s: renewing every 3 s keeps it up with room for a
// slow push, and spacing frames a little over 500 ms keeps none from
// being dropped silently.
var TYPING_RENEW_MS = 3000;
var TYPING_GAP_MS = 600;
var TYPING_IDLE_MS = 5000;
var TYPING_DEFAULT_MS = 6000;

// onTyping shows an indicator for its expiresInMs unless renewed or
// stopped: nothing else ends it if the typist's connection drops.
export function onTyping(list) {
  var touched = false;
  list.forEach(function (t) {
    if (!t || !t.conversationId || !t.userId || t.userId === myId()) return;
    var id = t.conversationId;
    var user = t.userId;
    dropTyping(id, user);
    touched = true;
    if (t.stopped) return;
    var m = state.typing.get(id);
    if (!m) { m = new Map(); state.typing.set(id, m); }
    var entry = { timer: 0 };
    entry.timer = setTimeout(function () {
      if (m.get(user) !== entry) return;
      m.delete(user);
      renderTypingLine();
      renderList();
    }, Number(t.expiresInMs) || TYPING_DEFAULT_MS);
    m.set(user, entry);
  });
  if (touched) {
    renderTypingLine();
    renderList();
  }
}

export function typingText(users, c) {
  if (c && c.kind === KIND_DIRECT) return 'typing…';
  if (users.length === 1) return users[0] + ' is typing…';
  if (users.length === 2) return users[0] + ' and ' + users[1] + ' are typing…';
  var more = users.length - 2;
  return users[0] + ', ' + users[1] + ' and ' + more + (more === 1 ? ' other are typing…' : ' others are typing…');
}

export function renderTypingLine() {
  var line = $('typing-line');
  var o = state.open;
  var users = o ? typingUsers(o.id) : [];
  line.textContent = users.length ? typingText(users, null) : '';
  line.dataset.users = users.join(',');
}

export function resetTypingOut() {
  var t = state.typingOut;
  clearTimeout(t.timer);
  clearTimeout(t.idleTimer);
  state.typingOut = { conv: '', lastStart: 0, lastSent: 0, timer: 0, idleTimer: 0 };
}

function canType(o) {
  var c = o && state.convs.get(o.id);
  return !!(c && client.connected && !o.compose.editSeq && !postBlock(c) && !c.placeholder);
}

function sendTyping(id, stopped) {
  var t = state.typingOut;
  t.lastSent = Date.now();
  if (!stopped) { t.conv = id; t.lastStart = t.lastSent; }
  var body = { conversationId: id };
  if (stopped) body.stopped = true;
  request({ typing: body }).catch(function () { /* an indicator is best effort */ });
}

export function stopTyping() {
  var t = state.typingOut;
  clearTimeout(t.timer);
  clearTimeout(t.idleTimer);
  t.timer = t.idleTimer = 0;
  var id = t.conv;
  t.conv = '';
  t.lastStart = 0;
  if (id && client.connected) sendTyping(id, true);
}

// onComposerTyping renews this page's indicator every TYPING_RENEW_MS
// while the user types, and stops it once they pause or clear the box.
export function onComposerTyping() {
  var o = state.open;
  if (!o || !$('composer-input').value.trim() || !canType(o)) { stopTyping(); return; }
  var t = state.typingOut;
  if (t.conv && t.conv !== o.id) stopTyping();
  clearTimeout(t.idleTimer);
  t.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  if (t.timer || (t.conv === o.id && Date.now() - t.lastStart < TYPING_RENEW_MS)) return;
  t.timer = setTimeout(function () {
    t.timer = 0;
    var cur = state.open;
    if (state.typingOut !== t || !cur || !canType(cur) || !$('composer-input').value.trim()) return;
    sendTyping(cur.id, false);
  }, Math.max(0, t.lastSent + TYPING_GAP_MS - Date.now()));
}

// Presence: of the open conversation's members, and this page's idleness.

import { KIND_DIRECT, myId, otherOf, state } from '../store.js';
import { client, request } from '../session.js';
import { fmtSeen, fmtTime, parseTime } from '../util.js';
import { $ } from './dom.js';
import { renderChatHeader } from './header.js';

var MAX_WATCH = 200;
var WATCH_RETRIES = 10;
var IDLE_AFTER_MS = 3 * 60 * 1000;
export var IDLE_CHECK_MS = 15000;
var PRESENCE_ONLINE = 'PRESENCE_STATE_ONLINE';
var PRESENCE_AWAY = 'PRESENCE_STATE_AWAY';

function watchSet() {
  var o = state.open;
  var c = o && state.convs.get(o.id);
  if (!c || c.placeholder) return [];
  var me = myId();
  return c.memberIds.filter(function (m) { return m !== me; }).sort().slice(0, MAX_WATCH);
}

// updateWatch asks for the presence of the open conversation's members
// when they changed; a watch lasts as long as its connection.
export function updateWatch() {
  if (!client.connected) return;
  var users = watchSet();
  var key = users.join('\n');
  if (key === state.watching) return;
  clearTimeout(state.watchTimer);
  state.watching = key;
  state.watchRetries = 0;
  state.presence.forEach(function (_, u) { if (users.indexOf(u) < 0) state.presence.delete(u); });
  sendWatch(users, key);
}

function sendWatch(users, key) {
  var epoch = client.epoch;
  request({ watchPresence: { userIds: users } }).then(function (f) {
    if (state.watching !== key || client.epoch !== epoch) return;
    onPresence((f.presence && f.presence.presence) || []);
  }, function (err) {
    if (state.watching !== key || client.epoch !== epoch || err.code === 'DISCONNECTED') return;
    // The edge checks co-membership against the conversation list,
    // which lists a new conversation a moment after it is made.
    if (state.watchRetries >= WATCH_RETRIES) return;
    state.watchRetries++;
    state.watchTimer = setTimeout(function () {
      if (state.watching === key && client.epoch === epoch) sendWatch(users, key);
    }, 1000 * state.watchRetries);
  });
}

export function onPresence(list) {
  var watched = state.watching ? state.watching.split('\n') : [];
  var changed = false;
  list.forEach(function (p) {
    if (!p || !p.userId || watched.indexOf(p.userId) < 0) return;
    state.presence.set(p.userId, { state: p.state || '', lastSeen: p.lastSeen || '' });
    changed = true;
  });
  if (changed) renderChatHeader();
}

export function presenceKind(p) {
  if (!p) return '';
  return p.state === PRESENCE_ONLINE ? 'online' : p.state === PRESENCE_AWAY ? 'away' : 'offline';
}

export function presenceLabel(p) {
  var k = presenceKind(p);
  if (k !== 'offline') return k;
  var t = parseTime(p.lastSeen);
  return t ? 'last seen ' + fmtSeen(t) : 'offline';
}

// renderPresence: a direct chat shows the other user's; a group how many
// of its members are around (each member's is in the members panel).
export function renderPresence() {
  var o = state.open;
  var c = o && state.convs.get(o.id);
  var box = $('presence');
  var text = '';
  var kind = '';
  box.title = '';
  if (c && c.kind === KIND_DIRECT) {
    var p = state.presence.get(otherOf(c));
    if (p) {
      kind = presenceKind(p);
      text = presenceLabel(p);
      if (kind === 'offline' && parseTime(p.lastSeen)) box.title = fmtTime(parseTime(p.lastSeen), true);
    }
  } else if (c) {
    var on = 0;
    var away = 0;
    var me = myId();
    c.memberIds.forEach(function (m) {
      if (m === me) return;
      var k = presenceKind(state.presence.get(m));
      if (k === 'online') on++;
      else if (k === 'away') away++;
    });
    if (on || away) {
      kind = on ? 'online' : 'away';
      text = [on ? on + ' online' : '', away ? away + ' away' : ''].filter(Boolean).join(', ');
    }
  }
  box.textContent = text;
  box.dataset.state = kind;
}

// The user is idle here when the page is hidden or untouched for a
// while; idle on every device shows them away.
export function checkIdle() {
  var idle = document.hidden || Date.now() - state.lastInput >= IDLE_AFTER_MS;
  if (!client.connected || idle === state.idleSent) return;
  state.idleSent = idle;
  var epoch = client.epoch;
  request({ setIdle: { idle: idle } }).catch(function () {
    // Not told: the next check tries again.
    if (client.epoch === epoch) state.idleSent = !idle;
  });
}

export function onActivity() {
  state.lastInput = Date.now();
  if (state.idleSent && !document.hidden) checkIdle();
}

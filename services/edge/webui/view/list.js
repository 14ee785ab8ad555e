// The conversation list: its entries, unread counts in the tab title, the
// pin and mute menu, and loading it from the server.

import { applyFlagList, convName, KIND_CHANNEL, KIND_GROUP, kindLabel, mergeList, previewLabel, sortedConvs, state, typingUsers } from '../store.js';
import { client, request } from '../session.js';
import { fmtListTime } from '../util.js';
import { $, el, showError } from './dom.js';
import { openConversation } from './chat.js';
import { renderChatHeader, renderFlagButtons } from './header.js';
import { typingText } from './typing.js';

var LIST_LIMIT = 100;

// menuFor is the conversation whose menu is open, or ''.
var menuFor = '';

export function loadList() {
  if (!client.connected) return Promise.resolve();
  if (state.listLoading) { state.listAgain = true; return Promise.resolve(); }
  state.listLoading = true;
  var flagsGen = state.flagsGen;
  return request({ listConversations: { limit: LIST_LIMIT } }).then(function (f) {
    var missing = mergeList((f.conversations && f.conversations.conversations) || [], flagsGen);
    if (missing && state.listRetries < 5) {
      // Conversations we know from pushes are not listed yet: ask again shortly.
      state.listRetries++;
      scheduleListRefresh(1500);
    } else if (!missing) {
      state.listRetries = 0;
    }
    renderList();
    renderChatHeader();
  }, function (err) {
    if (err.code !== 'DISCONNECTED') showError(err);
  }).then(function () {
    state.listLoading = false;
    if (state.listAgain) { state.listAgain = false; loadList(); }
  });
}

export function scheduleListRefresh(delay) {
  clearTimeout(state.listTimer);
  state.listTimer = setTimeout(loadList, delay || 0);
}

export function renderList() {
  var ul = $('conversation-list');
  var focusedId = document.activeElement && document.activeElement.classList &&
    document.activeElement.classList.contains('conversation') ? document.activeElement.dataset.id : '';
  ul.textContent = '';
  var convs = sortedConvs();
  renderTitle(convs);
  if (!convs.length) {
    ul.appendChild(el('li', 'list-empty', client.connected ? 'No conversations yet.' : 'Loading…'));
    return;
  }
  convs.forEach(function (c) {
    var li = el('li', 'conversation' + (c.pinned ? ' pinned' : '') + (c.muted ? ' muted' : ''));
    li.dataset.id = c.id;
    li.dataset.kind = c.kind;
    li.dataset.pinned = c.pinned ? 'true' : 'false';
    li.dataset.muted = c.muted ? 'true' : 'false';
    li.tabIndex = 0;
    li.setAttribute('role', 'button');
    var isOpen = state.open && state.open.id === c.id;
    if (isOpen) { li.classList.add('active'); li.setAttribute('aria-current', 'true'); }
    var head = el('span', 'conv-head');
    head.appendChild(el('span', 'conv-title', convName(c)));
    if (kindLabel(c)) head.appendChild(el('span', 'kind-tag', kindLabel(c)));
    if (c.pinned) head.appendChild(flagMarker('pin-marker', '📌', 'Pinned'));
    if (c.muted) head.appendChild(flagMarker('muted-marker', '🔕', 'Muted'));
    li.appendChild(head);
    li.appendChild(el('span', 'conv-time', fmtListTime(c.lastActivity)));
    var menu = el('button', 'conv-menu-button', '⋯');
    menu.type = 'button';
    menu.dataset.id = c.id;
    menu.title = 'Pin or mute';
    menu.setAttribute('aria-label', 'Options for ' + convName(c));
    menu.setAttribute('aria-haspopup', 'menu');
    menu.setAttribute('aria-expanded', menuFor === c.id ? 'true' : 'false');
    li.appendChild(menu);
    var typers = isOpen ? [] : typingUsers(c.id);
    var pv = previewLabel(c);
    var pnode;
    if (typers.length) {
      pnode = el('span', 'conv-preview conv-typing', typingText(typers, c));
      pnode.dataset.kind = 'typing';
    } else {
      pnode = el('span', 'conv-preview' + (c.previewKind === 'deleted' ? ' preview-deleted' : ''),
        pv || (c.kind === KIND_GROUP || c.kind === KIND_CHANNEL ? c.memberIds.length + ' members' : ''));
      pnode.dataset.kind = c.previewKind;
    }
    li.appendChild(pnode);
    if (c.unread > 0 && !isOpen) {
      var badge = el('span', 'unread' + (c.muted ? ' unread-muted' : ''), c.unread > 99 ? '99+' : c.unread);
      badge.dataset.count = String(c.unread);
      if (c.muted) badge.title = c.unread + ' unread (muted)';
      li.appendChild(badge);
    }
    ul.appendChild(li);
    if (c.id === focusedId) li.focus();
  });
}

function flagMarker(cls, glyph, label) {
  var m = el('span', 'flag-marker ' + cls, glyph);
  m.title = label;
  m.setAttribute('aria-label', label);
  return m;
}

// renderTitle puts the unread count in the tab's title, which is what
// shows from another tab; muted conversations stay out of it.
function renderTitle(convs) {
  var n = 0;
  convs.forEach(function (c) {
    if (!c.muted && !(state.open && state.open.id === c.id)) n += c.unread;
  });
  var t = n ? '(' + (n > 99 ? '99+' : n) + ') Parley' : 'Parley';
  if (document.title !== t) document.title = t;
}

// ---------------------------------------------------------------------
// Flags: muted and pinned, the user's own and the same on every device
// ---------------------------------------------------------------------
export function applyFlags(list) {
  var r = applyFlagList(list);
  if (r.unknown) scheduleListRefresh(300);
  if (r.changed) {
    renderList();
    renderFlagButtons();
    renderConvMenu();
  }
}

function setFlag(id, field, value) {
  var body = { conversationId: id };
  body[field] = value;
  return request({ setFlags: body }).then(function (f) {
    applyFlags((f.flags && f.flags.flags) || []);
  }, showError);
}

export function toggleFlag(id, field) {
  var c = state.convs.get(id);
  if (!c) return;
  setFlag(id, field, !c[field]);
}

function openConvMenu(id, x, y) {
  menuFor = id;
  var m = $('conv-menu');
  m.hidden = false;
  renderConvMenu();
  var w = m.offsetWidth;
  var h = m.offsetHeight;
  m.style.left = Math.max(4, Math.min(x, window.innerWidth - w - 4)) + 'px';
  m.style.top = Math.max(4, Math.min(y, window.innerHeight - h - 4)) + 'px';
  renderList();
  $('conv-menu-pin').focus();
}

export function closeConvMenu() {
  if (!menuFor) return;
  menuFor = '';
  $('conv-menu').hidden = true;
  renderList();
}

function renderConvMenu() {
  var c = menuFor && state.convs.get(menuFor);
  if (!c) { if (menuFor) closeConvMenu(); return; }
  $('conv-menu-pin').textContent = c.pinned ? '📌 Unpin' : '📌 Pin to top';
  $('conv-menu-mute').textContent = c.muted ? '🔔 Unmute' : '🔕 Mute';
  $('conv-menu').setAttribute('aria-label', 'Options for ' + convName(c));
}

function onMenuPick(field) {
  var id = menuFor;
  closeConvMenu();
  if (id) toggleFlag(id, field);
}

function onListMenu(e) {
  var li = e.target.closest('.conversation');
  if (!li) return;
  e.preventDefault();
  openConvMenu(li.dataset.id, e.clientX, e.clientY);
}

function onListActivate(e) {
  if (e.type === 'keydown' && e.key !== 'Enter' && e.key !== ' ') return;
  var mb = e.target.closest('.conv-menu-button');
  if (mb) {
    if (e.type !== 'click') return;
    e.preventDefault();
    if (menuFor === mb.dataset.id) { closeConvMenu(); return; }
    var r = mb.getBoundingClientRect();
    openConvMenu(mb.dataset.id, r.right - 150, r.bottom + 2);
    return;
  }
  var li = e.target.closest('.conversation');
  if (!li) return;
  e.preventDefault();
  openConversation(li.dataset.id);
}

export function initList() {
  $('conversation-list').addEventListener('click', onListActivate);
  $('conversation-list').addEventListener('keydown', onListActivate);
  $('conversation-list').addEventListener('contextmenu', onListMenu);
  $('conv-menu-pin').addEventListener('click', function () { onMenuPick('pinned'); });
  $('conv-menu-mute').addEventListener('click', function () { onMenuPick('muted'); });
  document.addEventListener('click', function (e) {
    if (menuFor && !e.target.closest('#conv-menu') && !e.target.closest('.conv-menu-button')) closeConvMenu();
  });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Escape' && menuFor) { closeConvMenu(); }
  });
  window.addEventListener('resize', closeConvMenu);
}

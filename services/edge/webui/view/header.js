// The open conversation's header: title, flags, members and their roles,
// invites, rename, leave and block.

import { convName, isModerator, KIND_CHANNEL, KIND_DIRECT, KIND_GROUP, kindLabel, MAX_TITLE_BYTES, myId, otherOf, postBlock, ROLE_ADMIN, ROLE_MEMBER, ROLE_OWNER, roleOf, state } from '../store.js';
import { client, request } from '../session.js';
import { hex, randomBytes, utf8Len, uuid4, validUser } from '../util.js';
import { $, actionButton, CONFIRM_MS, confirmButton, el, showError, showToast } from './dom.js';
import { toggleFlag } from './list.js';
import { leftConversation } from './chat.js';
import { presenceKind, presenceLabel, renderPresence, updateWatch } from './presence.js';

// detailsOpen is whether the members panel is shown; it stays so from
// one conversation to the next.
var detailsOpen = false;

export function renderChatHeader() {
  var o = state.open;
  if (!o) return;
  var c = state.convs.get(o.id);
  var me = myId();
  var managed = c && (c.kind === KIND_GROUP || c.kind === KIND_CHANNEL);
  var mod = isModerator(c);
  var myRole = roleOf(c, me);
  $('conversation-title').textContent = c ? convName(c) : 'Conversation';
  $('conversation-title').title = o.id;
  var members = c ? c.memberIds.slice() : [];
  var sub = '';
  if (c && c.kind === KIND_GROUP) sub = 'Group · ' + members.length + (members.length === 1 ? ' member' : ' members');
  else if (c && c.kind === KIND_CHANNEL) sub = (c.isPublic ? 'Public channel' : 'Private channel') + ' · ' + members.length + (members.length === 1 ? ' member' : ' members');
  else if (c && c.kind === KIND_DIRECT) sub = 'Direct chat';
  $('conversation-sub').textContent = sub;
  $('conversation-sub').dataset.kind = c ? kindLabel(c) : '';
  renderFlagButtons();
  updateWatch();
  renderPresence();
  $('rename-button').hidden = !(managed && mod);
  $('leave-button').hidden = !managed;
  $('leave-button').textContent = c && c.kind === KIND_CHANNEL && myRole === ROLE_MEMBER ? 'Unfollow' : 'Leave';
  var other = c && c.kind === KIND_DIRECT ? otherOf(c) : '';
  $('block-button').hidden = !other;
  $('block-button').textContent = state.blocked.get(other) ? 'Unblock ' + other : 'Block ' + other;
  $('block-button').dataset.user = other;
  $('members-button').textContent = 'Members (' + members.length + ')';
  $('members-button').setAttribute('aria-expanded', detailsOpen ? 'true' : 'false');
  $('details').hidden = !detailsOpen;
  $('conv-id').textContent = o.id;

  var ul = $('member-list');
  ul.textContent = '';
  members.sort(function (a, b) { return a === me ? -1 : b === me ? 1 : a < b ? -1 : a > b ? 1 : 0; });
  members.forEach(function (m) {
    var role = roleOf(c, m);
    var muted = c.mutedIds.indexOf(m) >= 0;
    var li = el('li', 'member-row' + (m === me ? ' me' : ''));
    li.dataset.user = m;
    li.dataset.role = role ? role.replace(/^MEMBER_ROLE_/, '').toLowerCase() : '';
    li.dataset.muted = muted ? 'true' : 'false';
    li.appendChild(el('span', 'member-name', m === me ? m + ' (you)' : m));
    var pr = m !== me && state.presence.get(m);
    if (pr) {
      var dot = el('span', 'presence-dot', presenceLabel(pr));
      dot.dataset.state = presenceKind(pr);
      li.dataset.presence = presenceKind(pr);
      li.appendChild(dot);
    }
    if (role === ROLE_OWNER) li.appendChild(el('span', 'badge role-owner', 'owner'));
    else if (role === ROLE_ADMIN) li.appendChild(el('span', 'badge role-admin', 'admin'));
    else if (role === ROLE_MEMBER && c.kind === KIND_CHANNEL) li.appendChild(el('span', 'badge role-follower', 'follower'));
    if (muted) li.appendChild(el('span', 'badge muted', 'muted'));
    if (managed && m !== me && mod) {
      var acts = el('span', 'member-actions');
      // The owner manages everyone; an admin only plain members.
      var above = myRole === ROLE_OWNER ? role !== ROLE_OWNER : role === ROLE_MEMBER;
      if (myRole === ROLE_OWNER && role !== ROLE_OWNER) {
        acts.appendChild(actionButton(role === ROLE_ADMIN ? 'Make member' : 'Make admin', 'act-role', function () {
          memberCommand('setRole', { userId: m, role: role === ROLE_ADMIN ? ROLE_MEMBER : ROLE_ADMIN });
        }));
      }
      if (above) {
        acts.appendChild(actionButton(muted ? 'Unmute' : 'Mute', 'act-mute', function () {
          memberCommand('muteMember', { userId: m, muted: !muted });
        }));
        acts.appendChild(confirmButton('Remove', 'act-remove', 'Remove ' + m + '?', function () {
          memberCommand('removeMember', { userId: m });
        }));
      }
      if (myRole === ROLE_OWNER && role !== ROLE_OWNER) {
        acts.appendChild(confirmButton('Make owner', 'act-owner', 'Hand ownership to ' + m + '?', function () {
          memberCommand('transferOwnership', { userId: m });
        }));
      }
      if (acts.firstChild) li.appendChild(acts);
    }
    ul.appendChild(li);
  });
  // Members add members to groups; in a channel only moderators add.
  $('add-member-form').hidden = !(c && (c.kind === KIND_GROUP || (c.kind === KIND_CHANNEL && mod)));

  $('invite-box').hidden = !(managed && mod);
  var il = $('invite-list');
  il.textContent = '';
  if (managed && mod) {
    c.invites.forEach(function (v, code) {
      if (!v.active) return;
      var li = el('li', 'invite');
      li.dataset.code = code;
      li.appendChild(el('code', 'invite-code', code));
      li.appendChild(actionButton('Revoke', 'act-revoke', function () { memberCommand('revokeInvite', { code: code }); }));
      il.appendChild(li);
    });
    if (!il.firstChild) il.appendChild(el('li', 'invite-none', 'No invites this page has seen.'));
  }

  var block = postBlock(c);
  $('composer-note').textContent = block;
  $('composer-note').hidden = !block;
  $('composer').hidden = !!block && !(c && c.kind === KIND_DIRECT);
  $('send-button').disabled = !!block;
}

export function renderFlagButtons() {
  var o = state.open;
  var c = o && state.convs.get(o.id);
  var pin = $('pin-button');
  var mute = $('mute-button');
  // A conversation not listed yet has no flags to set.
  pin.disabled = mute.disabled = !c || c.placeholder;
  pin.textContent = c && c.pinned ? '📌 Unpin' : '📌 Pin';
  pin.setAttribute('aria-pressed', c && c.pinned ? 'true' : 'false');
  mute.textContent = c && c.muted ? '🔔 Unmute' : '🔕 Mute';
  mute.setAttribute('aria-pressed', c && c.muted ? 'true' : 'false');
}

// memberCommand sends a group command and shows a refusal; its event
// updates the page like anyone else's.
function memberCommand(frame, fields) {
  var o = state.open;
  if (!o) return Promise.resolve();
  var body = { conversationId: o.id, clientMsgId: uuid4() };
  for (var k in fields) if (Object.prototype.hasOwnProperty.call(fields, k)) body[k] = fields[k];
  var req = {};
  req[frame] = body;
  return request(req).then(function (f) { return f; }, function (err) { showError(err); throw err; });
}

function onRenameStart() {
  var o = state.open;
  var c = o && state.convs.get(o.id);
  if (!c) return;
  $('rename-input').value = c.title;
  $('rename-form').hidden = false;
  $('rename-input').focus();
}

function onRename(e) {
  e.preventDefault();
  var title = $('rename-input').value.trim();
  if (!title) { showToast('A title cannot be empty.'); return; }
  if (utf8Len(title) > MAX_TITLE_BYTES) { showToast('The title is too long (at most ' + MAX_TITLE_BYTES + ' bytes).'); return; }
  memberCommand('rename', { title: title }).then(function () { $('rename-form').hidden = true; }, function () {});
}

function onCreateInvite() {
  var o = state.open;
  var c = o && state.convs.get(o.id);
  if (!c) return;
  // 128 random bits, like the SDK's: the code is the only secret.
  var code = 'inv-' + hex(randomBytes(16));
  memberCommand('createInvite', { code: code }).then(function () {
    if (!c.invites.has(code)) c.invites.set(code, { active: true, by: myId() });
    renderChatHeader();
  }, function () {});
}

var leaveArmed = 0;
function onLeave() {
  var btn = $('leave-button');
  if (!leaveArmed) {
    btn.textContent = 'Sure? ' + btn.textContent;
    leaveArmed = setTimeout(function () { leaveArmed = 0; renderChatHeader(); }, CONFIRM_MS);
    return;
  }
  clearTimeout(leaveArmed);
  leaveArmed = 0;
  var o = state.open;
  if (!o) return;
  var id = o.id;
  memberCommand('leave', {}).then(function (f) {
    var a = (f && f.accepted) || {};
    if (state.convs.has(id)) leftConversation(id, { seq: a.seq, memberLeft: { userId: myId() } });
  }, function () { renderChatHeader(); });
}

// BLOCK_LAG_MS is how long the server's list of blocks may lag this
// page's own block or unblock: the list is read from history, which
// follows the answer by a moment.
var BLOCK_LAG_MS = 10000;

// loadBlocks asks whom the user blocks, so that a direct conversation
// offers Unblock for a block made before a reload or on another device.
export function loadBlocks() {
  if (!client.connected) return;
  var epoch = client.epoch;
  request({ listBlocks: {} }).then(function (f) {
    if (epoch !== client.epoch) return;
    var next = new Map();
    ((f.blocks && f.blocks.userIds) || []).forEach(function (u) { next.set(u, true); });
    var now = Date.now();
    state.blockedHere.forEach(function (h, u) {
      if (now - h.at < BLOCK_LAG_MS) next.set(u, h.blocked);
    });
    state.blocked = next;
    renderChatHeader();
  }, function (err) {
    // Without the list the page knows only its own blocks; posting
    // still works, the server refuses what a block stops.
    if (err.code !== 'DISCONNECTED') showError(err);
  });
}

function onBlock() {
  var other = $('block-button').dataset.user;
  if (!other) return;
  var blocked = !!state.blocked.get(other);
  var frame = blocked ? { unblockUser: { userId: other } } : { blockUser: { userId: other } };
  request(frame).then(function (f) {
    var st = f.blockStatus || {};
    state.blocked.set(other, !!st.blocked);
    state.blockedHere.set(other, { blocked: !!st.blocked, at: Date.now() });
    showToast(st.blocked ? 'You blocked ' + other + '. Neither of you can post here until you unblock.' : 'You unblocked ' + other + '.', true);
    renderChatHeader();
  }, showError);
}

function toggleDetails() {
  detailsOpen = !detailsOpen;
  renderChatHeader();
}

function onAddMember(e) {
  e.preventDefault();
  var o = state.open;
  if (!o) return;
  var input = $('add-member-input');
  var user = input.value.trim();
  if (!validUser(user)) { showToast('Enter a valid user name to add.'); input.focus(); return; }
  var c = state.convs.get(o.id);
  if (c && c.memberIds.indexOf(user) >= 0) { showToast(user + ' is already a member.'); return; }
  var btn = $('add-member-button');
  btn.disabled = true;
  request({ addMember: { conversationId: o.id, clientMsgId: uuid4(), userId: user } }).then(function () {
    input.value = '';
    showToast('Added ' + user + '.', true);
  }, showError).then(function () { btn.disabled = false; });
}

export function initHeader() {
  $('members-button').addEventListener('click', toggleDetails);
  $('rename-button').addEventListener('click', onRenameStart);
  $('rename-form').addEventListener('submit', onRename);
  $('rename-cancel').addEventListener('click', function () { $('rename-form').hidden = true; });
  $('leave-button').addEventListener('click', onLeave);
  $('block-button').addEventListener('click', onBlock);
  $('create-invite').addEventListener('click', onCreateInvite);
  $('add-member-form').addEventListener('submit', onAddMember);
  $('pin-button').addEventListener('click', function () { if (state.open) toggleFlag(state.open.id, 'pinned'); });
  $('mute-button').addEventListener('click', function () { if (state.open) toggleFlag(state.open.id, 'muted'); });
}

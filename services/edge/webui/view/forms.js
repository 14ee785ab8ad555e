// The sidebar's forms: a new direct chat, a new group or channel, and
// joining one by id and invite code.

import { ensureLocalConv, KIND_CHANNEL, KIND_DIRECT, KIND_GROUP, MAX_TITLE_BYTES, myId, state } from '../store.js';
import { request } from '../session.js';
import { utf8Len, uuid4, uuid7, validUser } from '../util.js';
import { $, showError, showToast } from './dom.js';
import { scheduleListRefresh } from './list.js';
import { openConversation } from './chat.js';

function onNewDirect(e) {
  e.preventDefault();
  var input = $('new-direct-input');
  var other = input.value.trim();
  if (!validUser(other)) { showToast('Enter a valid user name (letters, digits, “-”, “_”, “.”).'); input.focus(); return; }
  if (other === myId()) { showToast('Pick someone other than yourself.'); input.focus(); return; }
  var btn = $('new-direct-button');
  btn.disabled = true;
  request({ createConversation: { clientMsgId: uuid4(), kind: KIND_DIRECT, memberIds: [other] } }).then(function (f) {
    var a = f.accepted || {};
    if (!a.conversationId) throw new Error('The server did not say which conversation was opened.');
    input.value = '';
    setNewPanel(false);
    ensureLocalConv(a.conversationId, KIND_DIRECT, '', [myId(), other]);
    openConversation(a.conversationId);
    scheduleListRefresh(300);
  }).catch(showError).then(function () { btn.disabled = false; });
}

function parseMembers(s) {
  var seen = {};
  return s.split(/[,\s]+/).map(function (m) { return m.trim(); }).filter(function (m) {
    if (!m || seen[m]) return false;
    seen[m] = true;
    return true;
  });
}

function onNewGroup(e) {
  e.preventDefault();
  var titleInput = $('new-group-title');
  var membersInput = $('new-group-members');
  var title = titleInput.value.trim();
  if (!title) { showToast('A group needs a title.'); titleInput.focus(); return; }
  if (utf8Len(title) > MAX_TITLE_BYTES) { showToast('The title is too long (at most ' + MAX_TITLE_BYTES + ' bytes).'); return; }
  var members = parseMembers(membersInput.value);
  var bad = members.filter(function (m) { return !validUser(m); });
  if (bad.length) { showToast('Not a valid user name: ' + bad.join(', ')); membersInput.focus(); return; }
  members = members.filter(function (m) { return m !== myId(); });
  var kindSel = $('new-group-kind').value;
  var kind = kindSel === 'group' || kindSel === 'consent' ? KIND_GROUP : KIND_CHANNEL;
  // A group with consent starts with its creator alone: the others are
  // invited once it exists, and join by accepting in their inbox.
  var invitees = kindSel === 'consent' ? members : [];
  if (kindSel === 'consent') members = [];
  var btn = $('new-group-button');
  btn.disabled = true;
  // Choosing the id here makes a retried create land on the same group.
  var body = { clientMsgId: uuid4(), kind: kind, title: title, conversationId: uuid7() };
  if (kindSel === 'public') body.public = true;
  if (kindSel === 'consent') body.consent = true;
  if (members.length) body.memberIds = members;
  request({ createConversation: body }).then(function (f) {
    var a = f.accepted || {};
    var id = a.conversationId || body.conversationId;
    invitees.forEach(function (u) {
      request({ addMember: { conversationId: id, clientMsgId: uuid4(), userId: u } }).catch(showError);
    });
    if (invitees.length) showToast('Invited ' + invitees.join(', ') + ': they join by accepting.', true);
    titleInput.value = '';
    membersInput.value = '';
    setNewPanel(false);
    var c = ensureLocalConv(id, kind, title, [myId()].concat(members));
    if (!c.ownerId) c.ownerId = myId();
    c.isPublic = !!body.public;
    openConversation(id);
    scheduleListRefresh(300);
  }).catch(showError).then(function () { btn.disabled = false; });
}

// onJoin joins by invite code, or follows a public channel when no code
// is given.
function onJoin(e) {
  e.preventDefault();
  var idInput = $('join-id');
  var codeInput = $('join-code');
  var id = idInput.value.trim();
  var code = codeInput.value.trim();
  if (!id) { showToast('Enter the conversation id you were given.'); idInput.focus(); return; }
  var btn = $('join-button');
  btn.disabled = true;
  var frame = code ? { joinByInvite: { conversationId: id, clientMsgId: uuid4(), code: code } }
    : { follow: { conversationId: id, clientMsgId: uuid4() } };
  request(frame).then(function () {
    idInput.value = '';
    codeInput.value = '';
    setNewPanel(false);
    state.gone.delete(id);
    ensureLocalConv(id, '', '', [myId()]);
    openConversation(id);
    scheduleListRefresh(300);
  }, showError).then(function () { btn.disabled = false; });
}

var CONTACT_STATE_TEXT = {
  CONTACT_STATE_OUTGOING: 'Asked {}: the request waits in their inbox.',
  CONTACT_STATE_INCOMING: '{} asks you too: answer in your inbox.',
  CONTACT_STATE_CONTACT: 'You and {} are contacts.'
};

// onNewContact asks a user to become a contact.
function onNewContact(e) {
  e.preventDefault();
  var input = $('new-contact-input');
  var other = input.value.trim();
  if (!validUser(other)) { showToast('Enter a valid user name (letters, digits, “-”, “_”, “.”).'); input.focus(); return; }
  if (other === myId()) { showToast('Pick someone other than yourself.'); input.focus(); return; }
  var btn = $('new-contact-button');
  btn.disabled = true;
  request({ requestContact: { userId: other } }).then(function (f) {
    var st = (f.contactStatus && f.contactStatus.state) || '';
    input.value = '';
    setNewPanel(false);
    showToast((CONTACT_STATE_TEXT[st] || 'Asked {}.').replace('{}', other), true);
    scheduleListRefresh(300);
  }, showError).then(function () { btn.disabled = false; });
}

export function openDirectWith(other) {
  request({ createConversation: { clientMsgId: uuid4(), kind: KIND_DIRECT, memberIds: [other] } }).then(function (f) {
    var a = f.accepted || {};
    if (!a.conversationId) return;
    ensureLocalConv(a.conversationId, KIND_DIRECT, '', [myId(), other]);
    openConversation(a.conversationId);
    scheduleListRefresh(300);
  }, showError);
}

// setNewPanel shows or hides the three forms behind the sidebar's "New"
// button; they would otherwise take the top of the list on a phone.
export function setNewPanel(open) {
  $('new-panel').hidden = !open;
  $('new-button').setAttribute('aria-expanded', open ? 'true' : 'false');
  $('new-button').textContent = open ? 'Close' : 'New';
  if (open) $('new-direct-input').focus();
}

export function initForms() {
  $('new-button').addEventListener('click', function () { setNewPanel($('new-panel').hidden); });
  $('new-panel').addEventListener('keydown', function (e) {
    if (e.key === 'Escape') { setNewPanel(false); $('new-button').focus(); }
  });
  $('new-direct-form').addEventListener('submit', onNewDirect);
  $('new-group-form').addEventListener('submit', onNewGroup);
  $('join-form').addEventListener('submit', onJoin);
  $('new-contact-form').addEventListener('submit', onNewContact);
}

// The inbox's items: contact requests and invitations, as lines of the
// inbox conversation with buttons to answer them. An item is answered
// once a later one names the same user or conversation, so the buttons
// go from every earlier item when one arrives (settleInbox).

import { request } from '../session.js';
import { el, showError, showToast } from './dom.js';

var CONTACT_TEXT = {
  CONTACT_ACTION_REQUESTED: [' asks to be your contact', 'You asked {} to be your contact'],
  CONTACT_ACTION_ACCEPTED: [' accepted: you are contacts now', 'You and {} are contacts now'],
  CONTACT_ACTION_DECLINED: [' declined', 'You declined {}’s request'],
  CONTACT_ACTION_CANCELLED: [' withdrew their request', 'You withdrew your request to {}'],
  CONTACT_ACTION_REMOVED: [' removed you from their contacts', 'You removed {} from your contacts']
};

// contactText is how the owner reads a contactUpdated item.
export function contactText(u) {
  var t = CONTACT_TEXT[u.action] || [' changed your contact', 'Your contact with {} changed'];
  return u.outgoing ? t[1].replace('{}', u.userId) : u.userId + t[0];
}

// invitationText is how the owner reads an invitationUpdated item.
export function invitationText(u) {
  var where = '“' + (u.title || 'a conversation') + '”';
  if (u.action === 'INVITATION_ACTION_ACCEPTED') return 'You joined ' + where;
  if (u.action === 'INVITATION_ACTION_DECLINED') return 'You declined the invitation to ' + where;
  return (u.inviterId || 'Someone') + ' invites you to ' + where;
}

// inboxActions adds Accept/Decline (or Join/Decline) to the node of an
// item that asks for an answer; onJoined opens a conversation joined.
export function inboxActions(node, ev, onJoined) {
  var c = ev.contactUpdated;
  var i = ev.invitationUpdated;
  if (c) node.dataset.contact = c.userId;
  if (i) node.dataset.invite = i.conversationId;
  var ask = c && c.action === 'CONTACT_ACTION_REQUESTED' && !c.outgoing;
  var invited = i && i.action === 'INVITATION_ACTION_INVITED';
  if (!ask && !invited) return;
  var box = el('span', 'inbox-actions');
  function answer(yes) {
    box.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    var req = ask ? { respondContact: { userId: c.userId, accept: yes } } : { respondInvitation: { conversationId: i.conversationId, accept: yes } };
    request(req).then(function (f) {
      box.remove();
      if (ask) showToast(yes ? 'You and ' + c.userId + ' are contacts now.' : 'You declined ' + c.userId + '’s request.', true);
      else if (f.invitationStatus && f.invitationStatus.joined) onJoined(i.conversationId, i);
      else showToast('You declined the invitation.', true);
    }, function (err) {
      box.querySelectorAll('button').forEach(function (b) { b.disabled = false; });
      showError(err);
    });
  }
  var yes = el('button', 'inbox-accept', ask ? 'Accept' : 'Join');
  var no = el('button', 'inbox-decline secondary', 'Decline');
  yes.type = no.type = 'button';
  yes.addEventListener('click', function () { answer(true); });
  no.addEventListener('click', function () { answer(false); });
  box.appendChild(yes);
  box.appendChild(no);
  node.appendChild(box);
}

// settleInbox takes the buttons off every item a later item answered.
export function settleInbox(box) {
  var latest = {};
  var nodes = box.querySelectorAll('[data-contact], [data-invite]');
  for (var k = nodes.length - 1; k >= 0; k--) {
    var n = nodes[k];
    var key = n.dataset.contact ? 'u:' + n.dataset.contact : 'c:' + n.dataset.invite;
    if (latest[key]) {
      var acts = n.querySelector('.inbox-actions');
      if (acts) acts.remove();
    }
    latest[key] = true;
  }
}

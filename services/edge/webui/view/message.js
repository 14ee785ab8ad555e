// How an event looks: messages with their text, links, mentions,
// attachments, contacts, quotes and reactions, and one-line system events.

import { ensureLocalConv, isModerator, KIND_CHANNEL, KIND_GROUP, messageFrom, myId, postBlock, ROLE_ADMIN, state } from '../store.js';
import { request } from '../session.js';
import { fmtSize, fmtTime, parseTime, preview, safeHref, seqOf, uuid4 } from '../util.js';
import { $, actionButton, confirmButton, el, showError, timeNode } from './dom.js';
import { fetchMessage, openConversation, scrollToMessage } from './chat.js';
import { contactText, inboxActions, invitationText } from './inbox.js';
import { scheduleListRefresh } from './list.js';
import { receiptNode } from './receipts.js';
import { startEdit, startReply } from './composer.js';
import { openDirectWith } from './forms.js';

var QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

export function messageNode(o, m) {
  var me = myId();
  var c = state.convs.get(o.id);
  var own = m.senderId === me;
  var node = el('div', 'message event' + (own ? ' own' : '') + (m.deleted ? ' deleted' : ''));
  node.dataset.seq = String(m.seq);
  node.dataset.sender = m.senderId;
  if (m.senderDeviceId) node.title = 'from device ' + m.senderDeviceId;
  var meta = el('div', 'meta');
  meta.appendChild(el('span', 'sender', m.senderId || 'unknown'));
  var t = parseTime(m.time);
  meta.appendChild(timeNode(t, m.time));
  if (own && !m.deleted) meta.appendChild(receiptNode(o, m.seq));
  if (m.editedSeq && !m.deleted) {
    var ed = el('span', 'edited', 'edited');
    var et = parseTime(m.editedTime);
    if (et) ed.title = 'edited ' + fmtTime(et, true);
    meta.appendChild(ed);
  }
  if (!m.deleted) {
    var acts = el('span', 'msg-actions');
    if (!postBlock(c)) acts.appendChild(actionButton('Reply', 'act-reply', function () { startReply(m.seq); }));
    acts.appendChild(actionButton('React', 'act-react', function () { togglePicker(node, m); }));
    if (own) acts.appendChild(actionButton('Edit', 'act-edit', function () { startEdit(m.seq); }));
    if (own || isModerator(c)) acts.appendChild(confirmButton('Delete', 'act-delete', 'Delete?', function () { deleteMessage(m.seq); }));
    meta.appendChild(acts);
  }
  node.appendChild(meta);
  if (m.replyToSeq && !m.deleted) node.appendChild(quoteNode(o, m.replyToSeq));
  var text = el('div', 'text');
  if (m.deleted) text.textContent = 'This message was deleted';
  else renderRichText(text, m);
  node.appendChild(text);
  if (m.attachments.length) {
    var atts = el('div', 'attachments');
    m.attachments.forEach(function (a) { atts.appendChild(attachmentNode(a)); });
    node.appendChild(atts);
  }
  if (m.contact) node.appendChild(contactNode(m.contact));
  if (m.reactions.length) {
    var rs = el('div', 'reactions');
    m.reactions.forEach(function (r) {
      if (!r.count) return;
      var b = el('button', 'reaction' + (r.me ? ' mine' : ''), r.emoji + ' ' + r.count);
      b.type = 'button';
      b.dataset.emoji = r.emoji;
      b.dataset.count = String(r.count);
      b.setAttribute('aria-pressed', r.me ? 'true' : 'false');
      b.title = r.me ? 'You reacted; click to take it back' : 'React with ' + r.emoji;
      b.addEventListener('click', function () { react(m.seq, r.emoji, r.me); });
      rs.appendChild(b);
    });
    node.appendChild(rs);
  }
  return node;
}

// onJoined opens a conversation the user just joined from their inbox.
function onJoined(id, inv) {
  ensureLocalConv(id, inv.kind || KIND_GROUP, inv.title || '', [myId()]);
  openConversation(id);
  scheduleListRefresh(300);
}

export function systemNode(ev) {
  var s = seqOf(ev.seq);
  var node = el('div', 'system event');
  var who = ev.senderId || 'someone';
  var line;
  if (ev.conversationCreated) {
    var cc = ev.conversationCreated;
    if (cc.kind === KIND_GROUP || cc.kind === KIND_CHANNEL) {
      var others = (cc.memberIds || []).filter(function (m) { return m !== ev.senderId; });
      line = who + ' created the ' + (cc.kind === KIND_CHANNEL ? (cc.public ? 'public channel' : 'private channel') : 'group') +
        ' “' + (cc.title || '') + '”' + (others.length ? ' with ' + others.join(', ') : '');
    } else {
      line = who + ' started the conversation';
    }
  } else if (ev.memberAdded) {
    line = who + ' added ' + (ev.memberAdded.userId || 'someone');
  } else if (ev.memberRemoved) {
    line = who + ' removed ' + (ev.memberRemoved.userId || 'someone');
  } else if (ev.memberLeft) {
    line = (ev.memberLeft.userId || who) + ' left';
  } else if (ev.memberJoined) {
    line = (ev.memberJoined.userId || who) + (ev.memberJoined.inviteCode ? ' joined with an invite' : ' joined');
  } else if (ev.roleChanged) {
    line = who + ' made ' + ev.roleChanged.userId + (ev.roleChanged.role === ROLE_ADMIN ? ' an admin' : ' a member');
  } else if (ev.ownershipTransferred) {
    line = who + ' made ' + ev.ownershipTransferred.newOwnerId + ' the owner';
  } else if (ev.memberMuted) {
    line = who + (ev.memberMuted.muted ? ' muted ' : ' unmuted ') + ev.memberMuted.userId;
  } else if (ev.conversationRenamed) {
    line = who + ' renamed the conversation to “' + (ev.conversationRenamed.title || '') + '”';
  } else if (ev.inviteCreated) {
    line = who + ' created an invite';
  } else if (ev.inviteRevoked) {
    line = who + ' revoked an invite';
  } else if (ev.memberInvited) {
    line = who + ' invited ' + (ev.memberInvited.userId || 'someone') + ' (they join by accepting)';
  } else if (ev.contactUpdated) {
    line = contactText(ev.contactUpdated);
  } else if (ev.invitationUpdated) {
    line = invitationText(ev.invitationUpdated);
  } else if (ev.messagePosted && ev.messagePosted.system) {
    node.classList.add('notice');
    line = ev.messagePosted.text || '';
  } else {
    line = 'An update this page does not know how to show';
  }
  node.appendChild(el('span', 'text', line));
  node.appendChild(timeNode(parseTime(ev.time), ev.time));
  if (ev.contactUpdated || ev.invitationUpdated) inboxActions(node, ev, onJoined);
  node.dataset.seq = String(s);
  if (ev.eventId) node.dataset.eventId = ev.eventId;
  if (ev.senderId) node.dataset.sender = ev.senderId;
  return node;
}

// charIndexes maps UTF-8 byte offsets (how the server gives link spans)
// to string indexes; offsets inside a character have none.
function charIndexes(text, offsets) {
  var want = {};
  offsets.forEach(function (b) { want[b] = true; });
  var out = {};
  var bytes = 0;
  for (var i = 0; i < text.length;) {
    if (want[bytes]) out[bytes] = i;
    var cp = text.codePointAt(i);
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    i += cp >= 0x10000 ? 2 : 1;
  }
  if (want[bytes]) out[bytes] = text.length;
  return out;
}

function escapeRe(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

// appendMentions adds text, with the @names of the message's mentions
// set apart.
function appendMentions(box, text, ids) {
  if (!text) return;
  if (!ids.length) { box.appendChild(document.createTextNode(text)); return; }
  var sorted = ids.slice().sort(function (a, b) { return b.length - a.length; });
  var re = new RegExp('@(' + sorted.map(escapeRe).join('|') + ')(?![A-Za-z0-9_@-]|\\.[A-Za-z0-9])', 'g');
  var last = 0;
  var mt;
  while ((mt = re.exec(text)) !== null) {
    if (mt.index > last) box.appendChild(document.createTextNode(text.slice(last, mt.index)));
    var span = el('span', 'mention' + (mt[1] === myId() ? ' mention-me' : ''), mt[0]);
    span.dataset.user = mt[1];
    box.appendChild(span);
    last = re.lastIndex;
  }
  if (last < text.length) box.appendChild(document.createTextNode(text.slice(last)));
}

function renderRichText(box, m) {
  var text = m.text || '';
  // protojson leaves a zero offset out.
  var links = (m.links || []).map(function (l) { return { start: Number(l.start) || 0, end: Number(l.end) || 0, url: l.url }; })
    .filter(function (l) { return l.end > l.start; });
  var idx = charIndexes(text, links.reduce(function (a, l) { a.push(l.start, l.end); return a; }, []));
  var spans = links.map(function (l) { return { s: idx[l.start], e: idx[l.end], url: l.url }; })
    .filter(function (x) { return x.s !== undefined && x.e !== undefined; })
    .sort(function (a, b) { return a.s - b.s; });
  var at = 0;
  spans.forEach(function (sp) {
    if (sp.s < at) return;
    appendMentions(box, text.slice(at, sp.s), m.mentionIds);
    var shown = text.slice(sp.s, sp.e);
    var href = safeHref(sp.url);
    if (href) {
      var a = el('a', 'link', shown);
      a.href = href;
      a.target = '_blank';
      a.rel = 'noopener noreferrer nofollow';
      box.appendChild(a);
    } else {
      box.appendChild(document.createTextNode(shown));
    }
    at = sp.e;
  });
  appendMentions(box, text.slice(at), m.mentionIds);
}

var ATT_ICON = { ATTACHMENT_KIND_IMAGE: '🖼️', ATTACHMENT_KIND_VIDEO: '🎬', ATTACHMENT_KIND_AUDIO: '🎵' };

function attachmentNode(att) {
  var row = el('div', 'attachment');
  row.dataset.kind = String(att.kind || '').replace(/^ATTACHMENT_KIND_/, '').toLowerCase();
  row.appendChild(el('span', 'att-icon', ATT_ICON[att.kind] || '📄'));
  var href = safeHref(att.url);
  var name = att.name || (href ? decodeURIComponent(new URL(href).pathname.split('/').pop() || '') : '') || 'file';
  var label;
  if (href) {
    label = el('a', 'att-name', name);
    label.href = href;
    label.target = '_blank';
    label.rel = 'noopener noreferrer nofollow';
  } else {
    label = el('span', 'att-name', name);
  }
  row.appendChild(label);
  var meta = [att.contentType || '', fmtSize(att.sizeBytes)];
  if (att.width && att.height) meta.push(att.width + '×' + att.height);
  row.appendChild(el('span', 'att-meta', meta.filter(Boolean).join(' · ')));
  return row;
}

function contactNode(ct) {
  var box = el('div', 'contact');
  box.appendChild(el('span', 'contact-label', 'Contact'));
  box.appendChild(el('strong', 'contact-name', ct.displayName || ''));
  if (ct.userId) {
    var line = el('span', 'contact-user', '@' + ct.userId + ' ');
    if (ct.userId !== myId()) {
      var b = el('button', 'link', 'Message');
      b.type = 'button';
      b.addEventListener('click', function () { openDirectWith(ct.userId); });
      line.appendChild(b);
    }
    box.appendChild(line);
  }
  if (ct.phone) box.appendChild(el('span', 'contact-phone', ct.phone));
  if (ct.email) box.appendChild(el('span', 'contact-email', ct.email));
  return box;
}

function quoteNode(o, seq) {
  var q = el('div', 'quote');
  q.dataset.replyTo = String(seq);
  q.tabIndex = 0;
  q.setAttribute('role', 'button');
  q.title = 'Show the quoted message';
  fillQuote(o, q, seq);
  var go = function (e) {
    if (e.type === 'keydown' && e.key !== 'Enter') return;
    e.preventDefault();
    scrollToMessage(seq);
  };
  q.addEventListener('click', go);
  q.addEventListener('keydown', go);
  return q;
}

export function fillQuote(o, q, seq) {
  q.textContent = '';
  var m = o.msgs.get(seq) || o.quotes.get(seq);
  if (!m) {
    q.appendChild(el('span', 'quote-text', 'Reply to message #' + seq));
    if (!o.quotes.has(seq)) {
      o.quotes.set(seq, null);
      fetchMessage(o, seq).then(function (ev) {
        if (o !== state.open || !ev || o.msgs.has(seq)) return;
        o.quotes.set(seq, messageFrom(ev, { asOf: 0 }));
        refreshQuotes(o);
      }, function () { /* the quote stays a number */ });
    }
    return;
  }
  q.appendChild(el('span', 'quote-sender', m.senderId));
  q.appendChild(el('span', 'quote-text', m.deleted ? 'Deleted message' : excerptOf(m)));
}

export function refreshQuotes(o) {
  document.querySelectorAll('#messages .quote').forEach(function (q) { fillQuote(o, q, seqOf(q.dataset.replyTo)); });
}

export function excerptOf(m) {
  if (m.text) return preview(m.text);
  if (m.attachments.length) return '📎 ' + (m.attachments[0].name || 'Attachment');
  if (m.contact) return '👤 ' + (m.contact.displayName || 'Contact');
  return '';
}

function togglePicker(node, m) {
  var open = node.querySelector('.react-picker');
  if (open) { open.remove(); return; }
  var p = el('div', 'react-picker');
  QUICK_EMOJI.forEach(function (e) {
    var mine = m.reactions.some(function (r) { return r.emoji === e && r.me; });
    var b = el('button', 'pick', e);
    b.type = 'button';
    b.dataset.emoji = e;
    b.addEventListener('click', function () { p.remove(); react(m.seq, e, mine); });
    p.appendChild(b);
  });
  node.appendChild(p);
}

function react(seq, emoji, remove) {
  var o = state.open;
  if (!o) return;
  var body = { conversationId: o.id, clientMsgId: uuid4(), targetSeq: String(seq), emoji: emoji };
  if (remove) body.remove = true;
  request({ react: body }).catch(showError);
}

function deleteMessage(seq) {
  var o = state.open;
  if (!o) return;
  request({ deleteMessage: { conversationId: o.id, clientMsgId: uuid4(), targetSeq: String(seq) } }).catch(showError);
}

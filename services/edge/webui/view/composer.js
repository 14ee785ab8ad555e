// The composer: replies, edits, attachments and @mentions, and the
// outbox, which keeps messages until their event shows up and resends
// them with the same clientMsgId after a reconnect.

import { describe, shortCode } from '../protocol.js';
import { myId, newCompose, postBlock, state } from '../store.js';
import { client, request } from '../session.js';
import { fmtSize, safeHref, seqOf, utf8Len, uuid4 } from '../util.js';
import { $, actionButton, el, showError, showToast } from './dom.js';
import { scrollToBottom, syncOpen } from './chat.js';
import { excerptOf } from './message.js';
import { onComposerTyping, stopTyping } from './typing.js';

var MAX_ATTACHMENTS = 10;
var MAX_TEXT_BYTES = 16 * 1024;

export function startReply(seq) {
  var o = state.open;
  if (!o) return;
  o.compose.replyTo = seq;
  o.compose.editSeq = 0;
  renderCompose();
  $('composer-input').focus();
}

export function startEdit(seq) {
  var o = state.open;
  var m = o && o.msgs.get(seq);
  if (!m) return;
  o.compose.editSeq = seq;
  o.compose.replyTo = 0;
  $('composer-input').value = m.text;
  autoGrow();
  renderCompose();
  $('composer-input').focus();
}

function cancelCompose() {
  var o = state.open;
  if (!o) return;
  if (o.compose.editSeq) $('composer-input').value = '';
  o.compose.editSeq = 0;
  o.compose.replyTo = 0;
  autoGrow();
  renderCompose();
}

export function renderCompose() {
  var o = state.open;
  if (!o) return;
  var cx = o.compose;
  var bar = $('composer-context');
  var txt = $('composer-context-text');
  if (cx.editSeq) {
    bar.hidden = false;
    txt.textContent = 'Editing your message';
    $('send-button').textContent = 'Save';
  } else if (cx.replyTo) {
    var m = o.msgs.get(cx.replyTo);
    bar.hidden = false;
    txt.textContent = 'Replying to ' + (m ? m.senderId + ': ' + excerptOf(m) : 'message #' + cx.replyTo);
    $('send-button').textContent = 'Send';
  } else {
    bar.hidden = true;
    $('send-button').textContent = 'Send';
  }
  var pend = $('pending-attachments');
  pend.textContent = '';
  cx.attachments.forEach(function (a, i) {
    var chip = el('span', 'pending-attachment', '📎 ' + (a.name || a.url) + (a.sizeBytes ? ' · ' + fmtSize(a.sizeBytes) : '') + ' ');
    chip.appendChild(actionButton('×', 'att-remove', function () { cx.attachments.splice(i, 1); renderCompose(); }));
    pend.appendChild(chip);
  });
  $('attach-button').disabled = !!cx.editSeq;
}

function toggleAttachForm(show) {
  var f = $('attach-form');
  f.hidden = show === undefined ? !f.hidden : !show;
  if (!f.hidden) $('attach-url').focus();
}

function attachmentKindOf(type) {
  var t = String(type || '').toLowerCase();
  if (t.indexOf('image/') === 0) return 'ATTACHMENT_KIND_IMAGE';
  if (t.indexOf('video/') === 0) return 'ATTACHMENT_KIND_VIDEO';
  if (t.indexOf('audio/') === 0) return 'ATTACHMENT_KIND_AUDIO';
  return 'ATTACHMENT_KIND_FILE';
}

function onAttachAdd(e) {
  e.preventDefault();
  var o = state.open;
  if (!o) return;
  var url = $('attach-url').value.trim();
  if (!safeHref(url)) { showToast('The attachment needs an absolute http or https URL.'); $('attach-url').focus(); return; }
  if (o.compose.attachments.length >= MAX_ATTACHMENTS) { showToast('At most ' + MAX_ATTACHMENTS + ' attachments per message.'); return; }
  var num = function (id) { var v = $(id).value.trim(); return /^\d+$/.test(v) ? Number(v) : 0; };
  var type = $('attach-type').value.trim();
  var a = { kind: attachmentKindOf(type), url: url };
  var name = $('attach-name').value.trim();
  if (name) a.name = name;
  if (type) a.contentType = type;
  if (num('attach-size')) a.sizeBytes = String(num('attach-size'));
  if (num('attach-width') && num('attach-height')) { a.width = num('attach-width'); a.height = num('attach-height'); }
  o.compose.attachments.push(a);
  ['attach-url', 'attach-name', 'attach-type', 'attach-size', 'attach-width', 'attach-height'].forEach(function (id) { $(id).value = ''; });
  toggleAttachForm(false);
  renderCompose();
  $('composer-input').focus();
}

var MENTION_RE = /(^|[^A-Za-z0-9._@-])@([A-Za-z0-9._@-]{1,64})/g;

// mentionsIn finds the @names of members in text; a name may end in
// punctuation ("@bob.") that is not part of it.
function mentionsIn(text, members) {
  var out = [];
  var mt;
  MENTION_RE.lastIndex = 0;
  while ((mt = MENTION_RE.exec(text)) !== null) {
    var name = mt[2];
    while (name && members.indexOf(name) < 0 && /[.@_-]$/.test(name)) name = name.slice(0, -1);
    if (name && members.indexOf(name) >= 0 && out.indexOf(name) < 0) out.push(name);
  }
  return out;
}

function mentionPrefix() {
  var t = $('composer-input');
  var before = t.value.slice(0, t.selectionStart);
  var mt = /(^|\s)@([A-Za-z0-9._@-]*)$/.exec(before);
  return mt ? mt[2] : null;
}

function renderMentionSuggest() {
  var box = $('mention-suggest');
  box.textContent = '';
  var o = state.open;
  var c = o && state.convs.get(o.id);
  var prefix = c ? mentionPrefix() : null;
  if (prefix === null) { box.hidden = true; return; }
  var p = prefix.toLowerCase();
  var hits = c.memberIds.filter(function (m) { return m !== myId() && m.toLowerCase().indexOf(p) === 0; }).sort().slice(0, 8);
  if (!hits.length) { box.hidden = true; return; }
  hits.forEach(function (m) {
    var b = el('button', 'mention-option secondary', '@' + m);
    b.type = 'button';
    b.dataset.user = m;
    b.addEventListener('mousedown', function (e) { e.preventDefault(); });
    b.addEventListener('click', function () { pickMention(m); });
    box.appendChild(b);
  });
  box.hidden = false;
}

function pickMention(name) {
  var t = $('composer-input');
  var pos = t.selectionStart;
  var before = t.value.slice(0, pos);
  var at = before.lastIndexOf('@');
  if (at < 0) return;
  var insert = '@' + name + ' ';
  t.value = before.slice(0, at) + insert + t.value.slice(pos);
  var caret = at + insert.length;
  t.setSelectionRange(caret, caret);
  t.focus();
  renderMentionSuggest();
}

function onSend(e) {
  if (e) e.preventDefault();
  var o = state.open;
  if (!o) return;
  var c = state.convs.get(o.id);
  var input = $('composer-input');
  var text = input.value;
  var cx = o.compose;
  if (utf8Len(text) > MAX_TEXT_BYTES) { showToast('That message is too long (at most 16 KiB).'); return; }
  var mentions = mentionsIn(text, c ? c.memberIds : []);
  if (cx.editSeq) {
    if (!text.trim()) { showToast('An edit needs text; delete the message instead.'); return; }
    var seq = cx.editSeq;
    var body = { conversationId: o.id, clientMsgId: uuid4(), targetSeq: String(seq), text: text };
    if (mentions.length) body.mentionIds = mentions;
    $('send-button').disabled = true;
    request({ editMessage: body }).then(function () {
      if (state.open !== o) return;
      if (o.compose.editSeq === seq) { input.value = ''; o.compose.editSeq = 0; autoGrow(); renderCompose(); }
    }, showError).then(function () { $('send-button').disabled = !!postBlock(state.convs.get(o.id)); });
    return;
  }
  if (!text.trim() && !cx.attachments.length) return;
  var msg = { text: text };
  if (cx.attachments.length) msg.attachments = cx.attachments.slice();
  if (cx.replyTo) msg.replyToSeq = String(cx.replyTo);
  if (mentions.length) msg.mentionIds = mentions;
  var item = { clientMsgId: uuid4(), conversationId: o.id, msg: msg, state: 'sending', seq: 0, error: '' };
  state.outbox.push(item);
  input.value = '';
  stopTyping();
  o.compose = newCompose();
  $('mention-suggest').hidden = true;
  autoGrow();
  renderCompose();
  renderOutbox();
  scrollToBottom();
  submit(item);
}

function submit(item) {
  item.state = 'sending';
  item.error = '';
  renderOutbox();
  var body = { conversationId: item.conversationId, clientMsgId: item.clientMsgId };
  for (var k in item.msg) if (Object.prototype.hasOwnProperty.call(item.msg, k)) body[k] = item.msg[k];
  request({ sendMessage: body }).then(function (f) {
    var a = f.accepted || {};
    item.seq = seqOf(a.seq);
    item.state = 'sent';
    var o = state.open;
    if (o && o.id === item.conversationId) {
      if (item.seq && item.seq <= o.lastSeq) removeOutbox(item.clientMsgId, item.conversationId);
      else {
        // The push normally follows at once; if it does not, fetch it.
        setTimeout(function () {
          if (state.open === o && state.outbox.indexOf(item) >= 0 && item.seq > o.lastSeq) syncOpen(o);
        }, 2000);
      }
    } else {
      // Not on screen: its event will come with the history when opened.
      removeOutbox(item.clientMsgId, item.conversationId);
    }
    renderOutbox();
  }, function (err) {
    if (err.code === 'DISCONNECTED') {
      item.state = 'waiting';
    } else {
      item.state = 'failed';
      item.error = describe(err);
      item.code = shortCode(err.code);
    }
    renderOutbox();
  });
}

export function flushOutbox() {
  state.outbox.forEach(function (item) {
    if (item.state === 'waiting' || item.state === 'sending') submit(item);
  });
}

export function removeOutbox(clientMsgId, conversationId) {
  var before = state.outbox.length;
  state.outbox = state.outbox.filter(function (it) {
    return !(it.clientMsgId === clientMsgId && it.conversationId === conversationId);
  });
  if (state.outbox.length !== before) renderOutbox();
}

export function renderOutbox() {
  var box = $('outbox');
  box.textContent = '';
  var o = state.open;
  if (!o) return;
  state.outbox.forEach(function (item) {
    if (item.conversationId !== o.id) return;
    var node = el('div', 'message own pending' + (item.state === 'failed' ? ' failed' : ''));
    node.dataset.clientMsgId = item.clientMsgId;
    node.dataset.state = item.state;
    if (item.code) node.dataset.code = item.code;
    var meta = el('div', 'meta');
    meta.appendChild(el('span', 'sender', myId()));
    var label = item.state === 'sending' ? (client.connected ? 'sending…' : 'waiting for connection…')
      : item.state === 'sent' ? 'sent'
      : item.state === 'waiting' ? 'waiting for connection…'
      : 'not sent: ' + item.error;
    meta.appendChild(el('span', 'state', label));
    if (item.state === 'failed') {
      var actions = el('span', 'actions');
      var retry = el('button', 'link', 'Retry');
      retry.type = 'button';
      retry.addEventListener('click', function () { submit(item); });
      var discard = el('button', 'link', 'Discard');
      discard.type = 'button';
      discard.addEventListener('click', function () { removeOutbox(item.clientMsgId, item.conversationId); });
      actions.appendChild(retry);
      actions.appendChild(discard);
      meta.appendChild(actions);
    }
    node.appendChild(meta);
    node.appendChild(el('div', 'text', item.msg.text));
    var n = (item.msg.attachments || []).length;
    if (n) node.appendChild(el('div', 'att-meta', '📎 ' + n + (n === 1 ? ' attachment' : ' attachments')));
    box.appendChild(node);
  });
}

function autoGrow() {
  var t = $('composer-input');
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight + 2, 180) + 'px';
}

function onComposerKey(e) {
  if (e.key === 'Escape') {
    if (!$('mention-suggest').hidden) { $('mention-suggest').hidden = true; return; }
    cancelCompose();
    return;
  }
  if ((e.key === 'Tab' || e.key === 'Enter') && !$('mention-suggest').hidden && !e.shiftKey) {
    var first = $('mention-suggest').querySelector('.mention-option');
    // Enter after a whole name sends; Tab always completes.
    var exact = $('mention-suggest').querySelector('.mention-option[data-user="' + (mentionPrefix() || '').replace(/["\\]/g, '') + '"]');
    if (first && (e.key === 'Tab' || !exact)) { e.preventDefault(); pickMention(first.dataset.user); return; }
  }
  if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    onSend();
  }
}

export function initComposer() {
  $('attach-button').addEventListener('click', function () { toggleAttachForm(); });
  $('attach-form').addEventListener('submit', onAttachAdd);
  $('attach-cancel').addEventListener('click', function () { toggleAttachForm(false); });
  $('composer-context-cancel').addEventListener('click', cancelCompose);
  $('composer').addEventListener('submit', onSend);
  $('composer-input').addEventListener('keydown', onComposerKey);
  $('composer-input').addEventListener('input', function () { autoGrow(); renderMentionSuggest(); onComposerTyping(); });
  $('composer-input').addEventListener('blur', function () { setTimeout(function () { $('mention-suggest').hidden = true; }, 150); });
}

// Receipts on the user's own messages: sent, delivered, read, and who
// has seen the latest.

import { atLeast, foldReceipt, KIND_CHANNEL, KIND_DIRECT, KIND_GROUP, latestOwn, myId, positionsOf, seenBy, state } from '../store.js';
import { client, request } from '../session.js';
import { seqOf } from '../util.js';
import { el } from './dom.js';
import { renderList } from './list.js';
import { msgNodeOf } from './chat.js';

var SEEN_NAMES = 5;

export function onReceipts(list) {
  var o = state.open;
  var me = myId();
  var moved = false;
  var listChanged = false;
  list.forEach(function (r) {
    if (!r || !r.conversationId) return;
    if (o && r.conversationId === o.id) {
      if (foldReceipt(o.rc, r)) moved = true;
      return;
    }
    // Read on another of the user's devices: what this page counted as
    // unread there is read.
    var c = state.convs.get(r.conversationId);
    if (c && r.userId === me && c.unread && seqOf(r.readSeq) >= c.lastSeq) {
      c.unread = 0;
      listChanged = true;
    }
  });
  if (moved) renderReceipts(o);
  if (listChanged) renderList();
}

// loadReceipts reads every position of the open conversation: pushes
// only bring the changes, and may be shed when the connection lags.
export function loadReceipts(o) {
  if (!client.connected) return;
  request({ getReceipts: { conversationId: o.id } }).then(function (f) {
    if (o !== state.open) return;
    ((f.receipts && f.receipts.receipts) || []).forEach(function (r) { foldReceipt(o.rc, r); });
    renderReceipts(o);
  }, function () { /* statuses stay what the pushes said */ });
}

function fillReceipt(o, span, seq) {
  var pos = positionsOf(o);
  var read = atLeast(pos.reads, seq);
  var devs = atLeast(pos.devs, seq);
  var c = state.convs.get(o.id);
  var direct = c && c.kind === KIND_DIRECT;
  var status = read ? 'read' : devs ? 'delivered' : 'sent';
  span.dataset.status = status;
  span.dataset.read = String(read);
  span.dataset.delivered = String(devs);
  span.textContent = status === 'read' ? (direct ? '✓✓ Read' : '✓✓ Read by ' + read)
    : status === 'delivered' ? '✓✓ Delivered' : '✓ Sent';
  span.title = 'Sent' + (devs ? ' · delivered to ' + devs + (devs === 1 ? ' device' : ' devices') : '') +
    (read ? ' · read by ' + read + (read === 1 ? ' member' : ' members') : '');
}

export function receiptNode(o, seq) {
  var span = el('span', 'receipt');
  fillReceipt(o, span, seq);
  return span;
}

export function renderReceipts(o) {
  if (!o || o !== state.open) return;
  document.querySelectorAll('#messages .message.own .receipt').forEach(function (span) {
    fillReceipt(o, span, seqOf(span.closest('.message').dataset.seq));
  });
  renderSeenBy(o);
}

// renderSeenBy names, under the user's latest message of a group or
// channel, who has read it; a direct chat's "Read" says the same.
export function renderSeenBy(o) {
  document.querySelectorAll('#messages .seen-by').forEach(function (n) { n.remove(); });
  var c = state.convs.get(o.id);
  if (!c || (c.kind !== KIND_GROUP && c.kind !== KIND_CHANNEL)) return;
  var m = latestOwn(o);
  var node = m && msgNodeOf(m.seq);
  if (!node) return;
  var names = seenBy(o, m.seq, m.senderId);
  if (!names.length) return;
  var more = names.length - SEEN_NAMES;
  var line = el('div', 'seen-by', 'Seen by ' + names.slice(0, SEEN_NAMES).join(', ') +
    (more > 0 ? ' and ' + more + (more === 1 ? ' other' : ' others') : ''));
  line.title = 'Seen by ' + names.join(', ');
  line.dataset.users = names.join(',');
  node.appendChild(line);
}

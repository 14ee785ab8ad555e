// The page's model: the user's conversations, the open one's messages,
// positions and composer, and what is being sent. No DOM and no
// connection: the views change it, then draw from it.

import { arr, parseTime, preview, seqOf } from './util.js';

export var KIND_DIRECT = 'CONVERSATION_KIND_DIRECT';
export var KIND_GROUP = 'CONVERSATION_KIND_GROUP';
export var KIND_CHANNEL = 'CONVERSATION_KIND_CHANNEL';
export var KIND_INBOX = 'CONVERSATION_KIND_INBOX';
export var KIND_AUDIENCE = 'CONVERSATION_KIND_AUDIENCE';
export var ROLE_OWNER = 'MEMBER_ROLE_OWNER';
export var ROLE_ADMIN = 'MEMBER_ROLE_ADMIN';
export var ROLE_MEMBER = 'MEMBER_ROLE_MEMBER';
export var MAX_TITLE_BYTES = 256;
var MAX_RESUME = 100;
// UNREAD_CAP is the server's cap on unread counts (history.UnreadCap):
// a count at it means that many or more.
export var UNREAD_CAP = 100;

export var state = {
  user: '',          // the name typed at sign-in
  me: null,          // {userId, deviceId, sessionId} once authenticated
  convs: new Map(),  // id -> conversation
  open: null,        // the open conversation's view state
  openGen: 0,
  outbox: [],        // messages being sent, oldest first
  listLoading: false,
  listAgain: false,
  listTimer: 0,
  listRetries: 0,
  restoreOpen: '',
  // blocked is whom this page's user blocks: listBlocks at every
  // connection, then the answers to this page's own block and unblock.
  blocked: new Map(),
  // blockedHere is when this page last changed each user's block
  // (Date.now()): a list that lags such a change does not undo it.
  blockedHere: new Map(),
  // gone holds, per conversation the user left or was removed from, the
  // seq of that event, so a lagging list does not bring it back.
  gone: new Map(),
  // flagsGen counts flag changes applied from pushes and answers, so a
  // list asked for before one does not undo it.
  flagsGen: 0,
  // delivered is, per conversation not open, the pushed seq to report
  // as this device's delivered position.
  delivered: new Map(),
  // typing is, per conversation, who else is typing: user -> {timer}.
  typing: new Map(),
  // typingOut is this page's own indicator.
  typingOut: { conv: '', lastStart: 0, lastSent: 0, timer: 0, idleTimer: 0 },
  // presence of the watched users; watching is the watch set asked for
  // on this connection ('\n'-joined).
  presence: new Map(),
  watching: '',
  watchTimer: 0,
  watchRetries: 0,
  // idleSent is what this connection was last told; a new one starts
  // not idle.
  idleSent: false,
  lastInput: Date.now()
};

export function myId() { return (state.me && state.me.userId) || state.user; }

// ---------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------
function previewKindOf(raw) {
  if (raw.lastMessageDeleted) return 'deleted';
  if (raw.lastMessageKind === 'MESSAGE_KIND_ATTACHMENT') return 'attachment';
  if (raw.lastMessageKind === 'MESSAGE_KIND_CONTACT') return 'contact';
  return 'text';
}

export function convFromWire(raw) {
  var kind = previewKindOf(raw);
  var text = raw.lastMessagePreview || '';
  // Without text the server puts the kind's name as the preview; the
  // page says it its own way.
  if (kind === 'attachment' && text === 'attachment') text = '';
  if (kind === 'contact' && text === 'contact') text = '';
  return {
    id: raw.conversationId,
    kind: raw.kind || '',
    title: raw.title || '',
    memberIds: arr(raw.memberIds),
    ownerId: raw.ownerId || '',
    adminIds: arr(raw.adminIds),
    mutedIds: arr(raw.mutedIds),
    isPublic: !!raw.public,
    lastSeq: seqOf(raw.lastSeq),
    // stateSeq is the seq the members, roles and title reflect: events
    // up to it are already in them.
    stateSeq: seqOf(raw.lastSeq),
    lastActivity: parseTime(raw.lastActivity),
    lastMessageSeq: seqOf(raw.lastMessageSeq),
    preview: text,
    previewKind: kind,
    serverUnread: seqOf(raw.unreadCount),
    unread: 0,
    // The user's own flags; the list carries no version, pushes do.
    muted: !!raw.muted,
    pinned: !!raw.pinned,
    flagsVersion: 0,
    flagsGen: 0,
    invites: new Map(),
    localOnly: false,
    placeholder: false
  };
}

export function convName(c) {
  if (!c) return '';
  var me = myId();
  var others = c.memberIds.filter(function (m) { return m !== me; });
  if (c.kind === KIND_GROUP) return c.title || 'Untitled group';
  if (c.kind === KIND_CHANNEL) return c.title || 'Untitled channel';
  if (c.kind === KIND_DIRECT) return others[0] || c.title || 'Direct chat';
  if (c.kind === KIND_INBOX) return 'Inbox';
  if (c.kind === KIND_AUDIENCE) return 'Announcements · ' + c.title;
  return c.title || others.join(', ') || 'Conversation';
}

export function kindLabel(c) {
  return c.kind === KIND_GROUP ? 'group' : c.kind === KIND_CHANNEL ? 'channel' : c.kind === KIND_DIRECT ? 'direct' : c.kind === KIND_INBOX ? 'inbox' : c.kind === KIND_AUDIENCE ? 'announcements' : '';
}

export function previewLabel(c) {
  if (c.previewKind === 'deleted') return 'Message deleted';
  if (c.previewKind === 'attachment') return '📎 ' + (c.preview || 'Attachment');
  if (c.previewKind === 'contact') return '👤 ' + (c.preview || 'Contact');
  return c.preview;
}

function addTo(list, id) { if (id && list.indexOf(id) < 0) list.push(id); }
function dropFrom(list, id) { var i = list.indexOf(id); if (i >= 0) list.splice(i, 1); }
function addMemberTo(c, userId) { addTo(c.memberIds, userId); }

export function roleOf(c, user) {
  if (!c || (c.kind !== KIND_GROUP && c.kind !== KIND_CHANNEL)) return '';
  if (user === c.ownerId) return ROLE_OWNER;
  if (c.adminIds.indexOf(user) >= 0) return ROLE_ADMIN;
  return ROLE_MEMBER;
}

export function isModerator(c) { var r = roleOf(c, myId()); return r === ROLE_OWNER || r === ROLE_ADMIN; }

// postBlock says why the user cannot post here, or '' when they can.
export function postBlock(c) {
  if (!c) return '';
  var me = myId();
  if (c.kind === KIND_INBOX) return 'Your inbox: contact requests and invitations arrive here, to answer with their buttons.';
  if (c.kind === KIND_AUDIENCE) return 'Announcements to everyone with ' + c.title + ': only the application posts here.';
  if (c.kind === KIND_CHANNEL && !isModerator(c)) return 'Only the owner and admins post in this channel; you follow it.';
  if (c.mutedIds.indexOf(me) >= 0) return 'You are muted in this conversation: you can read but not post.';
  if (c.kind === KIND_DIRECT) {
    var other = c.memberIds.filter(function (m) { return m !== me; })[0];
    if (other && state.blocked.get(other)) return 'You blocked ' + other + '. Unblock them to send messages.';
  }
  return '';
}

export function otherOf(c) {
  var me = myId();
  return c ? c.memberIds.filter(function (m) { return m !== me; })[0] || '' : '';
}

// foldState applies an event's change to the members, roles and title,
// once and in order: an event at or below stateSeq is in them already
// (older pages of history, or a list newer than the pushes).
function foldState(c, ev) {
  var s = seqOf(ev.seq);
  if (s && s <= c.stateSeq) return;
  if (s) c.stateSeq = s;
  if (ev.conversationCreated) {
    var cc = ev.conversationCreated;
    if (cc.kind) c.kind = cc.kind;
    if (cc.title) c.title = cc.title;
    (cc.memberIds || []).forEach(function (m) { addMemberTo(c, m); });
    if (cc.kind === KIND_GROUP || cc.kind === KIND_CHANNEL) c.ownerId = ev.senderId || c.ownerId;
    c.isPublic = !!cc.public;
    c.placeholder = false;
  } else if (ev.memberAdded) {
    addMemberTo(c, ev.memberAdded.userId);
  } else if (ev.memberJoined) {
    addMemberTo(c, ev.memberJoined.userId || ev.senderId);
  } else if (ev.memberRemoved || ev.memberLeft) {
    var gone = (ev.memberRemoved || ev.memberLeft).userId || ev.senderId;
    dropFrom(c.memberIds, gone);
    dropFrom(c.adminIds, gone);
    dropFrom(c.mutedIds, gone);
  } else if (ev.roleChanged) {
    if (ev.roleChanged.role === ROLE_ADMIN) addTo(c.adminIds, ev.roleChanged.userId);
    else dropFrom(c.adminIds, ev.roleChanged.userId);
  } else if (ev.ownershipTransferred) {
    var prev = c.ownerId || ev.senderId;
    c.ownerId = ev.ownershipTransferred.newOwnerId;
    dropFrom(c.adminIds, c.ownerId);
    addTo(c.adminIds, prev);
    dropFrom(c.mutedIds, c.ownerId);
  } else if (ev.memberMuted) {
    if (ev.memberMuted.muted) addTo(c.mutedIds, ev.memberMuted.userId);
    else dropFrom(c.mutedIds, ev.memberMuted.userId);
  } else if (ev.conversationRenamed) {
    c.title = ev.conversationRenamed.title || c.title;
  }
}

// Invites are not in the list: the page knows those of the events it has
// seen. A revoked code never comes back, so the order does not matter.
function foldInvite(c, ev) {
  if (ev.inviteCreated) {
    var code = ev.inviteCreated.code;
    if (code && !c.invites.has(code)) c.invites.set(code, { active: true, by: ev.senderId || '' });
  } else if (ev.inviteRevoked && ev.inviteRevoked.code) {
    c.invites.set(ev.inviteRevoked.code, { active: false, by: '' });
  }
}

function postedPreview(c, seq, mp) {
  c.lastMessageSeq = seq;
  c.preview = preview(mp.text || '');
  c.previewKind = mp.deleted ? 'deleted' : (mp.attachments && mp.attachments.length) ? 'attachment' : mp.contact ? 'contact' : 'text';
}

// countsAsUnread is the one definition of unread (docs/PROTOCOL.md,
// "Unread"; the server's history.CountsAsUnread): a message posted by
// someone else, or an inbox item asking for an answer (a contact request
// to the user, an invitation). Creation, membership, edits, deletes and
// reactions do not count.
export function countsAsUnread(ev) {
  if (ev.messagePosted) return ev.senderId !== myId();
  if (ev.contactUpdated) return ev.contactUpdated.action === 'CONTACT_ACTION_REQUESTED' && !ev.contactUpdated.outgoing;
  if (ev.invitationUpdated) return ev.invitationUpdated.action === 'INVITATION_ACTION_INVITED';
  return false;
}

// countUnread folds a pushed event after the user's read position into
// c.unread the way the server counts it: one more for a message by
// someone else (up to UNREAD_CAP), none left after an event of the
// user's own, since sending moves one's read position to it.
export function countUnread(c, ev) {
  if (ev.senderId && ev.senderId === myId()) c.unread = 0;
  else if (countsAsUnread(ev)) c.unread = Math.min(UNREAD_CAP, c.unread + 1);
}

// noteEvent folds one event into a conversation summary.
export function noteEvent(c, ev, live) {
  var s = seqOf(ev.seq);
  foldState(c, ev);
  foldInvite(c, ev);
  if (s > c.lastSeq) {
    c.lastSeq = s;
    var t = parseTime(ev.time);
    if (t) c.lastActivity = t;
    if (live) countUnread(c, ev);
    if (ev.messagePosted) {
      postedPreview(c, s, ev.messagePosted);
    } else if (ev.messageEdited) {
      var me = ev.messageEdited;
      if ((me.latest || seqOf(me.targetSeq) === c.lastMessageSeq) && c.previewKind !== 'deleted') c.preview = preview(me.text || '');
    } else if (ev.messageDeleted) {
      var md = ev.messageDeleted;
      if (md.latest || seqOf(md.targetSeq) === c.lastMessageSeq) { c.previewKind = 'deleted'; c.preview = ''; }
    }
    return true;
  }
  return false;
}

export function sortedConvs() {
  var arr = [];
  state.convs.forEach(function (c) { arr.push(c); });
  // The server's order: pinned first, then by activity within each.
  arr.sort(function (a, b) {
    if (a.pinned !== b.pinned) return a.pinned ? -1 : 1;
    if (b.lastActivity !== a.lastActivity) return b.lastActivity - a.lastActivity;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  return arr;
}

// resumeCursors is the last seq shown of each conversation: the open
// one's newest message on screen, the others' from the list and pushes
// (their previews and unread counts). Empty on a first connection.
export function resumeCursors() {
  var out = [];
  var o = state.open;
  if (o && o.loaded && o.lastSeq) out.push({ conversationId: o.id, lastSeq: String(o.lastSeq) });
  sortedConvs().forEach(function (c) {
    if (out.length >= MAX_RESUME || (o && c.id === o.id) || !c.lastSeq || c.localOnly) return;
    out.push({ conversationId: c.id, lastSeq: String(c.lastSeq) });
  });
  return out;
}

// mergeList takes a listConversations answer asked for when
// state.flagsGen was flagsGen, keeping what pushes brought since. It
// says whether conversations known from pushes are not listed yet.
export function mergeList(list, flagsGen) {
  var next = new Map();
  list.forEach(function (raw) {
    if (!raw || !raw.conversationId) return;
    var c = convFromWire(raw);
    var gone = state.gone.get(c.id);
    // The list may lag the event that took us out of it.
    if (gone && c.lastSeq <= gone) return;
    var old = state.convs.get(c.id);
    if (old) {
      c.unread = old.unread;
      c.flagsVersion = old.flagsVersion;
      if (old.flagsGen > flagsGen) {
        // A flag change came after this list was asked for.
        c.muted = old.muted;
        c.pinned = old.pinned;
        c.flagsGen = old.flagsGen;
      }
      old.invites.forEach(function (v, k) { if (!c.invites.has(k)) c.invites.set(k, v); });
      if (old.stateSeq > c.stateSeq) {
        // Pushes got here before the list caught up: theirs are newer.
        ['kind', 'title', 'memberIds', 'ownerId', 'adminIds', 'mutedIds', 'isPublic', 'stateSeq'].forEach(function (k) { c[k] = old[k]; });
      }
      if (old.lastSeq > c.lastSeq) {
        // Pushes got here before the list caught up.
        c.lastSeq = old.lastSeq;
        c.preview = old.preview;
        c.previewKind = old.previewKind;
        c.lastMessageSeq = old.lastMessageSeq;
        c.lastActivity = Math.max(old.lastActivity, c.lastActivity);
      } else if (old.lastSeq && old.lastSeq < c.lastSeq) {
        // The list got here before the pushes (or a resume) of the
        // events in between: lastSeq stays what this page has seen,
        // so they still count as unread when they arrive, and the
        // next resume starts from it.
        c.lastSeq = old.lastSeq;
      }
    } else if (!(state.open && state.open.id === c.id)) {
      // First sight of it: the server's count (messages by others
      // after the user's read position, on any device).
      c.unread = c.serverUnread;
    }
    next.set(c.id, c);
  });
  var missing = false;
  state.convs.forEach(function (old, id) {
    if (next.has(id)) return;
    if (old.localOnly) { next.set(id, old); missing = true; }
    // An audience is the token's, never listed: kept as it is.
    else if (old.audience) next.set(id, old);
    else if (state.open && state.open.id === id) next.set(id, old);
  });
  state.convs = next;
  return missing;
}

// applyFlagList folds the user's muted and pinned flags; unknown says
// some are of conversations not listed yet.
export function applyFlagList(list) {
  var changed = false;
  var unknown = false;
  list.forEach(function (f) {
    if (!f || !f.conversationId || (f.userId && f.userId !== myId())) return;
    var c = state.convs.get(f.conversationId);
    if (!c) { unknown = true; return; }
    var v = seqOf(f.version);
    // Pushes may come late or twice: the highest version holds.
    if (v && v < c.flagsVersion) return;
    c.flagsVersion = Math.max(c.flagsVersion, v);
    c.muted = !!f.muted;
    c.pinned = !!f.pinned;
    c.flagsGen = ++state.flagsGen;
    changed = true;
  });
  return { changed: changed, unknown: unknown };
}

export function ensureLocalConv(id, kind, title, memberIds) {
  var c = state.convs.get(id);
  if (!c) {
    c = convFromWire({ conversationId: id, kind: kind, title: title, memberIds: memberIds });
    c.localOnly = true;
    c.lastActivity = Date.now();
    state.convs.set(id, c);
  } else {
    memberIds.forEach(function (m) { addMemberTo(c, m); });
  }
  return c;
}

// noteAudiences adds the audiences the token puts the user in
// (authenticated.audiences) to the conversations, once each: they are
// never listed, since the user is not their member, and are resumed and
// paged like any other.
export function noteAudiences(list) {
  arr(list).forEach(function (a) {
    if (!a || !a.conversationId || state.convs.has(a.conversationId)) return;
    var c = convFromWire({ conversationId: a.conversationId, kind: KIND_AUDIENCE, title: a.selector || '' });
    c.audience = true;
    state.convs.set(c.id, c);
  });
}

// forget drops a conversation the user left or was removed from, as of
// ev; the server sends nothing more of it.
export function forget(id, ev) {
  var c = state.convs.get(id);
  state.gone.set(id, seqOf(ev && ev.seq) || (c ? c.lastSeq : 0) || 1);
  state.convs.delete(id);
  state.outbox = state.outbox.filter(function (it) { return it.conversationId !== id; });
}

// ---------------------------------------------------------------------
// The open conversation
// ---------------------------------------------------------------------
export function newOpen(id) {
  return {
    id: id,
    gen: ++state.openGen,
    firstSeq: 0,       // oldest seq shown
    lastSeq: 0,        // newest seq shown; everything between is shown
    hasMore: false,    // older events exist
    loading: false,
    loaded: false,
    olderLoading: false,
    syncing: false,
    syncTimer: 0,
    markTimer: 0,
    markedSeq: 0,
    buffer: new Map(), // pushed events waiting for a gap to fill
    msgs: new Map(),   // seq -> message as it is now
    quotes: new Map(), // seq -> message fetched for a reply quote only
    refreshing: new Map(),
    // rc holds the members' positions: each device's delivered one
    // (user + '\n' + device) and each user's read one.
    rc: { delivered: new Map(), read: new Map(), sorted: null },
    compose: newCompose()
  };
}

export function newCompose() { return { editSeq: 0, replyTo: 0, attachments: [] }; }

function copyReactions(rs) {
  return (rs || []).map(function (r) { return { emoji: r.emoji, count: Number(r.count) || 0, me: !!r.me }; });
}

export function messageFrom(ev, snap) {
  var p = ev.messagePosted;
  var s = seqOf(ev.seq);
  // History (and a resume, which reads it) shows a message as it is now.
  var overlaid = !!(p.editedSeq || p.deleted || (p.reactions && p.reactions.length));
  return {
    seq: s,
    senderId: ev.senderId || '',
    senderDeviceId: ev.senderDeviceId || '',
    time: ev.time || '',
    text: p.text || '',
    attachments: p.attachments || [],
    contact: p.contact || null,
    replyToSeq: seqOf(p.replyToSeq),
    mentionIds: arr(p.mentionIds),
    links: p.links || [],
    editedSeq: seqOf(p.editedSeq),
    editedTime: p.editedTime || '',
    deleted: !!p.deleted,
    reactions: copyReactions(p.reactions),
    // asOf: changes at or below it are in this state already.
    asOf: snap ? Math.max(snap.asOf, s) : s,
    // snapshot: read from history, so it may also hold changes above
    // asOf; reactions to it reread the counts.
    snapshot: !!snap || overlaid
  };
}

// changeMessage applies an edit, a delete or a reaction to the message
// it targets. It returns that message when it changed, with refresh set
// when its counts came from history and must be reread, else null.
export function changeMessage(o, ev) {
  var body = ev.messageEdited || ev.messageDeleted || ev.reactionAdded || ev.reactionRemoved;
  var m = o.msgs.get(seqOf(body.targetSeq));
  if (!m) return null;
  var s = seqOf(ev.seq);
  if (ev.messageDeleted) {
    if (m.deleted) return null;
    m.deleted = true;
    m.text = '';
    m.attachments = [];
    m.contact = null;
    m.links = [];
    m.mentionIds = [];
    m.reactions = [];
    return { m: m, refresh: false };
  }
  if (m.deleted) return null;
  if (ev.messageEdited) {
    if (s <= m.editedSeq) return null;
    m.text = ev.messageEdited.text || '';
    m.links = ev.messageEdited.links || [];
    m.mentionIds = arr(ev.messageEdited.mentionIds);
    m.editedSeq = s;
    m.editedTime = ev.time || '';
    return { m: m, refresh: false };
  }
  if (s <= m.asOf) return null;
  var add = !!ev.reactionAdded;
  var emoji = body.emoji;
  var mine = ev.senderId === myId();
  var r = null;
  m.reactions.forEach(function (x) { if (x.emoji === emoji) r = x; });
  // Our own reaction is known exactly: never count it twice.
  var already = mine && (add ? r && r.me : !(r && r.me));
  if (!already) {
    if (add) {
      if (!r) { r = { emoji: emoji, count: 0, me: false }; m.reactions.push(r); }
      r.count++;
      if (mine) r.me = true;
    } else if (r) {
      r.count = Math.max(0, r.count - 1);
      if (mine) r.me = false;
      if (!r.count) m.reactions = m.reactions.filter(function (x) { return x !== r; });
    }
  }
  return { m: m, refresh: m.snapshot };
}

export function latestOwn(o) {
  var me = myId();
  var best = null;
  o.msgs.forEach(function (m) { if (m.senderId === me && !m.deleted && (!best || m.seq > best.seq)) best = m; });
  return best;
}

// ---------------------------------------------------------------------
// Receipts: how far one's own messages got, derived from the members'
// positions (the server keeps positions, not a row per message)
// ---------------------------------------------------------------------
export function foldReceipt(rc, r) {
  var u = r.userId || '';
  if (!u) return false;
  var moved = false;
  var key = u + '\n' + (r.deviceId || '');
  // A device that read up to a seq has it too.
  var d = Math.max(seqOf(r.deliveredSeq), seqOf(r.readSeq));
  if (d > (rc.delivered.get(key) || 0)) { rc.delivered.set(key, d); moved = true; }
  var rd = seqOf(r.readSeq);
  if (rd > (rc.read.get(u) || 0)) { rc.read.set(u, rd); moved = true; }
  if (moved) rc.sorted = null;
  return moved;
}

// positionsOf is the other users' positions, ascending, so a status is
// two binary searches however many members there are.
export function positionsOf(o) {
  var rc = o.rc;
  if (!rc.sorted) {
    var me = myId();
    var reads = [];
    var devs = [];
    rc.read.forEach(function (s, u) { if (u !== me) reads.push(s); });
    rc.delivered.forEach(function (s, k) { if (k.slice(0, k.indexOf('\n')) !== me) devs.push(s); });
    var asc = function (a, b) { return a - b; };
    rc.sorted = { reads: reads.sort(asc), devs: devs.sort(asc) };
  }
  return rc.sorted;
}

export function atLeast(list, seq) {
  var lo = 0;
  var hi = list.length;
  while (lo < hi) {
    var mid = (lo + hi) >> 1;
    if (list[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  return list.length - lo;
}

// seenBy is what the SDK's SeenBy gives: every user whose read position
// is at seq or beyond, but the author, sorted. Those who left since
// still count: they did see it.
export function seenBy(o, seq, author) {
  var out = [];
  o.rc.read.forEach(function (s, u) { if (u !== author && s >= seq) out.push(u); });
  return out.sort();
}

// ---------------------------------------------------------------------
// Others typing
// ---------------------------------------------------------------------
export function dropTyping(id, user) {
  var m = state.typing.get(id);
  var e = m && m.get(user);
  if (!e) return false;
  clearTimeout(e.timer);
  m.delete(user);
  return true;
}

export function clearTypingIn() {
  state.typing.forEach(function (m) { m.forEach(function (e) { clearTimeout(e.timer); }); });
  state.typing = new Map();
}

export function typingUsers(id) {
  var m = state.typing.get(id);
  return m ? Array.from(m.keys()).sort() : [];
}

// Message status and typing bookkeeping, derived on the client from what
// the server keeps: device positions (receipts) and typing indicators.

function seqOf(v) { return Number(v || 0); }

// maxTracked bounds the own messages followed per conversation.
const maxTracked = 256;

/**
 * StatusTracker derives the status of one user's messages from device
 * positions, as the Go SDK's StatusTracker: a message at seq s is
 * delivered to every device of another member whose delivered position is
 * at least s, and read by every other member whose read position is.
 * Counts only grow. Feed it a conversation's positions (load, from
 * getReceipts), the user's sent messages (sent), pushed receipts (apply)
 * and events (event: posting moves the sender's own positions).
 */
export class StatusTracker {
  constructor(userId) {
    this.userId = userId;
    this.convs = new Map();
  }

  conv(id) {
    let c = this.convs.get(id);
    if (!c) {
      c = { delivered: new Map(), read: new Map(), sent: [], status: new Map() };
      this.convs.set(id, c);
    }
    return c;
  }

  fold(c, userId, deviceId, delivered, read) {
    const key = `${userId}\n${deviceId}`;
    if (delivered > (c.delivered.get(key) || 0)) c.delivered.set(key, delivered);
    if (read > (c.read.get(userId) || 0)) c.read.set(userId, read);
  }

  /** load folds a conversation's receipts in; returns statuses that changed. */
  load(conversationId, receipts) {
    const c = this.conv(conversationId);
    for (const r of receipts || []) this.fold(c, r.userId, r.deviceId, seqOf(r.deliveredSeq), seqOf(r.readSeq));
    return this.recount(conversationId, c);
  }

  /** apply folds pushed receipts in; returns statuses that changed. */
  apply(receipts) {
    const byConv = new Map();
    for (const r of receipts || []) {
      const c = this.conv(r.conversationId);
      this.fold(c, r.userId, r.deviceId, seqOf(r.deliveredSeq), seqOf(r.readSeq));
      byConv.set(r.conversationId, c);
    }
    const out = [];
    for (const [id, c] of byConv) out.push(...this.recount(id, c));
    return out;
  }

  /** event moves its sender's positions to its seq, as the server does. */
  event(ev) {
    if (!ev.senderId) return [];
    const c = this.conv(ev.conversationId);
    const s = seqOf(ev.seq);
    this.fold(c, ev.senderId, ev.senderDeviceId || '', s, s);
    return this.recount(ev.conversationId, c);
  }

  /** sent starts following the user's message at seq; returns its status. */
  sent(conversationId, seq) {
    const c = this.conv(conversationId);
    seq = seqOf(seq);
    if (!c.status.has(seq)) {
      c.sent.push(seq);
      c.sent.sort((a, b) => a - b);
      if (c.sent.length > maxTracked) c.status.delete(c.sent.shift());
      c.status.set(seq, { conversationId, seq, delivered: 0, read: 0 });
      this.recount(conversationId, c);
    }
    return { ...c.status.get(seq) };
  }

  /** status of a followed message, or undefined. */
  status(conversationId, seq) {
    const c = this.convs.get(conversationId);
    const s = c && c.status.get(seqOf(seq));
    return s ? { ...s } : undefined;
  }

  recount(conversationId, c) {
    const out = [];
    for (const seq of c.sent) {
      let delivered = 0;
      let read = 0;
      for (const [key, pos] of c.delivered) {
        if (pos >= seq && key.slice(0, key.indexOf('\n')) !== this.userId) delivered++;
      }
      for (const [user, pos] of c.read) if (pos >= seq && user !== this.userId) read++;
      const old = c.status.get(seq);
      if (delivered > old.delivered || read > old.read) {
        const s = { conversationId, seq, delivered: Math.max(delivered, old.delivered), read: Math.max(read, old.read) };
        c.status.set(seq, s);
        out.push({ ...s });
      }
    }
    return out;
  }
}

/**
 * TypingTracker keeps who is typing where from typing pushes: each
 * indicator shows for its expiresInMs unless renewed or stopped.
 */
export class TypingTracker {
  constructor(now = Date.now) {
    this.now = now;
    this.convs = new Map();
  }

  apply(indicators) {
    for (const t of indicators || []) {
      let m = this.convs.get(t.conversationId);
      if (!m) this.convs.set(t.conversationId, (m = new Map()));
      if (t.stopped) m.delete(t.userId);
      else m.set(t.userId, this.now() + Number(t.expiresInMs || 6000));
    }
  }

  /** typing lists who types in a conversation now, sorted. */
  typing(conversationId) {
    const m = this.convs.get(conversationId);
    if (!m) return [];
    const now = this.now();
    const out = [];
    for (const [user, until] of m) {
      if (until > now) out.push(user);
      else m.delete(user);
    }
    return out.sort();
  }
}

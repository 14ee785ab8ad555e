// The Parley client: one WebSocket at a time, redialled after a drop with
// jittered exponential backoff, resuming every conversation from the last
// seq it delivered. Its semantics follow the Go SDK (pkg/sdk, the
// reference client); docs/PROTOCOL.md is the wire contract.
//
// Frames are plain objects in the protobuf JSON mapping on either
// subprotocol (codec.js). Seqs are JSON strings on the wire; the client
// compares them as numbers, which is exact below 2^53.

import { delay as backoffDelay, withDefaults } from './backoff.js';
import { loadCodec } from './codec.js';
import {
  AUTH_REJECTED, CLOSED, CONNECTION_LOST, GAP, NOT_CONNECTED, ParleyError, TIMEOUT,
} from './errors.js';
import { newClientMsgId } from './ids.js';
import { StatusTracker } from './status.js';

// The most conversations the edge resumes on one connection
// (edge.MaxResumeCursors); beyond it the most recently active ones are
// resumed, and a gap in another is filled when its next event shows it.
const MAX_RESUME_CURSORS = 1000;
// How many RATE_LIMITED answers in a row a request waits out.
const MAX_RATE_LIMIT_RETRIES = 5;
// Filling a gap from history: page size and how often to look again
// while persistence has not stored what live delivery got ahead of.
const GAP_PAGE = 200;
const GAP_RETRY_MS = 100;

const seqOf = (v) => Number(v || 0);

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

// authRejected: the server refused the token.
function authRejected(err) {
  return !!err && (err.code === 'ERROR_CODE_UNAUTHENTICATED' || err.code === 'ERROR_CODE_TOKEN_EXPIRED');
}

// retryable says whether a dropped connection or a failed attempt is worth
// another: network failures, server closes (4000 resync, 4002 reconnect
// elsewhere, 1001 going away, …) and temporary server errors are; a
// refused token, a request the server calls invalid, a wrong subprotocol
// and close() are not.
function retryable(err) {
  if (!err) return true;
  if (err.permanent || err.code === CLOSED || err.code === AUTH_REJECTED || authRejected(err)) return false;
  if (err.code === 'ERROR_CODE_INVALID_ARGUMENT') return false;
  return ![1002, 1003, 1008].includes(err.closeCode);
}

// Conn is one WebSocket and the requests waiting for its answers.
class Conn {
  constructor(ws) {
    this.ws = ws;
    this.pending = new Map();
    this.dead = false;
    this.err = null;
    this.installed = false;
    this.ended = deferred();
    this.keepAlive = 0;
  }

  // end marks the connection dead for cause and fails what waits on it.
  end(cause) {
    if (this.dead) return;
    this.dead = true;
    this.err = cause;
    clearInterval(this.keepAlive);
    const ws = this.ws;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ParleyError(CONNECTION_LOST, cause && cause.message ? cause.message : 'connection lost', { cause }));
    }
    this.pending.clear();
    this.ended.resolve(cause);
  }

  // kill closes the socket and ends the connection at once.
  kill(cause, code = 1000) {
    try { this.ws.close(code, 'bye'); } catch { /* closing anyway */ }
    this.end(cause);
  }

  answer(f) {
    const p = this.pending.get(f.requestId);
    if (!p) return false;
    this.pending.delete(f.requestId);
    clearTimeout(p.timer);
    if (f.error) p.reject(ParleyError.fromFrame(f.error, f.requestId));
    else p.resolve(f);
    return true;
  }

  // do writes frame and waits for its answer until deadline.
  do(codec, frame, deadline) {
    return new Promise((resolve, reject) => {
      if (this.dead) {
        reject(new ParleyError(CONNECTION_LOST, 'connection ended before the request was sent', { cause: this.err }));
        return;
      }
      const timer = setTimeout(() => {
        if (this.pending.delete(frame.requestId)) reject(new ParleyError(TIMEOUT, 'no answer in time'));
      }, Math.max(0, deadline - Date.now()));
      this.pending.set(frame.requestId, { resolve, reject, timer });
      try {
        this.ws.send(codec.encode(frame));
      } catch (e) {
        this.pending.delete(frame.requestId);
        clearTimeout(timer);
        reject(e instanceof ParleyError ? e : new ParleyError(CONNECTION_LOST, String((e && e.message) || e), { cause: e }));
      }
    });
  }
}

/**
 * Client is one user's connection to Parley. See index.d.ts for the
 * options and README.md for the semantics.
 */
export class Client {
  constructor(opts) {
    if (!opts || !opts.url) throw new TypeError('Client: opts.url is required');
    if (!opts.token && !opts.getToken) throw new TypeError('Client: opts.token or opts.getToken is required');
    this.opts = {
      requestTimeoutMs: 20000,
      sendTimeoutMs: 60000,
      gapWaitMs: 10000,
      subprotocol: 'json',
      ...opts,
    };
    this.reconnectPolicy = opts.reconnect === false ? null : withDefaults(opts.reconnect);
    this.WebSocket = opts.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError('Client: no WebSocket in this runtime: pass opts.WebSocket (for instance the ws package)');

    /** Who the first connection authenticated as; reconnects are the same. */
    this.userId = '';
    this.deviceId = opts.deviceId || '';
    this.sessionId = '';
    /** tokenExpires is the current token's expiry (ms since the epoch), 0 if unknown. */
    this.tokenExpires = 0;
    this.state = 'idle';

    this.handlers = new Map();
    this.cur = null;
    this.up = deferred();
    this.err = null;
    this.closed = false;
    this.finished = deferred();
    this.installs = 0;
    this.nextId = 0;
    this.codec = null;
    this.started = null;
    this.dialing = null;
    this.wakeSleep = null;
    // seen is the last seq delivered per conversation: the resume cursors
    // and the bar at or below which an event is a duplicate. touched
    // orders it by recency.
    this.seen = new Map();
    this.touch = 0;
    // lost names the conversations the server said lost events
    // (EVENTS_MISSING): the next gap there is not waited for in history.
    this.lost = new Set();
    this.queue = [];
    this.pumping = false;
    this.subs = new Set();
    this.watching = null;
    this.tracker = null;
    for (const c of opts.resume || []) this.note(c.conversationId, seqOf(c.lastSeq));
  }

  // ------------------------------------------------------------------
  // Events to the app
  // ------------------------------------------------------------------

  /**
   * on subscribes fn to name: 'events' (a batch, each conversation's in
   * seq order, none twice), 'receipts', 'typing', 'presence', 'flags'
   * (pushed lists), 'status' (message statuses that changed, with
   * trackStatus), 'error' (error frames that answer no request, gaps
   * history could not fill), 'state' (connection state changes),
   * 'tokenRefreshed'. Returns a function that unsubscribes.
   */
  on(name, fn) {
    let set = this.handlers.get(name);
    if (!set) this.handlers.set(name, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  emit(name, value) {
    const set = this.handlers.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        // An app handler's bug must not stall the client: surface it
        // outside the client's own flow.
        queueMicrotask(() => { throw e; });
      }
    }
  }

  setState(state, detail) {
    this.state = state;
    this.emit('state', { state, ...detail });
  }

  /**
   * events returns an async iterator of delivered events, of one
   * conversation if conversationId is given, in seq order and none twice.
   * It buffers what the app has not read yet and ends when the client
   * closes; break out of the loop (or call return()) to unsubscribe.
   */
  events(conversationId) {
    const buf = [];
    let wake = null;
    let done = this.closed;
    const sub = {
      conversationId,
      push(ev) { buf.push(ev); if (wake) { wake(); wake = null; } },
      end() { done = true; if (wake) { wake(); wake = null; } },
    };
    if (!done) this.subs.add(sub);
    const subs = this.subs;
    return {
      [Symbol.asyncIterator]() { return this; },
      async next() {
        while (!buf.length && !done) await new Promise((r) => { wake = r; });
        if (buf.length) return { value: buf.shift(), done: false };
        return { value: undefined, done: true };
      },
      async return() {
        subs.delete(sub);
        done = true;
        buf.length = 0;
        return { value: undefined, done: true };
      },
    };
  }

  // ------------------------------------------------------------------
  // Lifecycle
  // ------------------------------------------------------------------

  /**
   * connect starts the client and resolves with the first connection's
   * `authenticated` frame body. With reconnect (the default) a failed
   * first attempt is retried like a drop; it rejects once the client
   * ends (a refused token, close(), maxAttempts).
   */
  connect() {
    if (!this.started) {
      this.started = deferred();
      this.started.promise.catch(() => {});
      this.supervise();
    }
    return this.started.promise;
  }

  /** close ends the client: the socket closes and nothing is redialled. */
  close() {
    if (!this.closed) {
      this.closed = true;
      for (const cn of [this.cur, this.dialing]) if (cn) cn.kill(new ParleyError(CLOSED, 'client closed'));
      if (this.wakeSleep) this.wakeSleep();
      if (!this.started) this.finish(new ParleyError(CLOSED, 'client closed'));
    }
    return this.finished.promise;
  }

  /** reconnectNow cuts a backoff wait short: the next attempt starts now. */
  reconnectNow() {
    if (this.wakeSleep) this.wakeSleep();
  }

  /** connected: a connection is authenticated and requests go out at once. */
  get connected() { return !!this.cur && !this.cur.dead; }

  /** error is why the client ended, or null while it is up or reconnecting. */
  get error() { return this.err; }

  sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        if (self.wakeSleep === done) self.wakeSleep = null;
        resolve();
      }
      this.wakeSleep = done;
    });
  }

  // supervise owns the connections: it dials, waits for each to end and,
  // when the client reconnects, dials the next after a backoff.
  async supervise() {
    try {
      this.codec = await loadCodec(this.opts.subprotocol);
    } catch (e) {
      this.finish(e);
      return;
    }
    let cause = null;
    let attempt = 0;
    let rejected = false;
    let reason = 'connect';
    for (;;) {
      if (this.closed) return this.finish(new ParleyError(CLOSED, 'client closed'));
      if (cause) {
        if (!this.reconnectPolicy || !retryable(cause)) return this.finish(cause);
        const p = this.reconnectPolicy;
        if (p.maxAttempts > 0 && attempt >= p.maxAttempts) {
          return this.finish(new ParleyError(CLOSED, `reconnect: gave up after ${attempt} attempts`, { cause }));
        }
        let wait = backoffDelay(p, attempt);
        if (cause.code === 'ERROR_CODE_RATE_LIMITED') wait = Math.max(wait, cause.retryAfterMs || 0);
        this.setState('reconnecting', { error: cause, attempt, delayMs: wait });
        await this.sleep(wait);
        if (this.closed) return this.finish(new ParleyError(CLOSED, 'client closed'));
      }
      let cn;
      try {
        cn = await this.attempt(reason);
      } catch (err) {
        if (this.closed) return this.finish(new ParleyError(CLOSED, 'client closed'));
        if (authRejected(err)) {
          // A token provider may have handed out a token that expired a
          // moment ago; a second refusal in a row is final.
          if (!this.opts.getToken || rejected) {
            return this.finish(new ParleyError(AUTH_REJECTED, err.serverMessage || err.message, { cause: err }));
          }
          rejected = true;
          reason = 'rejected';
        } else {
          rejected = false;
          reason = 'reconnect';
        }
        if (!this.reconnectPolicy) return this.finish(err);
        cause = err;
        attempt++;
        continue;
      }
      rejected = false;
      attempt = 0;
      const end = await cn.ended.promise;
      if (this.cur === cn) this.cur = null;
      if (this.closed) return this.finish(new ParleyError(CLOSED, 'client closed'));
      cause = end;
      // 4001: the token expired on the connection; the next one needs a
      // fresh one.
      reason = end && end.closeCode === 4001 ? 'rejected' : 'reconnect';
    }
  }

  // attempt is one dial: token, socket, authenticate with the resume
  // cursors, and the connection installed. It rejects with why it failed.
  async attempt(reason) {
    this.setState('connecting', { reason });
    const timeoutMs = this.reconnectPolicy ? this.reconnectPolicy.attemptTimeoutMs : this.opts.requestTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    let cn = null;
    let timer = 0;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => {
        const err = new ParleyError(TIMEOUT, `connect: no answer within ${timeoutMs} ms`);
        if (cn) cn.kill(err);
        reject(err);
      }, timeoutMs);
    });
    timeout.catch(() => {});
    try {
      const token = await Promise.race([this.token(reason), timeout]);
      if (this.closed) throw new ParleyError(CLOSED, 'client closed');
      const url = typeof this.opts.url === 'function' ? this.opts.url() : this.opts.url;
      const ws = new this.WebSocket(url, [this.codec.subprotocol]);
      if (this.codec.binary) ws.binaryType = 'arraybuffer';
      cn = new Conn(ws);
      this.dialing = cn;
      const opened = deferred();
      ws.onopen = () => opened.resolve();
      ws.onerror = () => {};
      ws.onclose = (e) => {
        cn.end(new ParleyError(CONNECTION_LOST, `connection closed (${e.code}${e.reason ? `: ${e.reason}` : ''})`, { closeCode: e.code }));
      };
      ws.onmessage = (e) => this.onMessage(cn, e.data);
      const dead = cn.ended.promise.then((e) => { throw e; });
      dead.catch(() => {});
      await Promise.race([opened.promise, dead, timeout]);
      if (ws.protocol && ws.protocol !== this.codec.subprotocol) {
        const err = new ParleyError(CONNECTION_LOST, `server chose subprotocol ${ws.protocol}`);
        err.permanent = true;
        throw err;
      }
      const resume = this.cursors();
      const auth = { token, deviceId: this.deviceId };
      if (resume.length) auth.resume = resume;
      cn.resuming = resume.length > 0;
      const f = await Promise.race([cn.do(this.codec, { requestId: this.requestId(), authenticate: auth }, deadline), dead, timeout]);
      if (this.closed) throw new ParleyError(CLOSED, 'client closed');
      if (this.userId && f.authenticated.userId !== this.userId) {
        const err = new ParleyError(AUTH_REJECTED, `reconnected as user ${f.authenticated.userId}, not ${this.userId}: the token is someone else's`);
        err.permanent = true;
        throw err;
      }
      if (!this.started.settled) {
        this.started.settled = true;
        this.started.resolve(f.authenticated);
      }
      return cn;
    } catch (err) {
      if (cn) cn.kill(err);
      throw err;
    } finally {
      clearTimeout(timer);
      this.dialing = null;
    }
  }

  // token asks the provider, or uses the fixed token.
  async token(reason) {
    if (!this.opts.getToken) return this.opts.token;
    try {
      const t = await this.opts.getToken({ reason });
      if (!t) throw new Error('empty token');
      return t;
    } catch (e) {
      throw e instanceof ParleyError ? e : new ParleyError(CONNECTION_LOST, `token: ${(e && e.message) || e}`, { cause: e });
    }
  }

  // install makes cn the current connection; it runs while the
  // authenticated frame is read, before any frame after it.
  install(cn, a) {
    cn.installed = true;
    this.cur = cn;
    this.installs++;
    if (!this.userId) this.userId = a.userId || '';
    this.deviceId = a.deviceId || this.deviceId;
    this.sessionId = a.sessionId || '';
    this.tokenExpires = a.tokenExpires ? Date.parse(a.tokenExpires) : 0;
    if (this.opts.trackStatus && !this.tracker) this.tracker = new StatusTracker(this.userId);
    const up = this.up;
    this.up = deferred();
    up.resolve();
    const ka = this.reconnectPolicy ? this.reconnectPolicy.keepAliveMs : -1;
    if (ka > 0) cn.keepAlive = setInterval(() => this.ping(cn, ka), ka);
    this.setState('connected', { authenticated: a, sessionId: this.sessionId, resuming: !!cn.resuming });
    if (this.installs > 1 && this.watching) this.rewatch();
  }

  // ping is the keepalive: a ping frame whose pong must come within ms.
  // Browsers cannot send WebSocket pings, so it is a frame.
  ping(cn, ms) {
    if (cn.dead) return;
    cn.do(this.codec, { requestId: this.requestId(), ping: {} }, Date.now() + ms).catch((err) => {
      if (err.code === TIMEOUT) cn.kill(new ParleyError(CONNECTION_LOST, `keepalive: no pong within ${ms} ms`));
    });
  }

  finish(err) {
    if (this.err) return;
    this.err = err || new ParleyError(CONNECTION_LOST, 'connection lost');
    this.closed = true;
    if (this.cur) this.cur.kill(this.err);
    this.cur = null;
    this.up.resolve();
    if (this.started && !this.started.settled) {
      this.started.settled = true;
      this.started.reject(this.err);
    }
    this.setState('closed', { error: this.err });
    for (const s of this.subs) s.end();
    this.subs.clear();
    this.finished.resolve();
  }

  // cursors is the resume list: the last seq delivered per conversation,
  // raised to what the app says it holds (opts.cursors), the most
  // recently active first, at most MAX_RESUME_CURSORS.
  cursors() {
    if (this.opts.cursors) {
      for (const c of this.opts.cursors() || []) {
        const seq = seqOf(c.lastSeq);
        const last = this.last(c.conversationId);
        if (c.conversationId && (last === undefined || seq > last)) this.note(c.conversationId, seq);
      }
    }
    return [...this.seen]
      .sort((a, b) => b[1].touched - a[1].touched)
      .slice(0, MAX_RESUME_CURSORS)
      .map(([conversationId, c]) => ({ conversationId, lastSeq: String(c.seq) }));
  }

  requestId() { return String(++this.nextId); }

  // ------------------------------------------------------------------
  // Frames from the server
  // ------------------------------------------------------------------

  onMessage(cn, data) {
    if (cn.dead) return;
    let f;
    try {
      f = this.codec.decode(data);
    } catch (e) {
      this.emit('error', new ParleyError('MALFORMED_SERVER_FRAME', String((e && e.message) || e)));
      return;
    }
    if (!f || typeof f !== 'object') return;
    if (f.resumed) {
      // It carries the authenticate frame's request id, long answered.
      this.onResumed(f.resumed);
      return;
    }
    if (f.authenticated && !cn.installed && !this.closed && (!this.userId || f.authenticated.userId === this.userId)) {
      this.install(cn, f.authenticated);
    }
    if (f.requestId) {
      if (!cn.answer(f) && f.error) this.emit('error', ParleyError.fromFrame(f.error, f.requestId));
      return;
    }
    if (f.events) {
      this.enqueue((f.events.events || []).map((ev) => ({ ev })));
    } else if (f.error) {
      const e = f.error;
      if (e.code === 'ERROR_CODE_EVENTS_MISSING' && e.conversationId) this.lost.add(e.conversationId);
      this.emit('error', ParleyError.fromFrame(e));
    } else if (f.receipts) {
      const rs = f.receipts.receipts || [];
      this.emit('receipts', rs);
      if (this.tracker) this.statuses(this.tracker.apply(rs));
    } else if (f.typing) {
      this.emit('typing', f.typing.typing || []);
    } else if (f.presence) {
      this.emit('presence', f.presence.presence || []);
    } else if (f.flags) {
      this.emit('flags', f.flags.flags || []);
    } else if (f.tokenExpiring) {
      this.onTokenExpiring(cn);
    }
  }

  onResumed(r) {
    // A conversation whose resume failed is caught up from history, in
    // line with the events received before.
    this.enqueue((r.failed || []).map((c) => ({ sync: c.conversationId })));
    this.setState('resumed', { resumed: r });
  }

  async onTokenExpiring(cn) {
    if (!this.opts.getToken) return;
    try {
      const token = await this.token('expiring');
      if (cn.dead) return;
      const f = await cn.do(this.codec, { requestId: this.requestId(), refreshToken: { token } }, Date.now() + this.opts.requestTimeoutMs);
      this.tokenExpires = Date.parse(f.tokenRefreshed.expires);
      this.emit('tokenRefreshed', { expires: f.tokenRefreshed.expires });
    } catch (e) {
      this.emit('error', e);
    }
  }

  statuses(list) {
    if (list && list.length) this.emit('status', list);
  }

  // ------------------------------------------------------------------
  // Delivery: dedupe, order, gaps
  // ------------------------------------------------------------------

  last(conv) {
    const c = this.seen.get(conv);
    return c ? c.seq : undefined;
  }

  // note records that the app holds conv up to seq.
  note(conv, seq) {
    this.touch++;
    const c = this.seen.get(conv);
    if (c) {
      c.seq = Math.max(c.seq, seq);
      c.touched = this.touch;
    } else {
      this.seen.set(conv, { seq, touched: this.touch });
    }
  }

  enqueue(items) {
    if (!items.length || this.closed) return;
    this.queue.push(...items);
    this.pump();
  }

  // pump hands queued events to the app in seq order per conversation: it
  // drops what was delivered before (a resume overlapping what the app
  // had, a re-push), fills a gap from history before the event that shows
  // it, and catches up the conversations a resume failed. One pump runs
  // at a time; events that need no history go out in one batch.
  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    let out = [];
    try {
      while (this.queue.length && !this.closed) {
        const it = this.queue.shift();
        if (it.sync) {
          this.flush(out);
          out = [];
          await this.catchUp(it.sync);
          continue;
        }
        const ev = it.ev;
        const conv = ev.conversationId;
        const seq = seqOf(ev.seq);
        const last = this.last(conv);
        if (last !== undefined && seq > last + 1 && !this.lost.delete(conv)) {
          this.flush(out);
          out = [];
          for (const e of await this.fill(ev, last)) this.hand(e, out);
          this.flush(out);
          out = [];
          continue;
        }
        this.hand(ev, out);
      }
      this.flush(out);
    } finally {
      this.pumping = false;
    }
    if (this.queue.length && !this.closed) this.pump();
  }

  // hand takes ev into the batch unless it is a duplicate.
  hand(ev, out) {
    const conv = ev.conversationId;
    const seq = seqOf(ev.seq);
    const last = this.last(conv);
    if (last !== undefined && seq <= last) return;
    this.note(conv, seq);
    out.push(ev);
  }

  flush(out) {
    if (!out.length) return;
    if (this.tracker) for (const ev of out) this.statuses(this.tracker.event(ev));
    this.emit('events', out);
    for (const s of this.subs) {
      for (const ev of out) if (!s.conversationId || s.conversationId === ev.conversationId) s.push(ev);
    }
  }

  // fill returns ev preceded by the events between last and it, read from
  // history. With no connection and a reconnect coming it returns
  // nothing: the resume brings ev again. When history cannot supply the
  // gap, ev comes after what it could and the gap is reported.
  async fill(ev, last) {
    const conv = ev.conversationId;
    const seq = seqOf(ev.seq);
    const { got, err } = await this.readHistory(conv, last, seq - 1);
    if (!err) return [...got, ev];
    if ((err.code === NOT_CONNECTED || err.code === CONNECTION_LOST) && this.reconnectPolicy && !this.err) return [];
    const from = last + got.length + 1;
    this.emit('error', new ParleyError(GAP, `conversation ${conv}: events ${from}-${seq - 1} missing and not in history (${err.message}); page it with history() later`, { conversationId: conv, cause: err }));
    return [...got, ev];
  }

  // readHistory reads conv's events after `from` up to `to`, waiting up to
  // gapWaitMs for persistence to get there.
  async readHistory(conv, from, to) {
    const deadline = Date.now() + this.opts.gapWaitMs;
    const got = [];
    let after = from;
    while (after < to) {
      let p;
      try {
        p = await this.request(
          { getHistory: { conversationId: conv, afterSeq: String(after), limit: Math.min(to - after, GAP_PAGE) } },
          { wait: false, timeoutMs: Math.max(1, deadline - Date.now()) },
        );
      } catch (err) {
        return { got, err };
      }
      const evs = (p.history && p.history.events) || [];
      for (const e of evs) {
        const s = seqOf(e.seq);
        if (s !== after + 1 || s > to) break;
        got.push(e);
        after = s;
      }
      if (after < to && !(p.history && p.history.hasMore)) {
        if (Date.now() + GAP_RETRY_MS > deadline) {
          return { got, err: new ParleyError(TIMEOUT, `history stops at seq ${after}`) };
        }
        await this.sleepPlain(GAP_RETRY_MS);
        if (this.closed) return { got, err: new ParleyError(CLOSED, 'client closed') };
      }
    }
    return { got, err: null };
  }

  sleepPlain(ms) { return new Promise((r) => setTimeout(r, ms)); }

  // catchUp delivers conv's events after the last one delivered, as far as
  // history goes: a resume failed for conv. A failure is not reported
  // again: the server's error frame for the resume was.
  async catchUp(conv) {
    let after = this.last(conv);
    if (after === undefined) return;
    const deadline = Date.now() + this.opts.gapWaitMs;
    for (;;) {
      let p;
      try {
        p = await this.request(
          { getHistory: { conversationId: conv, afterSeq: String(after), limit: GAP_PAGE } },
          { wait: false, timeoutMs: Math.max(1, deadline - Date.now()) },
        );
      } catch {
        return;
      }
      const evs = (p.history && p.history.events) || [];
      const out = [];
      for (const e of evs) {
        if (seqOf(e.seq) !== after + 1) break;
        this.hand(e, out);
        after = seqOf(e.seq);
      }
      this.flush(out);
      if (out.length < evs.length || !(p.history && p.history.hasMore) || !evs.length) return;
    }
  }

  // ------------------------------------------------------------------
  // Requests
  // ------------------------------------------------------------------

  // conn returns the current connection, waiting for one (until deadline)
  // while the client reconnects if wait is set.
  async conn(wait, deadline) {
    for (;;) {
      if (this.err) throw new ParleyError(CLOSED, this.err.message, { cause: this.err });
      if (this.cur && !this.cur.dead) return this.cur;
      if (!wait) throw new ParleyError(NOT_CONNECTED, 'not connected');
      if (!this.started) this.connect();
      let timer = 0;
      const timedOut = await Promise.race([
        this.up.promise.then(() => false),
        new Promise((r) => { timer = setTimeout(() => r(true), Math.max(0, deadline - Date.now())); }),
      ]);
      clearTimeout(timer);
      if (timedOut) throw new ParleyError(TIMEOUT, 'no connection in time');
    }
  }

  /**
   * request sends a frame body (one ClientFrame member, e.g. {ping: {}})
   * and resolves with the ServerFrame answering it; an error answer
   * rejects with a ParleyError carrying its code. Options: timeoutMs
   * (default requestTimeoutMs), wait (default true: while reconnecting,
   * wait for the next connection; false: fail with NOT_CONNECTED),
   * rateLimitRetries (default 5: RATE_LIMITED answers waited out and
   * sent again, which never acts twice since the server did not act).
   */
  async request(body, options = {}) {
    const deadline = Date.now() + (options.timeoutMs ?? this.opts.requestTimeoutMs);
    const wait = options.wait ?? true;
    const maxLimited = options.rateLimitRetries ?? MAX_RATE_LIMIT_RETRIES;
    let limited = 0;
    for (;;) {
      const cn = await this.conn(wait, deadline);
      const frame = { requestId: this.requestId(), ...body };
      try {
        return await cn.do(this.codec, frame, deadline);
      } catch (err) {
        if (err.code === 'ERROR_CODE_RATE_LIMITED' && limited < maxLimited) {
          const ms = Math.max(1, err.retryAfterMs || 0);
          if (Date.now() + ms < deadline) {
            limited++;
            await this.sleepPlain(ms);
            continue;
          }
        }
        throw err;
      }
    }
  }

  /**
   * command sends a command (a frame member that takes a clientMsgId:
   * sendMessage, createConversation, editMessage, …) and resolves with its
   * `accepted` body. A lost connection, a timeout or UNAVAILABLE is
   * retried under the same clientMsgId until sendTimeoutMs: the server
   * answers a repeat with the original seq (duplicate: true), so the
   * command lands once.
   */
  async command(name, body, options = {}) {
    const clientMsgId = options.clientMsgId || body.clientMsgId || newClientMsgId();
    const frame = { [name]: { ...body, clientMsgId } };
    const deadline = Date.now() + (options.timeoutMs ?? this.opts.sendTimeoutMs);
    let backoff = 250;
    for (;;) {
      const left = deadline - Date.now();
      try {
        const f = await this.request(frame, { timeoutMs: Math.min(left, this.opts.requestTimeoutMs) });
        const a = f.accepted || {};
        if (this.tracker && name === 'sendMessage' && a.seq) this.statuses([this.tracker.sent(a.conversationId, a.seq)]);
        return a;
      } catch (err) {
        const again = err.code === CONNECTION_LOST || err.code === TIMEOUT || err.code === 'ERROR_CODE_UNAVAILABLE';
        if (!again || this.err || deadline - Date.now() <= 0) throw err;
        if (err.code === 'ERROR_CODE_UNAVAILABLE') {
          await this.sleepPlain(Math.min(backoff, Math.max(0, deadline - Date.now())));
          backoff = Math.min(backoff * 2, 5000);
        }
      }
    }
  }

  /** send posts text (or a full SendMessage body) to a conversation. */
  send(conversationId, message, options = {}) {
    const body = typeof message === 'string' ? { text: message } : { ...message };
    return this.command('sendMessage', { ...body, conversationId }, options);
  }

  edit(conversationId, targetSeq, text, options = {}) {
    return this.command('editMessage', { conversationId, targetSeq: String(targetSeq), text }, options);
  }

  deleteMessage(conversationId, targetSeq, options = {}) {
    return this.command('deleteMessage', { conversationId, targetSeq: String(targetSeq) }, options);
  }

  react(conversationId, targetSeq, emoji, options = {}) {
    return this.command('react', { conversationId, targetSeq: String(targetSeq), emoji, remove: !!options.remove }, options);
  }

  /** openDirect opens (or finds) the direct conversation with userId. */
  openDirect(userId, options = {}) {
    return this.command('createConversation', { kind: 'CONVERSATION_KIND_DIRECT', memberIds: [userId] }, options);
  }

  /** createGroup creates a group (or, with options.channel, a channel). */
  createGroup(title, memberIds = [], options = {}) {
    const body = {
      kind: options.channel ? 'CONVERSATION_KIND_CHANNEL' : 'CONVERSATION_KIND_GROUP',
      title,
      memberIds,
    };
    if (options.conversationId) body.conversationId = options.conversationId;
    if (options.public) body.public = true;
    // consent: addMember invites, and the invitee joins by accepting
    // (respondInvitation); the creator starts alone.
    if (options.consent) body.consent = true;
    return this.command('createConversation', body, options);
  }

  addMember(conversationId, userId, options = {}) {
    return this.command('addMember', { conversationId, userId }, options);
  }

  /** listConversations: {conversations, syncToken}. */
  async listConversations(options = {}) {
    const q = {};
    if (options.limit) q.limit = options.limit;
    if (options.changedSince) q.changedSince = options.changedSince;
    const f = await this.request({ listConversations: q });
    const c = f.conversations || {};
    return { conversations: c.conversations || [], syncToken: c.syncToken || '' };
  }

  /**
   * history reads one page: with afterSeq (0 included) forward from
   * afterSeq+1; otherwise the newest events before beforeSeq (0: the
   * newest of all). Events ascend by seq; hasMore says more exist in the
   * paging direction.
   */
  async history(conversationId, options = {}) {
    const q = { conversationId };
    if (options.afterSeq !== undefined && options.afterSeq !== null) q.afterSeq = String(options.afterSeq);
    else if (options.beforeSeq) q.beforeSeq = String(options.beforeSeq);
    if (options.limit) q.limit = options.limit;
    const f = await this.request({ getHistory: q });
    const h = f.history || {};
    return { conversationId, events: h.events || [], hasMore: !!h.hasMore };
  }

  /**
   * historyPages pages a conversation: backward from beforeSeq (default:
   * the newest) or, with direction 'forward', from afterSeq (default 0).
   */
  async *historyPages(conversationId, options = {}) {
    const forward = options.direction === 'forward';
    let cursor = seqOf(forward ? options.afterSeq : options.beforeSeq);
    for (;;) {
      const page = await this.history(conversationId, forward
        ? { afterSeq: cursor, limit: options.limit }
        : { beforeSeq: cursor, limit: options.limit });
      if (!page.events.length) return;
      yield page;
      if (!page.hasMore) return;
      cursor = seqOf(page.events[forward ? page.events.length - 1 : 0].seq);
      if (!forward && cursor <= 1) return;
    }
  }

  /** mark moves this device's delivered and read positions; returns its receipt. */
  async mark(conversationId, { deliveredSeq = 0, readSeq = 0 } = {}) {
    const f = await this.request({ mark: { conversationId, deliveredSeq: String(deliveredSeq), readSeq: String(readSeq) } });
    return ((f.receipts && f.receipts.receipts) || [])[0];
  }

  /** getReceipts: every device position in the conversation. */
  async getReceipts(conversationId) {
    const f = await this.request({ getReceipts: { conversationId } });
    const rs = (f.receipts && f.receipts.receipts) || [];
    if (this.tracker) this.statuses(this.tracker.load(conversationId, rs));
    return rs;
  }

  /** status of one of the user's sent messages (trackStatus), or undefined. */
  status(conversationId, seq) {
    return this.tracker ? this.tracker.status(conversationId, seq) : undefined;
  }

  /**
   * seenBy lists the users who have read the message at seq, its author
   * left out, as the Go SDK's SeenBy.
   */
  async seenBy(conversationId, seq) {
    seq = seqOf(seq);
    const rs = await this.getReceipts(conversationId);
    const page = await this.history(conversationId, { afterSeq: seq - 1, limit: 1 });
    const ev = page.events[0];
    if (!ev || seqOf(ev.seq) !== seq) throw new ParleyError('ERROR_CODE_MESSAGE_NOT_FOUND', `no event at seq ${seq}`);
    const users = new Set();
    for (const r of rs) if (seqOf(r.readSeq) >= seq && r.userId !== ev.senderId) users.add(r.userId);
    return [...users].sort();
  }

  /** typing says this user types in the conversation (or stopped). */
  async typing(conversationId, stopped = false) {
    const body = { conversationId };
    if (stopped) body.stopped = true;
    await this.request({ typing: body });
  }

  async getPresence(userIds) {
    const f = await this.request({ getPresence: { userIds } });
    return (f.presence && f.presence.presence) || [];
  }

  /**
   * watchPresence replaces the watched users; the watch is renewed on
   * every reconnect. Changes come as 'presence' events.
   */
  async watchPresence(userIds) {
    this.watching = [...userIds];
    const f = await this.request({ watchPresence: { userIds } });
    return (f.presence && f.presence.presence) || [];
  }

  rewatch() {
    const users = this.watching;
    this.request({ watchPresence: { userIds: users } }, { wait: false }).then((f) => {
      this.emit('presence', (f.presence && f.presence.presence) || []);
    }, (err) => {
      if (err.code !== CONNECTION_LOST && err.code !== NOT_CONNECTED) this.emit('error', err);
    });
  }

  async setIdle(idle) {
    await this.request({ setIdle: { idle: !!idle } });
  }

  /** setFlags sets the user's own muted/pinned flags; returns them. */
  async setFlags(conversationId, flags) {
    const body = { conversationId };
    if (flags.muted !== undefined) body.muted = !!flags.muted;
    if (flags.pinned !== undefined) body.pinned = !!flags.pinned;
    const f = await this.request({ setFlags: body });
    return ((f.flags && f.flags.flags) || [])[0];
  }

  /**
   * requestContact asks userId to become a contact (accepting theirs if
   * they asked first); the answer is the caller's view of the pair,
   * a ContactState name ('' for none). What each side is told arrives as
   * contactUpdated events of their inbox (authenticated.inboxId).
   */
  async requestContact(userId) {
    return contactState(await this.request({ requestContact: { userId } }));
  }

  /** respondContact accepts or declines userId's waiting request. */
  async respondContact(userId, accept) {
    return contactState(await this.request({ respondContact: { userId, accept: !!accept } }));
  }

  /** cancelContact withdraws the caller's request, or ends a contact. */
  async cancelContact(userId) {
    return contactState(await this.request({ cancelContact: { userId } }));
  }

  /** listContacts: the caller's contacts and waiting requests, by user id. */
  async listContacts() {
    const f = await this.request({ listContacts: {} });
    return (f.contacts && f.contacts.contacts) || [];
  }

  /**
   * respondInvitation accepts (joining) or declines the caller's
   * invitation into a conversation with consent: {conversationId, joined, seq}.
   */
  async respondInvitation(conversationId, accept) {
    const f = await this.request({ respondInvitation: { conversationId, accept: !!accept } });
    const s = f.invitationStatus || {};
    return { conversationId: s.conversationId || conversationId, joined: !!s.joined, seq: s.seq || '0' };
  }

  /**
   * setContactsOnly sets whether only the caller's contacts may open a
   * direct conversation with them: {contactsOnly}.
   */
  async setContactsOnly(on) {
    const f = await this.request({ setSettings: { contactsOnly: !!on } });
    return { contactsOnly: !!(f.settings && f.settings.contactsOnly) };
  }

  /** getSettings reads the caller's settings: {contactsOnly}. */
  async getSettings() {
    const f = await this.request({ getSettings: {} });
    return { contactsOnly: !!(f.settings && f.settings.contactsOnly) };
  }

  /** refreshToken hands the connection a fresh token of the same user. */
  async refreshToken(token) {
    const f = await this.request({ refreshToken: { token } });
    this.tokenExpires = Date.parse(f.tokenRefreshed.expires);
    return f.tokenRefreshed;
  }

  async ping() {
    await this.request({ ping: {} });
  }
}

// contactState is a contactStatus answer's state ('' for none: protojson
// leaves the zero value out).
function contactState(f) {
  if (!f.contactStatus) throw new ParleyError('ERROR_CODE_INTERNAL', `unexpected answer ${JSON.stringify(f)}`);
  return f.contactStatus.state || '';
}

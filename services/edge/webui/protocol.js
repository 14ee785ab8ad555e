// The WebSocket protocol client: connect, authenticate, resume, requests
// and their answers, pushes, keep-alive and reconnecting. It knows no DOM
// and no page state: the page hears from it through on(), and asks it
// things through start, stop, retry and request.

var SUBPROTOCOL = 'parley.v1.json';
var PING_EVERY_MS = 25000;
var PONG_TIMEOUT_MS = 10000;
var REQUEST_TIMEOUT_MS = 20000;
var BACKOFF_MAX_MS = 15000;
var CLOSE_RESYNC = 4000;
var CLOSE_UNAUTHENTICATED = 4001;

var ERROR_TEXT = {
  ERROR_CODE_NOT_MEMBER: 'You share no conversation with this user.',
  ERROR_CODE_INVALID_ARGUMENT: 'That request was not valid.',
  ERROR_CODE_NOT_FOUND: 'Not found: no such conversation (or you are not in it), member or invite code.',
  ERROR_CODE_ALREADY_EXISTS: 'That already exists.',
  ERROR_CODE_UNAVAILABLE: 'The service is temporarily unavailable. Please try again.',
  ERROR_CODE_TOKEN_EXPIRED: 'Your sign-in expired. Getting a new token…',
  ERROR_CODE_UNAUTHENTICATED: 'You are not signed in (the token was rejected).',
  ERROR_CODE_RATE_LIMITED: 'You are sending too fast. Slow down a little and retry.',
  ERROR_CODE_RESYNC: 'The connection fell behind. Reconnecting and catching up…',
  ERROR_CODE_MALFORMED_FRAME: 'The server could not read a request from this page.',
  ERROR_CODE_UNKNOWN_FRAME: 'The server did not understand a request from this page.',
  ERROR_CODE_FRAME_TOO_LARGE: 'That is too large to send.',
  ERROR_CODE_INTERNAL: 'Something went wrong on the server.',
  ERROR_CODE_PERMISSION_DENIED: 'Your role in this conversation does not allow that.',
  ERROR_CODE_MUTED: 'You are muted in this conversation.',
  ERROR_CODE_BLOCKED: 'A block stands between you and this user, or someone you named.',
  ERROR_CODE_CONVERSATION_FULL: 'The conversation is full.',
  ERROR_CODE_MESSAGE_NOT_FOUND: 'That message does not exist.',
  ERROR_CODE_MESSAGE_DELETED: 'That message was deleted.',
  ERROR_CODE_NOT_AUTHOR: 'Only the author (or, for deleting, an admin) may do that.',
  ERROR_CODE_INVALID_URL: 'The attachment URL must be an absolute http or https URL.',
  ERROR_CODE_MENTION_NOT_MEMBER: 'Someone mentioned is not a member of this conversation.',
  DISCONNECTED: 'Not connected to the server.',
  TIMEOUT: 'The server did not answer in time.'
};

export class ParleyError extends Error {
  constructor(code, message, clientMsgId) {
    code = code || 'ERROR_CODE_UNSPECIFIED';
    super(describeCode(code, message || ''));
    this.name = 'ParleyError';
    this.code = code;
    this.serverMessage = message || '';
    this.clientMsgId = clientMsgId || '';
  }
}

export function shortCode(code) { return String(code || '').replace(/^ERROR_CODE_/, ''); }

// describeCode keeps the stable code in the text: it is what a user
// quotes in a bug report, and what differs between refusals that read
// alike.
function describeCode(code, msg) {
  var base = ERROR_TEXT[code];
  var tag = /^ERROR_CODE_/.test(code || '') ? ' [' + shortCode(code) + ']' : '';
  if (base && msg) return base + ' (' + msg + ')' + tag;
  if (base) return base + tag;
  if (msg) return msg + tag;
  return code || 'Unknown error';
}

export function describe(err) {
  if (!err) return 'Unknown error';
  if (err instanceof ParleyError) return err.message;
  return err.message || String(err);
}

// fetchToken gets a token from the edge's dev endpoint (DevTokens), the
// only sign-in this page knows.
export function fetchToken(name) {
  return fetch('/v1/dev/token?user=' + encodeURIComponent(name), {
    cache: 'no-store',
    credentials: 'same-origin',
    headers: { Accept: 'application/json' }
  }).catch(function (e) {
    var err = new Error('Could not reach the server: ' + (e && e.message ? e.message : e));
    err.network = true;
    throw err;
  }).then(function (res) {
    return res.text().then(function (body) {
      if (!res.ok) {
        var err = new Error('Sign-in failed (HTTP ' + res.status + '): ' + (body.trim() || res.statusText));
        err.status = res.status;
        throw err;
      }
      var token = '';
      try { token = JSON.parse(body).token || ''; } catch (e) { /* handled below */ }
      if (!token) throw new Error('The server answered without a token.');
      return token;
    });
  });
}

// Client is one signed-in user's connection, redialled after every drop
// until stop. Events, each with one handler set by on(name, fn):
//   status(state, detail): 'connecting' (detail.phase: 'connect',
//     'catch-up' or 'token'), 'connected', or 'disconnected'
//     (detail.retryIn: seconds to the next attempt);
//   authenticated(me): {userId, deviceId, sessionId}; requests may go;
//   ready(caughtUp): what the connection may have missed can be synced;
//     caughtUp is the Set of conversations a resume brought up to date,
//     or null when nothing was resumed;
//   closed(): the connection is gone, every pending request rejected;
//   token(token): a new token was fetched, for the page to keep;
//   signedOut(message): the token is refused for good;
//   error(err), notice(text, info): for the user to see; info marks a
//     notice as news rather than a failure;
//   events, receipts, typing, presence, flags (list): pushes.
export class Client {
  // opts: url() the WebSocket URL; deviceId() this device's id;
  // cursors() the last seq shown of each conversation, to resume from.
  constructor(opts) {
    this.opts = opts;
    this.handlers = {};
    this.user = '';
    this.token = '';
    this.tokenFresh = false; // fetched since the last successful authentication
    this.needToken = false;  // the server rejected the token: fetch a new one first
    this.me = null;
    this.ws = null;
    this.connected = false;  // authenticated on this.ws
    // epoch changes with every connection and drop: a caller compares it
    // before and after an answer to know it is from the same connection.
    this.epoch = 0;
    this.nextRequest = 1;
    this.pending = new Map();
    this.backoff = 0;
    this.reconnectAt = 0;
    this.reconnectTimer = 0;
    this.countdownTimer = 0;
    this.pingTimer = 0;
    // resuming is the catch-up asked for in the last authenticate, until
    // the resumed frame ends it.
    this.resuming = null;
  }

  on(name, fn) { this.handlers[name] = fn; return this; }

  emit(name, a, b) { var fn = this.handlers[name]; if (fn) fn(a, b); }

  // start signs user in with token; fresh says it was fetched just now,
  // so a refusal is final rather than a reason to fetch another.
  start(user, token, fresh) {
    this.user = user;
    this.token = token;
    this.tokenFresh = !!fresh;
    this.needToken = false;
    this.connect();
  }

  // stop signs out: the connection closes and no other is made.
  stop() {
    var ws = this.ws;
    this.setSocket(null);
    if (ws) {
      detach(ws);
      try { ws.close(1000, 'signed out'); } catch (e) { /* ignore */ }
    }
    this.rejectPending();
    this.stopPing();
    if (this.resuming) { clearTimeout(this.resuming.timer); this.resuming = null; }
    clearTimeout(this.reconnectTimer);
    clearInterval(this.countdownTimer);
    this.user = '';
    this.token = '';
    this.tokenFresh = false;
    this.needToken = false;
    this.me = null;
    this.backoff = 0;
  }

  // retry reconnects now rather than when the backoff says.
  retry() {
    if (this.token && !this.ws) { this.backoff = 0; this.reconnect(); }
  }

  request(body, timeoutMs) { return this.send(body, timeoutMs, false); }

  setSocket(ws) {
    this.ws = ws;
    this.connected = false;
    this.epoch++;
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    clearInterval(this.countdownTimer);
    if (!this.token) return;
    this.emit('status', 'connecting', { phase: 'connect' });
    var ws;
    try {
      ws = new WebSocket(this.opts.url(), [SUBPROTOCOL]);
    } catch (e) {
      this.emit('error', e);
      this.scheduleReconnect();
      return;
    }
    this.setSocket(ws);
    this.nextRequest = 1;
    this.pending = new Map();
    var self = this;
    ws.onopen = function () { self.authenticate(ws); };
    ws.onmessage = function (e) { if (typeof e.data === 'string') self.onFrame(ws, e.data); };
    ws.onclose = function (e) { self.onClose(ws, e.code, e.reason); };
    ws.onerror = function () { /* a close event follows */ };
  }

  authenticate(ws) {
    if (ws !== this.ws) return;
    var self = this;
    if (ws.protocol && ws.protocol !== SUBPROTOCOL) {
      this.emit('notice', 'The server picked an unexpected subprotocol: ' + ws.protocol);
    }
    // The first frame of a connection; its requestId is "1". After a drop
    // it names the last seq shown of each conversation, and the server
    // sends what was missed, in order, before the live events.
    var cursors = this.opts.cursors();
    var deviceId = this.opts.deviceId();
    var auth = { token: this.token, deviceId: deviceId };
    if (cursors.length) auth.resume = cursors;
    this.send({ authenticate: auth }, REQUEST_TIMEOUT_MS, true).then(function (f) {
      if (ws !== self.ws) return;
      var a = f.authenticated || {};
      self.me = { userId: a.userId || self.user, deviceId: a.deviceId || deviceId, sessionId: a.sessionId || '' };
      self.connected = true;
      self.backoff = 0;
      self.tokenFresh = false;
      self.startPing(ws);
      self.emit('authenticated', self.me);
      if (cursors.length) {
        self.emit('status', 'connecting', { phase: 'catch-up' });
        // If the end of the catch-up never comes, sync the old way.
        var timer = setTimeout(function () { if (self.resuming && self.ws === ws) self.onResumed(ws, null); }, REQUEST_TIMEOUT_MS);
        self.resuming = { timer: timer };
      } else {
        self.emit('status', 'connected');
        self.emit('ready', null);
      }
    }, function (err) {
      if (ws !== self.ws) return;
      if (err.code === 'ERROR_CODE_TOKEN_EXPIRED' || err.code === 'ERROR_CODE_UNAUTHENTICATED') {
        if (self.tokenFresh && err.code === 'ERROR_CODE_UNAUTHENTICATED') {
          // A token minted a moment ago was refused: retrying will not help.
          self.emit('signedOut', describe(err));
          return;
        }
        self.needToken = true;
        self.emit('notice', describe(err), err.code === 'ERROR_CODE_TOKEN_EXPIRED');
      } else {
        self.emit('error', err);
      }
      // The server closes the connection after a failed authentication;
      // make sure we do not hang if it does not.
      if (err.code !== 'DISCONNECTED') self.dropSocket(ws);
    });
  }

  // onResumed ends a catch-up: the page syncs only the conversations it
  // did not bring up to date.
  onResumed(ws, resumed) {
    if (ws !== this.ws || !this.resuming) return;
    clearTimeout(this.resuming.timer);
    this.resuming = null;
    var caughtUp = new Set();
    ((resumed && resumed.caughtUp) || []).forEach(function (cur) { caughtUp.add(cur.conversationId); });
    this.emit('status', 'connected');
    this.emit('ready', caughtUp);
  }

  onFrame(ws, data) {
    if (ws !== this.ws) return;
    var f;
    try { f = JSON.parse(data); } catch (e) { return; }
    if (!f || typeof f !== 'object') return;
    if (f.resumed) {
      // It carries the authenticate frame's requestId, answered already.
      this.onResumed(ws, f.resumed);
      return;
    }
    if (f.requestId) {
      var p = this.pending.get(f.requestId);
      if (p) {
        this.pending.delete(f.requestId);
        clearTimeout(p.timer);
        if (f.error) p.reject(new ParleyError(f.error.code, f.error.message, f.error.clientMsgId));
        else p.resolve(f);
        return;
      }
      if (f.error) this.onUnsolicitedError(f.error);
      return;
    }
    if (f.events) this.emit('events', (f.events && f.events.events) || []);
    else if (f.receipts) this.emit('receipts', f.receipts.receipts || []);
    else if (f.typing) this.emit('typing', f.typing.typing || []);
    else if (f.presence) this.emit('presence', f.presence.presence || []);
    else if (f.flags) this.emit('flags', f.flags.flags || []);
    else if (f.error) this.onUnsolicitedError(f.error);
  }

  onUnsolicitedError(e) {
    var err = new ParleyError(e.code, e.message, e.clientMsgId);
    this.emit('notice', describe(err), e.code === 'ERROR_CODE_RESYNC');
  }

  rejectPending() {
    var pending = this.pending;
    this.pending = new Map();
    pending.forEach(function (p) {
      clearTimeout(p.timer);
      p.reject(new ParleyError('DISCONNECTED', 'connection lost'));
    });
  }

  onClose(ws, code) {
    if (ws !== this.ws) return;
    detach(ws);
    this.setSocket(null);
    if (this.resuming) { clearTimeout(this.resuming.timer); this.resuming = null; }
    this.stopPing();
    this.rejectPending();
    this.emit('closed');
    if (!this.token) return;
    if (code === CLOSE_UNAUTHENTICATED) this.needToken = true;
    if (code === CLOSE_RESYNC) this.emit('notice', ERROR_TEXT.ERROR_CODE_RESYNC, true);
    this.scheduleReconnect();
  }

  dropSocket(ws) {
    if (ws !== this.ws) return;
    try { ws.close(); } catch (e) { /* ignore */ }
    this.onClose(ws, 1006);
  }

  scheduleReconnect() {
    var self = this;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.countdownTimer);
    // Exponential, drawn between half and all of it, so the pages an edge
    // restart cut off do not all come back in the same instant.
    var delay = Math.min(BACKOFF_MAX_MS, 1000 * Math.pow(2, this.backoff));
    delay = delay / 2 + Math.random() * delay / 2;
    this.backoff = Math.min(this.backoff + 1, 10);
    this.reconnectAt = Date.now() + delay;
    var tick = function () {
      var left = Math.max(0, Math.ceil((self.reconnectAt - Date.now()) / 1000));
      self.emit('status', 'disconnected', { retryIn: left });
    };
    tick();
    this.countdownTimer = setInterval(tick, 1000);
    this.reconnectTimer = setTimeout(function () { self.reconnect(); }, delay);
  }

  reconnect() {
    var self = this;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.countdownTimer);
    if (!this.token || this.ws) return;
    if (!this.needToken) { this.connect(); return; }
    this.emit('status', 'connecting', { phase: 'token' });
    var user = this.user;
    fetchToken(user).then(function (token) {
      if (self.user !== user) return;
      self.token = token;
      self.tokenFresh = true;
      self.needToken = false;
      self.emit('token', token);
      self.connect();
    }, function (err) {
      if (self.user !== user) return;
      if (!err.network && err.status && err.status >= 400 && err.status < 500) self.emit('signedOut', describe(err));
      else { self.emit('error', err); self.scheduleReconnect(); }
    });
  }

  // send frames body with the next requestId; beforeAuth lets the
  // authenticate frame go before the connection is authenticated.
  send(body, timeoutMs, beforeAuth) {
    var self = this;
    return new Promise(function (resolve, reject) {
      var ws = self.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN || (!self.connected && !beforeAuth)) {
        reject(new ParleyError('DISCONNECTED', ''));
        return;
      }
      var requestId = String(self.nextRequest++);
      var pending = self.pending;
      var timer = setTimeout(function () {
        if (pending.delete(requestId)) reject(new ParleyError('TIMEOUT', ''));
      }, timeoutMs || REQUEST_TIMEOUT_MS);
      pending.set(requestId, { resolve: resolve, reject: reject, timer: timer });
      var frame = { requestId: requestId };
      for (var k in body) if (Object.prototype.hasOwnProperty.call(body, k)) frame[k] = body[k];
      try {
        ws.send(JSON.stringify(frame));
      } catch (e) {
        pending.delete(requestId);
        clearTimeout(timer);
        reject(new ParleyError('DISCONNECTED', String(e && e.message || e)));
      }
    });
  }

  startPing(ws) {
    var self = this;
    this.stopPing();
    this.pingTimer = setInterval(function () {
      if (ws !== self.ws || !self.connected) return;
      self.request({ ping: {} }, PONG_TIMEOUT_MS).catch(function (err) {
        if (err.code === 'TIMEOUT') self.dropSocket(ws);
      });
    }, PING_EVERY_MS);
  }

  stopPing() { clearInterval(this.pingTimer); this.pingTimer = 0; }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}

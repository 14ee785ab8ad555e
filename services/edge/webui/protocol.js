// The page's side of the WebSocket protocol: the SDK (@parley/sdk, served
// by the edge at /sdk/) connects, authenticates, resumes, dedupes, orders
// and reconnects; this module turns its states into what the page shows,
// and its errors into the page's words. It knows no DOM and no page
// state: the page hears from it through on(), and asks it things through
// start, stop, retry and request.

import { Client as SdkClient } from '/sdk/index.js';

var REQUEST_TIMEOUT_MS = 20000;
var CLOSE_RESYNC = 4000;

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
//   authenticated(me): {userId, deviceId, sessionId, inboxId, audiences}; requests may go;
//   ready(caughtUp): what the connection may have missed can be synced;
//     caughtUp is the Set of conversations a resume brought up to date,
//     or null when nothing was resumed;
//   closed(): the connection is gone, every pending request rejected;
//   token(token): a new token was fetched, for the page to keep;
//   signedOut(message): the token is refused for good;
//   error(err), notice(text, info): for the user to see; info marks a
//     notice as news rather than a failure;
//   events, receipts, typing, presence, flags (list): pushes. The SDK
//     drops events delivered before and fills gaps from history, so each
//     conversation's events come in seq order, none twice.
export class Client {
  // opts: url() the WebSocket URL; deviceId() this device's id;
  // cursors() the last seq shown of each conversation, to resume from.
  constructor(opts) {
    this.opts = opts;
    this.handlers = {};
    this.user = '';
    this.token = '';
    this.tokenFresh = false; // fetched since the last successful authentication
    this.me = null;
    this.sdk = null;
    this.connected = false;  // authenticated; requests go out at once
    // epoch changes with every connection and drop: a caller compares it
    // before and after an answer to know it is from the same connection.
    this.epoch = 0;
    this.countdownTimer = 0;
    this.resumeTimer = 0;
  }

  on(name, fn) { this.handlers[name] = fn; return this; }

  emit(name, a, b) { var fn = this.handlers[name]; if (fn) fn(a, b); }

  // start signs user in with token; fresh says it was fetched just now,
  // so a refusal is final rather than a reason to fetch another.
  start(user, token, fresh) {
    this.stop();
    this.user = user;
    this.token = token;
    this.tokenFresh = !!fresh;
    var self = this;
    var sdk = new SdkClient({
      url: this.opts.url,
      deviceId: this.opts.deviceId(),
      getToken: function (info) { return self.getToken(sdk, info.reason); },
      cursors: this.opts.cursors,
      reconnect: { minDelayMs: 1000, maxDelayMs: 15000 },
      requestTimeoutMs: REQUEST_TIMEOUT_MS
    });
    this.sdk = sdk;
    sdk.on('state', function (s) { if (self.sdk === sdk) self.onState(sdk, s); });
    sdk.on('events', function (evs) { if (self.sdk === sdk) self.emit('events', evs); });
    sdk.on('receipts', function (rs) { if (self.sdk === sdk) self.emit('receipts', rs); });
    sdk.on('typing', function (ts) { if (self.sdk === sdk) self.emit('typing', ts); });
    sdk.on('presence', function (ps) { if (self.sdk === sdk) self.emit('presence', ps); });
    sdk.on('flags', function (fs) { if (self.sdk === sdk) self.emit('flags', fs); });
    sdk.on('error', function (e) { if (self.sdk === sdk) self.onUnsolicitedError(e); });
    sdk.connect().catch(function () { /* reported by the closed state */ });
  }

  // stop signs out: the connection closes and no other is made.
  stop() {
    var sdk = this.sdk;
    this.sdk = null;
    if (sdk) sdk.close();
    if (this.connected) this.setConnected(false);
    clearInterval(this.countdownTimer);
    clearTimeout(this.resumeTimer);
    this.user = '';
    this.token = '';
    this.tokenFresh = false;
    this.me = null;
  }

  // retry reconnects now rather than when the backoff says.
  retry() {
    if (this.sdk && !this.connected) this.sdk.reconnectNow();
  }

  // request sends body and resolves with the answering frame. It does not
  // wait for a connection: without one it fails at once (DISCONNECTED),
  // and the page retries when it is back.
  request(body, timeoutMs) {
    var sdk = this.sdk;
    if (!sdk || !this.connected) return Promise.reject(new ParleyError('DISCONNECTED', ''));
    return sdk.request(body, { timeoutMs: timeoutMs || REQUEST_TIMEOUT_MS, wait: false, rateLimitRetries: 0 })
      .catch(function (err) { throw pageError(err); });
  }

  setConnected(on) {
    this.connected = on;
    this.epoch++;
  }

  // getToken gives the SDK the token for a connection: the one the page
  // holds, or a fresh one from the dev endpoint once the server refused
  // it or warns that it expires.
  getToken(sdk, reason) {
    if (reason === 'connect' || reason === 'reconnect') return this.token;
    var self = this;
    var user = this.user;
    this.emit('status', 'connecting', { phase: 'token' });
    return fetchToken(user).then(function (token) {
      if (self.sdk !== sdk) return token;
      self.token = token;
      self.tokenFresh = true;
      self.emit('token', token);
      return token;
    }, function (err) {
      if (self.sdk === sdk && !err.network && err.status && err.status >= 400 && err.status < 500) {
        self.emit('signedOut', describe(err));
        self.stop();
      }
      throw err;
    });
  }

  onState(sdk, s) {
    var self = this;
    if (s.state === 'connecting') {
      clearInterval(this.countdownTimer);
      if (s.reason !== 'rejected') this.emit('status', 'connecting', { phase: 'connect' });
    } else if (s.state === 'connected') {
      var a = s.authenticated || {};
      this.me = { userId: a.userId || this.user, deviceId: a.deviceId || sdk.deviceId, sessionId: a.sessionId || '',
        inboxId: a.inboxId || '', audiences: a.audiences || [] };
      this.tokenFresh = false;
      this.setConnected(true);
      this.emit('authenticated', this.me);
      if (s.resuming) {
        this.emit('status', 'connecting', { phase: 'catch-up' });
        // If the end of the catch-up never comes, sync the old way.
        var epoch = this.epoch;
        clearTimeout(this.resumeTimer);
        this.resumeTimer = setTimeout(function () {
          if (self.sdk === sdk && self.epoch === epoch) { self.emit('status', 'connected'); self.emit('ready', null); }
        }, REQUEST_TIMEOUT_MS);
      } else {
        this.emit('status', 'connected');
        this.emit('ready', null);
      }
    } else if (s.state === 'resumed') {
      clearTimeout(this.resumeTimer);
      var caughtUp = new Set();
      ((s.resumed && s.resumed.caughtUp) || []).forEach(function (cur) { caughtUp.add(cur.conversationId); });
      this.emit('status', 'connected');
      this.emit('ready', caughtUp);
    } else if (s.state === 'reconnecting') {
      this.dropped();
      var err = s.error;
      if (err && err.closeCode === CLOSE_RESYNC) this.emit('notice', ERROR_TEXT.ERROR_CODE_RESYNC, true);
      else if (err && (err.code === 'ERROR_CODE_TOKEN_EXPIRED' || err.code === 'ERROR_CODE_UNAUTHENTICATED')) {
        this.emit('notice', describe(pageError(err)), err.code === 'ERROR_CODE_TOKEN_EXPIRED');
      } else if (err && err.server && err.code !== 'ERROR_CODE_RATE_LIMITED') this.emit('error', pageError(err));
      var at = Date.now() + s.delayMs;
      var tick = function () {
        var left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
        self.emit('status', 'disconnected', { retryIn: left });
      };
      tick();
      clearInterval(this.countdownTimer);
      this.countdownTimer = setInterval(tick, 1000);
    } else if (s.state === 'closed') {
      this.dropped();
      clearInterval(this.countdownTimer);
      if (this.sdk !== sdk) return;
      this.sdk = null;
      var cause = s.error && s.error.code === 'AUTH_REJECTED' ? s.error.cause || s.error : s.error;
      this.emit('signedOut', describe(pageError(cause)));
    }
  }

  // dropped: the connection is gone, once per connection.
  dropped() {
    clearTimeout(this.resumeTimer);
    if (!this.connected) return;
    this.setConnected(false);
    this.emit('closed');
  }

  onUnsolicitedError(e) {
    var err = pageError(e);
    this.emit('notice', describe(err), e.code === 'ERROR_CODE_RESYNC');
  }
}

// pageError gives an SDK error the page's codes: a request that could
// not go or whose connection dropped is DISCONNECTED.
function pageError(err) {
  if (!err) return new ParleyError('DISCONNECTED', '');
  var code = err.code;
  if (code === 'CONNECTION_LOST' || code === 'NOT_CONNECTED' || code === 'CLOSED') code = 'DISCONNECTED';
  if (typeof code === 'string' && code.indexOf('ERROR_CODE_') === 0 || code === 'DISCONNECTED' || code === 'TIMEOUT') {
    var out = new ParleyError(code, err.serverMessage || '', err.clientMsgId);
    if (err.retryAfterMs) out.retryAfterMs = err.retryAfterMs;
    return out;
  }
  return err;
}

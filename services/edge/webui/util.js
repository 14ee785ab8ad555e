// Helpers with no state and no DOM: ids, sizes, times, previews.

var PREVIEW_RUNES = 120;

export var USER_RE = /^[A-Za-z0-9._@-]{1,64}$/;

export function validUser(name) { return USER_RE.test(name); }

export function randomBytes(n) {
  var b = new Uint8Array(n);
  // getRandomValues works on plain http too (randomUUID needs a secure context).
  crypto.getRandomValues(b);
  return b;
}

export function hex(bytes) {
  var s = '';
  for (var i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
  return s;
}

function formatUUID(b) {
  var h = hex(b);
  return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
}

export function uuid4() {
  var b = randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return formatUUID(b);
}

export function uuid7() {
  var b = randomBytes(16);
  var ms = Date.now();
  for (var i = 5; i >= 0; i--) { b[i] = ms % 256; ms = Math.floor(ms / 256); }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  return formatUUID(b);
}

export function utf8Len(s) { return new TextEncoder().encode(s).length; }

export function seqOf(x) { var n = Number(x); return isFinite(n) && n > 0 ? n : 0; }

export function parseTime(s) {
  if (!s) return 0;
  // RFC 3339 with up to nanoseconds: keep milliseconds for Date.parse.
  var t = Date.parse(String(s).replace(/(\.\d{3})\d+/, '$1'));
  return isNaN(t) ? 0 : t;
}

export function pad2(n) { return (n < 10 ? '0' : '') + n; }

export function fmtTime(ms, long) {
  if (!ms) return '';
  var d = new Date(ms);
  var now = new Date();
  var hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  if (long) return d.toLocaleString();
  if (d.toDateString() === now.toDateString()) return hm;
  var sameYear = d.getFullYear() === now.getFullYear();
  var date = d.toLocaleDateString(undefined, sameYear ? { month: 'short', day: 'numeric' } : { year: 'numeric', month: 'short', day: 'numeric' });
  return date + ' ' + hm;
}

export function fmtListTime(ms) {
  if (!ms) return '';
  var d = new Date(ms);
  var now = new Date();
  if (d.toDateString() === now.toDateString()) return pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
}

export function fmtSeen(ms) {
  var d = new Date(ms);
  var now = new Date();
  var hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  if (d.toDateString() === now.toDateString()) return 'today at ' + hm;
  var y = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return 'yesterday at ' + hm;
  return fmtTime(ms);
}

export function fmtSize(n) {
  n = Number(n) || 0;
  if (!n) return '';
  if (n < 1024) return n + ' B';
  var units = ['KB', 'MB', 'GB', 'TB'];
  var i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return (n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + units[i];
}

export function preview(text) {
  var runes = Array.from(String(text || ''));
  if (runes.length <= PREVIEW_RUNES) return runes.join('');
  return runes.slice(0, PREVIEW_RUNES - 1).join('') + '…';
}

export function arr(x) { return Array.isArray(x) ? x.slice() : []; }

export function safeHref(u) {
  try {
    var x = new URL(String(u));
    if (x.protocol === 'http:' || x.protocol === 'https:') return x.href;
  } catch (e) { /* not a URL */ }
  return '';
}

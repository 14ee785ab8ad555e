// DOM helpers every view shares: lookups, nodes, the toast, the status.

import { describe, shortCode } from '../protocol.js';
import { fmtTime } from '../util.js';

export var CONFIRM_MS = 4000;

export function $(id) { return document.getElementById(id); }

export function el(tag, cls, text) {
  var n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined && text !== null) n.textContent = String(text);
  return n;
}

var toastTimer = 0;

export function showToast(text, info) {
  $('toast-text').textContent = text;
  $('toast').dataset.code = '';
  $('toast').className = info ? 'info' : '';
  $('toast').hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(hideToast, info ? 3500 : 8000);
}

export function hideToast() { $('toast').hidden = true; }

export function showError(err) {
  showToast(describe(err), false);
  $('toast').dataset.code = err && err.code ? shortCode(err.code) : '';
}

export function setStatus(kind, text) {
  var s = $('status');
  s.dataset.state = kind;
  s.textContent = text;
}

export function timeNode(ms, raw) {
  var t = el('time', 'time', fmtTime(ms));
  if (raw) t.dateTime = raw;
  if (ms) t.title = fmtTime(ms, true);
  return t;
}

export function actionButton(label, cls, fn) {
  var b = el('button', 'link ' + cls, label);
  b.type = 'button';
  b.addEventListener('click', fn);
  return b;
}

// confirmButton asks for a second click before doing something that
// cannot be taken back.
export function confirmButton(label, cls, ask, fn) {
  var b = actionButton(label, cls, function () {
    if (!b.classList.contains('confirming')) {
      b.classList.add('confirming');
      b.textContent = ask;
      setTimeout(function () { b.classList.remove('confirming'); b.textContent = label; }, CONFIRM_MS);
      return;
    }
    b.classList.remove('confirming');
    b.textContent = label;
    fn();
  });
  return b;
}

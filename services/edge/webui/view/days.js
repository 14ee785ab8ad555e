// Date separators in the message list: one before the first event of
// each day (the viewer's local day). The list changes in many places
// (history pages, pushes, older pages, edits redrawn in place), so the
// separators follow the list itself rather than each of them.

import { el } from './dom.js';

var DAY_MS = 24 * 60 * 60 * 1000;

function dayOf(node) {
  var t = node.querySelector(':scope > .meta > time, :scope > time');
  var ms = t && t.dateTime ? Date.parse(t.dateTime) : NaN;
  if (isNaN(ms)) return null;
  var d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d;
}

export function dayLabel(d, now) {
  var today = new Date(now);
  today.setHours(0, 0, 0, 0);
  var diff = Math.round((today - d) / DAY_MS);
  if (diff === 0) return 'Today';
  if (diff === 1) return 'Yesterday';
  var opts = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== today.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString(undefined, opts);
}

// markDays puts a separator before each event whose day differs from the
// event before it, and removes those that no longer do.
export function markDays(box) {
  var prev = '';
  var now = Date.now();
  Array.prototype.slice.call(box.children).forEach(function (n) {
    if (n.classList.contains('day-separator')) { n.remove(); return; }
    if (!n.classList.contains('event')) return;
    var d = dayOf(n);
    if (!d) return;
    var key = d.toDateString();
    if (key === prev) return;
    prev = key;
    var sep = el('div', 'day-separator');
    sep.setAttribute('role', 'separator');
    sep.dataset.day = d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0');
    sep.appendChild(el('span', '', dayLabel(d, now)));
    box.insertBefore(sep, n);
  });
}

// watchDays keeps box's separators up to date as events come and go,
// once per batch of changes.
export function watchDays(box) {
  var queued = false;
  var obs = new MutationObserver(function () {
    if (queued) return;
    queued = true;
    queueMicrotask(function () {
      queued = false;
      markDays(box);
      // What markDays changed is not a change to react to.
      obs.takeRecords();
    });
  });
  obs.observe(box, { childList: true });
}

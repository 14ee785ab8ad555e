// The page's one protocol client, and what a tab keeps across reloads
// (sessionStorage, so each tab signs in on its own).

import { Client } from './protocol.js';
import { resumeCursors } from './store.js';
import { hex, randomBytes } from './util.js';

var SS_DEVICE = 'parley.deviceId';
export var SS_USER = 'parley.user';
export var SS_TOKEN = 'parley.token';
export var SS_OPEN = 'parley.openConversation';

export function getDeviceId() {
  var d = '';
  try { d = sessionStorage.getItem(SS_DEVICE) || ''; } catch (e) { /* storage disabled */ }
  if (!d) {
    d = 'web-' + hex(randomBytes(8));
    try { sessionStorage.setItem(SS_DEVICE, d); } catch (e) { /* ignore */ }
  }
  return d;
}

export function ssGet(k) { try { return sessionStorage.getItem(k) || ''; } catch (e) { return ''; } }
export function ssSet(k, v) { try { if (v) sessionStorage.setItem(k, v); else sessionStorage.removeItem(k); } catch (e) { /* ignore */ } }

function wsURL() {
  return (location.protocol === 'https:' ? 'wss' : 'ws') + '://' + location.host + '/ws';
}

export var client = new Client({ url: wsURL, deviceId: getDeviceId, cursors: resumeCursors });

export function request(body, timeoutMs) { return client.request(body, timeoutMs); }

// Test plumbing: a WebSocket class (from the ws package) whose
// connections a test can cut, refuse, or tamper with, and helpers that
// wait for what a client delivers.

import WebSocket from 'ws';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ClientFrameSchema } from '../gen/parley/client/v1/client_pb.js';

// controlledWS returns {WebSocket, ...controls} for one client.
//   offline: new connections are refused (dialled to a closed port);
//   drop(): cut every open connection without a close frame (a network loss);
//   onSend(ws, data): return true to take over sending that frame;
//   rewindResume: the next authenticate resumes every conversation from
//     seq 0, as a client whose storage lags what it was shown would.
//   duplicate: every frame received is delivered twice.
export function controlledWS() {
  const ctl = { sockets: new Set(), offline: false, onSend: null, rewindResume: false, duplicate: false, protocols: [] };
  class TestWS extends WebSocket {
    constructor(url, protocols) {
      super(ctl.offline ? 'ws://127.0.0.1:9/ws' : url, protocols);
      ctl.sockets.add(this);
      this.on('open', () => ctl.protocols.push(this.protocol));
      this.on('close', () => ctl.sockets.delete(this));
    }

    send(data, ...rest) {
      if (ctl.rewindResume) data = rewind(data);
      if (ctl.onSend && ctl.onSend(this, data, (d, cb) => super.send(d, cb))) return;
      super.send(data, ...rest);
    }

    emit(name, ...args) {
      const r = super.emit(name, ...args);
      if (name === 'message' && ctl.duplicate) super.emit(name, ...args);
      return r;
    }
  }
  function rewind(data) {
    if (typeof data === 'string') {
      const f = JSON.parse(data);
      if (!f.authenticate) return data;
      ctl.rewindResume = false;
      for (const c of f.authenticate.resume || []) c.lastSeq = '0';
      return JSON.stringify(f);
    }
    const m = fromBinary(ClientFrameSchema, data);
    if (m.frame.case !== 'authenticate') return data;
    ctl.rewindResume = false;
    for (const c of m.frame.value.resume) c.lastSeq = 0n;
    return toBinary(ClientFrameSchema, m);
  }
  ctl.WebSocket = TestWS;
  ctl.drop = () => { for (const s of ctl.sockets) s.terminate(); };
  return ctl;
}

// collect records every event a client delivers, in delivery order.
export function collect(client) {
  const all = [];
  const waiters = new Set();
  client.on('events', (evs) => {
    all.push(...evs);
    for (const w of waiters) w();
  });
  return {
    all,
    of(conv) { return all.filter((e) => e.conversationId === conv); },
    // until waits for pred(all) to hold.
    until(pred, ms = 15000, what = 'events') {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pred(all)) return false;
          waiters.delete(check);
          clearTimeout(t);
          resolve(all);
          return true;
        };
        const t = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}; have ${all.length}: ${all.map((e) => `${e.conversationId.slice(-4)}#${e.seq}`).join(' ')}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
  };
}

// waitState resolves with the first state change named state.
export function waitState(client, state, ms = 15000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { off(); reject(new Error(`no ${state} state in ${ms} ms`)); }, ms);
    const off = client.on('state', (s) => {
      if (s.state === state) { clearTimeout(t); off(); resolve(s); }
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const seqs = (evs) => evs.map((e) => Number(e.seq));

// contiguous: 1..n (or from..to) with nothing missing and nothing twice.
export function range(from, to) {
  const out = [];
  for (let i = from; i <= to; i++) out.push(i);
  return out;
}

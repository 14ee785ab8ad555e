// Frame codecs. Whatever the subprotocol, the client works on frames in
// the protobuf JSON mapping (docs/PROTOCOL.md, "protojson conventions"):
// lowerCamelCase fields, 64-bit integers as strings, enums as names. The
// binary codec converts at the edge of the socket, so an app reads the
// same objects on either subprotocol, and the page, which uses JSON, never
// loads @bufbuild/protobuf.

export const JSON_SUBPROTOCOL = 'parley.v1.json';
export const PROTO_SUBPROTOCOL = 'parley.v1.proto';

const jsonCodec = {
  subprotocol: JSON_SUBPROTOCOL,
  binary: false,
  encode(frame) { return JSON.stringify(frame); },
  decode(data) {
    if (typeof data !== 'string') throw new Error('a binary message on the JSON subprotocol');
    return JSON.parse(data);
  },
};

/**
 * loadCodec returns the codec of a subprotocol: 'json' (the default) or
 * 'binary', whose protobuf-es code is imported only now.
 */
export async function loadCodec(kind) {
  if (!kind || kind === 'json') return jsonCodec;
  if (kind === 'binary' || kind === 'proto') {
    const m = await import('./codec-proto.js');
    return m.protoCodec;
  }
  throw new TypeError(`unknown subprotocol ${kind}: want 'json' or 'binary'`);
}

// @parley/sdk: the JavaScript client for Parley's WebSocket protocol.
// Plain ES modules; the binary subprotocol's protobuf code loads only
// when a client asks for it.

export { Client } from './client.js';
export {
  ParleyError, CONNECTION_LOST, NOT_CONNECTED, TIMEOUT, CLOSED, AUTH_REJECTED, GAP,
} from './errors.js';
export { JSON_SUBPROTOCOL, PROTO_SUBPROTOCOL, loadCodec } from './codec.js';
export { newClientMsgId } from './ids.js';
export { StatusTracker, TypingTracker } from './status.js';
export { delay as backoffDelay, withDefaults as reconnectDefaults } from './backoff.js';

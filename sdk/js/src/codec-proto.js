// The binary subprotocol: frames as protobuf bytes, converted to and from
// the JSON mapping the client works on. Imported lazily by codec.js.

import { fromBinary, fromJson, toBinary, toJson } from '@bufbuild/protobuf';
import { ClientFrameSchema, ServerFrameSchema } from '../gen/parley/client/v1/client_pb.js';
import { PROTO_SUBPROTOCOL } from './codec.js';

export const protoCodec = {
  subprotocol: PROTO_SUBPROTOCOL,
  binary: true,
  encode(frame) { return toBinary(ClientFrameSchema, fromJson(ClientFrameSchema, frame)); },
  decode(data) {
    if (typeof data === 'string') throw new Error('a text message on the binary subprotocol');
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    return toJson(ServerFrameSchema, fromBinary(ServerFrameSchema, bytes));
  },
};

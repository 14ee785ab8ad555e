// Package wire encodes and decodes the client protocol's frames in both
// WebSocket subprotocols. The edge and the SDK share it, so both ends agree
// byte for byte on what a frame is and what a bad one costs.
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The two subprotocols carry the same messages.
const (
	// SubprotocolProto frames are binary protobuf.
	SubprotocolProto = "parley.v1.proto"
	// SubprotocolJSON frames are protojson text, for debugging by hand and
	// for browsers that would rather not ship a protobuf runtime.
	SubprotocolJSON = "parley.v1.json"
)

// MaxFrameBytes is the default limit for one client frame.
const MaxFrameBytes = 64 << 10

// Format is how frames are encoded on one connection.
type Format int

// Formats, one per subprotocol.
const (
	Binary Format = iota
	JSON
)

// FormatFor maps a negotiated subprotocol to its format.
func FormatFor(subprotocol string) (Format, bool) {
	switch subprotocol {
	case SubprotocolProto:
		return Binary, true
	case SubprotocolJSON:
		return JSON, true
	}
	return 0, false
}

// Error is a protocol error with a stable code, sent to the client as an
// Error frame.
type Error struct {
	Code    chatv1.ErrorCode
	Message string
	// RetryAfter is how long the server asked to wait before sending the
	// frame again (RATE_LIMITED).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an *Error.
func Errorf(code chatv1.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err if it is an *Error, else INTERNAL.
func CodeOf(err error) chatv1.ErrorCode {
	var we *Error
	if errors.As(err, &we) {
		return we.Code
	}
	return chatv1.ErrorCode_ERROR_CODE_INTERNAL
}

var (
	strictJSON  = protojson.UnmarshalOptions{}
	lenientJSON = protojson.UnmarshalOptions{DiscardUnknown: true}
	jsonOut     = protojson.MarshalOptions{}
)

// DecodeClient decodes a client frame. It never panics; on failure the
// *Error says whether the bytes were malformed or the frame type unknown.
// The request id is returned when it could be read, so the error frame can
// echo it.
func DecodeClient(f Format, data []byte) (*clientv1.ClientFrame, *Error) {
	if len(data) > MaxFrameBytes {
		return nil, Errorf(chatv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, "frame of %d bytes exceeds %d", len(data), MaxFrameBytes)
	}
	frame := &clientv1.ClientFrame{}
	switch f {
	case Binary:
		if err := proto.Unmarshal(data, frame); err != nil {
			return readableID(binaryRequestID(data)), Errorf(chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "not a protobuf ClientFrame: %v", err)
		}
	case JSON:
		if err := strictJSON.Unmarshal(data, frame); err != nil {
			// A frame type added after this server was built reads as an
			// unknown field; tell that apart from garbage.
			lenient := &clientv1.ClientFrame{}
			if lenientJSON.Unmarshal(data, lenient) == nil && lenient.GetFrame() == nil {
				return lenient, Errorf(chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, "no known frame type: %v", err)
			}
			return readableID(jsonRequestID(data)), Errorf(chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "not a protojson ClientFrame: %v", err)
		}
	default:
		return nil, Errorf(chatv1.ErrorCode_ERROR_CODE_INTERNAL, "unknown format %d", f)
	}
	if frame.GetFrame() == nil {
		return frame, Errorf(chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, "frame has no known type")
	}
	return frame, nil
}

// readableID is the frame a MALFORMED_FRAME answer comes with: only the
// request id that could be read from it, if any, so the answer echoes it.
func readableID(id string) *clientv1.ClientFrame {
	if id == "" {
		return nil
	}
	return &clientv1.ClientFrame{RequestId: id}
}

// jsonRequestID is the request id of a text frame that is a JSON object
// whose "requestId" (or "request_id") member is a string, however wrong
// the rest of it is; empty otherwise.
func jsonRequestID(data []byte) string {
	var members map[string]json.RawMessage
	if json.Unmarshal(data, &members) != nil {
		return ""
	}
	for _, name := range []string{"requestId", "request_id"} {
		var id string
		// encoding/json would read invalid UTF-8 as U+FFFD: an id the
		// client never sent.
		if raw, ok := members[name]; ok && utf8.Valid(raw) && json.Unmarshal(raw, &id) == nil {
			return id
		}
	}
	return ""
}

// binaryRequestID is the request id (field 1, a string) of a binary frame
// whose fields parse at the protobuf wire level up to it; empty if it is
// not valid UTF-8 or the bytes break before it.
func binaryRequestID(data []byte) string {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return ""
		}
		data = data[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(data)
			if n < 0 || !utf8.Valid(v) {
				return ""
			}
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return ""
		}
		data = data[n:]
	}
	return ""
}

// DecodeServer decodes a server frame (the SDK's side).
func DecodeServer(f Format, data []byte) (*clientv1.ServerFrame, error) {
	frame := &clientv1.ServerFrame{}
	var err error
	if f == JSON {
		err = lenientJSON.Unmarshal(data, frame)
	} else {
		err = proto.Unmarshal(data, frame)
	}
	if err != nil {
		return nil, fmt.Errorf("decode server frame: %w", err)
	}
	return frame, nil
}

// Encode marshals any frame in the given format.
func Encode(f Format, m proto.Message) ([]byte, error) {
	if f == JSON {
		return jsonOut.Marshal(m)
	}
	return proto.Marshal(m)
}

// ErrorFrame builds the frame reporting err for the request it answers.
// Decoder messages can quote the client's own bytes, and a protobuf string
// must be UTF-8 or the frame would fail to encode and the client would get
// no answer at all, so invalid sequences are replaced.
func ErrorFrame(requestID string, err *Error) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{
		RequestId: strings.ToValidUTF8(requestID, "\uFFFD"),
		Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
			Code: err.Code, Message: strings.ToValidUTF8(err.Message, "\uFFFD"), RetryAfterMs: uint32(err.RetryAfter.Milliseconds()),
		}},
	}
}

// ErrorOf is the *Error an Error frame reports.
func ErrorOf(e *clientv1.Error) *Error {
	return &Error{Code: e.GetCode(), Message: e.GetMessage(), RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond}
}

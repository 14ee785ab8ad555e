package wire_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// protocolDoc is the client authors' reference; this test keeps it in step
// with the protobuf contract.
const protocolDoc = "../../docs/PROTOCOL.md"

// docBlock is one fenced example: its info string ("json" for frames,
// "json event" for events) and where it starts, for error messages.
type docBlock struct {
	info string
	line int
	body []byte
}

func readDocBlocks(t *testing.T) ([]byte, []docBlock) {
	t.Helper()
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []docBlock
	var cur *docBlock
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &docBlock{info: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: n}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body = append(append(cur.body, line...), '\n')
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: fenced block never closed", protocolDoc, cur.line)
	}
	return doc, blocks
}

// jsonValues splits a block into its top-level JSON values: a block may
// show a request and its answer one per line.
func jsonValues(body []byte) ([]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var out []json.RawMessage
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
}

// strict rejects unknown fields, as the server does with client frames: an
// example with a misspelt field must fail here, not mislead a reader.
var strict = protojson.UnmarshalOptions{DiscardUnknown: false}

// oneofFields names the fields of a message's oneof.
func oneofFields(m proto.Message, oneof protoreflect.Name) []protoreflect.FieldDescriptor {
	fs := m.ProtoReflect().Descriptor().Oneofs().ByName(oneof).Fields()
	out := make([]protoreflect.FieldDescriptor, fs.Len())
	for i := range fs.Len() {
		out[i] = fs.Get(i)
	}
	return out
}

func whichOneof(m proto.Message, oneof protoreflect.Name) protoreflect.Name {
	r := m.ProtoReflect()
	if fd := r.WhichOneof(r.Descriptor().Oneofs().ByName(oneof)); fd != nil {
		return fd.Name()
	}
	return ""
}

// TestProtocolDocExamples: every fenced json example in PROTOCOL.md is a
// frame (or, in a "json event" block, an event) the contract accepts, and
// together the examples show every client frame, every server frame and
// every event body; the error code table lists every code with its value.
func TestProtocolDocExamples(t *testing.T) {
	doc, blocks := readDocBlocks(t)
	seen := map[string]bool{} // "client.ping", "server.pong", "event.member_added"
	noteEvents := func(evs []*chatv1.Event) {
		for _, ev := range evs {
			seen["event."+string(whichOneof(ev, "body"))] = true
		}
	}
	examples := 0
	for _, b := range blocks {
		kind, ok := map[string]string{"json": "frame", "json event": "event"}[b.info]
		if !ok {
			if strings.HasPrefix(b.info, "json") {
				t.Errorf("%s:%d: unknown block label %q (want json or json event)", protocolDoc, b.line, b.info)
			}
			continue
		}
		vals, err := jsonValues(b.body)
		if err != nil {
			t.Errorf("%s:%d: not JSON: %v", protocolDoc, b.line, err)
			continue
		}
		if len(vals) == 0 {
			t.Errorf("%s:%d: empty example", protocolDoc, b.line)
		}
		for i, v := range vals {
			examples++
			where := fmt.Sprintf("%s:%d (value %d)", protocolDoc, b.line, i+1)
			if kind == "event" {
				ev := &chatv1.Event{}
				if err := strict.Unmarshal(v, ev); err != nil {
					t.Errorf("%s: not an Event: %v\n%s", where, err, v)
					continue
				}
				if ev.GetBody() == nil || ev.GetSeq() == 0 || ev.GetConversationId() == "" {
					t.Errorf("%s: an event example needs a conversation, a seq and a body: %s", where, v)
				}
				noteEvents([]*chatv1.Event{ev})
				continue
			}
			// The server's own decoder for client frames, so an example
			// that reads as a frame here is one the edge takes.
			if cf, werr := wire.DecodeClient(wire.JSON, v); werr == nil {
				seen["client."+string(whichOneof(cf, "frame"))] = true
				continue
			} else if sf := (&clientv1.ServerFrame{}); strict.Unmarshal(v, sf) == nil && sf.GetFrame() != nil {
				seen["server."+string(whichOneof(sf, "frame"))] = true
				noteEvents(sf.GetEvents().GetEvents())
				noteEvents(sf.GetHistory().GetEvents())
			} else {
				t.Errorf("%s: neither a ClientFrame (%v) nor a ServerFrame: %s", where, werr, v)
			}
		}
	}
	if examples == 0 {
		t.Fatal("no examples found: did the fence syntax change?")
	}

	for _, c := range []struct {
		prefix, oneof string
		m             proto.Message
	}{
		{"client.", "frame", &clientv1.ClientFrame{}},
		{"server.", "frame", &clientv1.ServerFrame{}},
		{"event.", "body", &chatv1.Event{}},
	} {
		for _, fd := range oneofFields(c.m, protoreflect.Name(c.oneof)) {
			if !seen[c.prefix+string(fd.Name())] {
				t.Errorf("%s has no example of %s %q (field %d) in %s", protocolDoc, c.m.ProtoReflect().Descriptor().FullName(), fd.JSONName(), fd.Number(), c.oneof)
			}
		}
	}

	// Each code is a row of the table, with its number: clients switch on
	// the numbers in the binary protocol.
	codes := chatv1.ErrorCode(0).Descriptor().Values()
	for i := range codes.Len() {
		v := codes.Get(i)
		row := regexp.MustCompile("(?m)^\\| `" + string(v.Name()) + "` \\| " + fmt.Sprint(v.Number()) + " \\| [^|]*\\S[^|]* \\|$")
		if !row.Match(doc) {
			t.Errorf("%s: the error code table has no row | `%s` | %d | meaning |", protocolDoc, v.Name(), v.Number())
		}
	}
	// And the doc names no code that does not exist.
	for _, m := range regexp.MustCompile(`ERROR_CODE_[A-Z_]*[A-Z]`).FindAll(doc, -1) {
		if codes.ByName(protoreflect.Name(m)) == nil {
			t.Errorf("%s mentions %s, which is no ErrorCode", protocolDoc, m)
		}
	}
}

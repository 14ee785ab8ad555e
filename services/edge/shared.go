package edge

import (
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// sharedEvent holds the encodings of one pushed event, made once for all
// the connections it is queued on: in a room of a thousand, marshalling
// it for each was a quarter of the write path's CPU
// (BenchmarkDeliverToRoom).
type sharedEvent struct {
	ev *chatv1.Event
	// bin is the event's protobuf encoding, from which binary frames of
	// any run of shared events are built.
	binOnce sync.Once
	bin     []byte
	binErr  error
	// json is the JSON frame holding this event alone, the frame of a
	// run of one.
	jsonOnce sync.Once
	json     []byte
	jsonErr  error
}

func newSharedEvent(ev *chatv1.Event) *sharedEvent { return &sharedEvent{ev: ev} }

func (s *sharedEvent) binary() ([]byte, error) {
	s.binOnce.Do(func() { s.bin, s.binErr = proto.Marshal(s.ev) })
	return s.bin, s.binErr
}

func (s *sharedEvent) jsonFrame() ([]byte, error) {
	s.jsonOnce.Do(func() { s.json, s.jsonErr = wire.Encode(wire.JSON, eventsFrame([]*chatv1.Event{s.ev})) })
	return s.json, s.jsonErr
}

func eventsFrame(evs []*chatv1.Event) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Events{Events: &clientv1.EventBatch{Events: evs}}}
}

// The field numbers an events frame is made of.
var (
	frameEventsField = (&clientv1.ServerFrame{}).ProtoReflect().Descriptor().Fields().ByName("events").Number()
	batchEventsField = (&clientv1.EventBatch{}).ProtoReflect().Descriptor().Fields().ByName("events").Number()
)

// sharedEventsFrame is the encoded events frame of a run's events when
// every one of them is shared (else ok is false and the caller encodes
// the frame itself): for the binary format, the events' own encodings
// wrapped as EventBatch and ServerFrame would wrap them, the same bytes
// proto.Marshal writes; for JSON, only a run of one event.
func sharedEventsFrame(format wire.Format, shared []*sharedEvent) (data []byte, ok bool, err error) {
	if len(shared) == 0 {
		return nil, false, nil
	}
	if format == wire.JSON {
		if len(shared) != 1 {
			return nil, false, nil
		}
		data, err = shared[0].jsonFrame()
		return data, err == nil, err
	}
	n := 0
	for _, s := range shared {
		b, err := s.binary()
		if err != nil {
			return nil, false, err
		}
		n += protowire.SizeTag(batchEventsField) + protowire.SizeBytes(len(b))
	}
	data = make([]byte, 0, protowire.SizeTag(frameEventsField)+protowire.SizeBytes(n))
	data = protowire.AppendTag(data, frameEventsField, protowire.BytesType)
	data = protowire.AppendVarint(data, uint64(n))
	for _, s := range shared {
		data = protowire.AppendTag(data, batchEventsField, protowire.BytesType)
		data = protowire.AppendBytes(data, s.bin)
	}
	return data, true, nil
}

package wire

import (
	"fmt"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// benchText is the size of message the end-to-end benchmark sends.
var benchText = strings.Repeat("x", 128)

func benchEvent(seq uint64) *chatv1.Event {
	return &chatv1.Event{
		ConversationId: "0198a0c4-6f1e-7c3a-9b2d-5e8f1a2b3c4d",
		Seq:            seq,
		EventId:        "0198a0c4-7000-7d4e-8f90-123456789abc",
		SenderId:       "user-000042",
		SenderDeviceId: "d-0198a0c4-7001-7e5f-a012-3456789abcde",
		Time:           timestamppb.New(time.Unix(1_760_000_000, 0)),
		ClientMsgId:    "0198a0c4-7002-7f60-b123-456789abcdef",
		Body:           &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: benchText}},
	}
}

func eventsFrame(n int) *clientv1.ServerFrame {
	evs := make([]*chatv1.Event, n)
	for i := range evs {
		evs[i] = benchEvent(uint64(i + 1))
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Events{Events: &clientv1.EventBatch{Events: evs}}}
}

func sendFrame() *clientv1.ClientFrame {
	return &clientv1.ClientFrame{RequestId: "17", Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
		ConversationId: "0198a0c4-6f1e-7c3a-9b2d-5e8f1a2b3c4d", ClientMsgId: "0198a0c4-7002-7f60-b123-456789abcdef", Text: benchText,
	}}}
}

var formats = []struct {
	name string
	f    Format
}{{"binary", Binary}, {"json", JSON}}

// BenchmarkEncodeEvents is the edge's side of a delivery: one events frame
// carrying n coalesced events.
func BenchmarkEncodeEvents(b *testing.B) {
	for _, ft := range formats {
		for _, n := range []int{1, 32} {
			frame := eventsFrame(n)
			data, err := Encode(ft.f, frame)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/events=%d", ft.name, n), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Encode(ft.f, frame); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDecodeEvents is the SDK's side of the same frame.
func BenchmarkDecodeEvents(b *testing.B) {
	for _, ft := range formats {
		for _, n := range []int{1, 32} {
			data, err := Encode(ft.f, eventsFrame(n))
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/events=%d", ft.name, n), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					f, err := DecodeServer(ft.f, data)
					if err != nil || len(f.GetEvents().GetEvents()) != n {
						b.Fatalf("decoded %d events, err %v", len(f.GetEvents().GetEvents()), err)
					}
				}
			})
		}
	}
}

// BenchmarkEncodeSend is the SDK encoding a send_message frame.
func BenchmarkEncodeSend(b *testing.B) {
	frame := sendFrame()
	for _, ft := range formats {
		b.Run(ft.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Encode(ft.f, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeSend is the edge decoding a client's send_message frame,
// the decoder every untrusted byte goes through.
func BenchmarkDecodeSend(b *testing.B) {
	for _, ft := range formats {
		data, err := Encode(ft.f, sendFrame())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(ft.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				f, werr := DecodeClient(ft.f, data)
				if werr != nil || f.GetSendMessage() == nil {
					b.Fatalf("decode: %v", werr)
				}
			}
		})
	}
}

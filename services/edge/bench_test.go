package edge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// benchConn is a server-side conn on a real loopback WebSocket whose client
// end is drained by a reader goroutine; every decoded event is counted on
// got, so an operation ends only when the client holds what was written.
func benchConn(b *testing.B) (*conn, <-chan int) {
	b.Helper()
	c, client := pair(b, 1<<20)
	client.SetReadLimit(1 << 26)
	got := make(chan int, 1024)
	go func() {
		defer close(got)
		for {
			_, data, err := client.Read(context.Background())
			if err != nil {
				return
			}
			f, err := wire.DecodeServer(wire.Binary, data)
			if err != nil {
				b.Error(err)
				return
			}
			got <- len(f.GetEvents().GetEvents())
		}
	}()
	b.Cleanup(func() {
		c.ws.CloseNow()
		client.CloseNow()
		for range got {
		}
	})
	return c, got
}

func benchEvents(n int) []*chatv1.Event {
	text := strings.Repeat("x", 128)
	evs := make([]*chatv1.Event, n)
	for i := range evs {
		evs[i] = &chatv1.Event{
			ConversationId: "0198a0c4-6f1e-7c3a-9b2d-5e8f1a2b3c4d", Seq: uint64(i + 1),
			EventId: "0198a0c4-7000-7d4e-8f90-123456789abc", SenderId: "user-000042",
			SenderDeviceId: "d-0198a0c4-7001-7e5f-a012-3456789abcde", ClientMsgId: "0198a0c4-7002-7f60-b123-456789abcdef",
			Time: timestamppb.New(time.Unix(1_760_000_000, 0)),
			Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: text}},
		}
	}
	return evs
}

func awaitEvents(b *testing.B, got <-chan int, n int) {
	for n > 0 {
		k, ok := <-got
		if !ok {
			b.Fatal("client connection ended")
		}
		n -= k
	}
}

// BenchmarkWritePath measures the edge's write path for n events queued on
// one connection: "coalesced" pushes them as Push does, so the writer
// goroutine batches whatever queued while a write was in flight;
// "one-per-write" writes each event as its own frame, the design the
// coalescing replaced. An operation ends when the client has read and
// decoded all n events, so the writer goroutine's work and the socket's are
// inside the timing.
func BenchmarkWritePath(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		evs := benchEvents(n)
		b.Run(fmt.Sprintf("coalesced/events=%d", n), func(b *testing.B) {
			c, got := benchConn(b)
			b.ReportAllocs()
			for b.Loop() {
				for _, ev := range evs {
					if !c.push(ev) {
						b.Fatal("push refused")
					}
				}
				awaitEvents(b, got, n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
		b.Run(fmt.Sprintf("one-per-write/events=%d", n), func(b *testing.B) {
			c, got := benchConn(b)
			b.ReportAllocs()
			for b.Loop() {
				for _, ev := range evs {
					f := &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Events{Events: &clientv1.EventBatch{Events: []*chatv1.Event{ev}}}}
					if !c.writeNow(context.Background(), f) {
						b.Fatal("write failed")
					}
				}
				awaitEvents(b, got, n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}

// BenchmarkDeliverToRoom measures one event delivered to every member of
// a room, one connection each, as Push does for a big group: queued on
// each connection through the hub, written by each connection's writer.
// An operation ends when every client has read and decoded it, so the
// clients' reads are inside the timing too; ns/delivery is per
// connection.
func BenchmarkDeliverToRoom(b *testing.B) {
	for _, members := range []int{100} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			h := newHub()
			users := make([]string, members)
			got := make(chan int, members*4)
			for i := range users {
				c, g := benchConn(b)
				c.user = fmt.Sprintf("u%04d", i)
				users[i] = c.user
				h.add(c)
				go func() {
					for n := range g {
						got <- n
					}
				}()
			}
			ev := benchEvents(1)[0]
			b.ReportAllocs()
			for b.Loop() {
				if n := h.deliver(item{event: ev, live: true}, users); n != members {
					b.Fatalf("delivered to %d of %d", n, members)
				}
				awaitEvents(b, got, members)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*members), "ns/delivery")
		})
	}
}

package edge

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// TestSharedEventsFrame: a frame built from shared encodings is the frame
// wire.Encode writes for the same events, byte for byte, in both formats
// and for runs of one and of several events; JSON builds only runs of one.
func TestSharedEventsFrame(t *testing.T) {
	evs := benchEvents(3)
	evs[1].Body = &chatv1.Event_MessageDeleted{MessageDeleted: &chatv1.MessageDeleted{TargetSeq: 1}}
	for _, tc := range []struct {
		format wire.Format
		n      int
		built  bool
	}{
		{wire.Binary, 1, true},
		{wire.Binary, 3, true},
		{wire.JSON, 1, true},
		{wire.JSON, 3, false},
	} {
		shared := make([]*sharedEvent, tc.n)
		for i := range shared {
			shared[i] = newSharedEvent(evs[i])
		}
		got, ok, err := sharedEventsFrame(tc.format, shared)
		if err != nil || ok != tc.built {
			t.Fatalf("format %v, %d events: built %v (%v), want %v", tc.format, tc.n, ok, err, tc.built)
		}
		if !ok {
			continue
		}
		want, err := wire.Encode(tc.format, eventsFrame(evs[:tc.n]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("format %v, %d events: built %x, wire.Encode writes %x", tc.format, tc.n, got, want)
		}
		f, err := wire.DecodeServer(tc.format, got)
		if err != nil || !proto.Equal(f, eventsFrame(evs[:tc.n])) {
			t.Fatalf("format %v, %d events: decodes to %v (%v)", tc.format, tc.n, f, err)
		}
	}
}

// TestDeliverSharesOneEncoding: an event delivered to several
// connections is queued on each with one shared encoding, and every
// client decodes it whole,
// also when it leaves in one frame with an event that has no shared
// encoding (a resume's catch-up).
func TestDeliverSharesOneEncoding(t *testing.T) {
	h := newHub()
	c1, cl1 := pair(t, 100)
	c2, cl2 := pair(t, 100)
	c1.user, c2.user = "u1", "u2"
	h.add(c1)
	h.add(c2)
	evs := benchEvents(2)
	// Both are mid-write, so what is queued can be looked at; c2's next
	// frame carries both events.
	for _, c := range []*conn{c1, c2} {
		c.mu.Lock()
		c.writing = true
		c.mu.Unlock()
	}
	if !c2.push(evs[0]) {
		t.Fatal("push refused")
	}
	it := item{event: evs[1]}
	if n := h.deliver(it, []string{"u1", "u2"}); n != 2 {
		t.Fatalf("delivered to %d connections, want 2", n)
	}
	c1.mu.Lock()
	c2.mu.Lock()
	s1, s2 := c1.queue[0].shared, c2.queue[1].shared
	c2.mu.Unlock()
	c1.mu.Unlock()
	if s1 == nil || s1 != s2 {
		t.Fatalf("queued encodings %p and %p, want one shared", s1, s2)
	}
	go c1.writeLoop()
	go c2.writeLoop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if f := nextFrame(ctx, t, cl1); !proto.Equal(f, eventsFrame(evs[1:])) {
		t.Fatalf("c1 got %v", f)
	}
	if f := nextFrame(ctx, t, cl2); !proto.Equal(f, eventsFrame(evs)) {
		t.Fatalf("c2 got %v", f)
	}
}

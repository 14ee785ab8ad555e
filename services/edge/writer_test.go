package edge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// TestWriterKeepsFramesInOrder: the kinds queued between two frames leave
// just before the second one, one frame per kind in a fixed order, so an
// answer never overtakes what was queued before it.
func TestWriterKeepsFramesInOrder(t *testing.T) {
	c, client := pair(t, 100)
	c.mu.Lock()
	c.writing = true // everything stays queued until the writer starts
	c.mu.Unlock()
	pong := &clientv1.ServerFrame{RequestId: "r", Frame: &clientv1.ServerFrame_Pong{Pong: &clientv1.Pong{}}}
	c.pushEphemeral(item{flags: &chatv1.ConversationFlags{ConversationId: "c", UserId: "u", Version: 1}})
	c.pushEphemeral(item{receipt: &chatv1.Receipt{ConversationId: "c", UserId: "bob", DeviceId: "phone"}})
	c.push(&chatv1.Event{ConversationId: "c", Seq: 1})
	c.send(pong)
	c.pushEphemeral(item{presence: &chatv1.Presence{UserId: "bob"}})
	c.pushEphemeral(item{typing: &chatv1.Typing{ConversationId: "c", UserId: "bob"}})
	c.push(&chatv1.Event{ConversationId: "c", Seq: 2})
	c.push(&chatv1.Event{ConversationId: "c", Seq: 3})
	go c.writeLoop()

	want := "events 1; receipts 1; flags 1; pong; events 2; typing 1; presence 1"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	for len(got) < strings.Count(want, ";")+1 {
		switch f := nextFrame(ctx, t, client); {
		case f.GetEvents() != nil:
			got = append(got, fmt.Sprint("events ", len(f.GetEvents().GetEvents())))
		case f.GetReceipts() != nil:
			got = append(got, fmt.Sprint("receipts ", len(f.GetReceipts().GetReceipts())))
		case f.GetTyping() != nil:
			got = append(got, fmt.Sprint("typing ", len(f.GetTyping().GetTyping())))
		case f.GetPresence() != nil:
			got = append(got, fmt.Sprint("presence ", len(f.GetPresence().GetPresence())))
		case f.GetFlags() != nil:
			got = append(got, fmt.Sprint("flags ", len(f.GetFlags().GetFlags())))
		case f.GetPong() != nil:
			got = append(got, "pong")
		}
	}
	if s := strings.Join(got, "; "); s != want {
		t.Fatalf("frames: %s\nwant:   %s", s, want)
	}
}

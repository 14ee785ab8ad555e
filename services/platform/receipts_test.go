package platform_test

import (
	"context"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
)

func (e *env) dialWith(user string, o sdk.Options) *sdk.Client {
	e.t.Helper()
	tok, err := e.minter.Mint(user, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	o.URL, o.Token = e.url, tok
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, o)
	if err != nil {
		e.t.Fatalf("dial %s/%s: %v", user, o.DeviceID, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// TestMessageStatusAcrossDevices: the sender sees each of her messages
// delivered to the devices that read it (acknowledged by the SDK by
// itself) and read by the member who read it on any device, as status
// events; the reader's unread count is the same on every device of his.
func TestMessageStatusAcrossDevices(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)

	alice := e.dialWith("alice", sdk.Options{DeviceID: "alice-phone", TrackStatus: true})
	go func() {
		for range alice.Events() {
		}
	}()
	phone := e.dialWith("bob", sdk.Options{DeviceID: "bob-phone", AckDelivered: true, AckInterval: 50 * time.Millisecond})
	laptop := e.dialWith("bob", sdk.Options{DeviceID: "bob-laptop"})
	g, err := alice.CreateGroup(ctx, "status", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := g.GetConversationId()
	var last uint64
	for _, text := range []string{"one", "two", "three"} {
		a, err := alice.Send(ctx, conv, text)
		if err != nil {
			t.Fatal(err)
		}
		last = a.GetSeq()
	}
	// bob's phone reads its events, and the SDK acknowledges them.
	for seen := uint64(0); seen < last; {
		select {
		case ev := <-phone.Events():
			seen = ev.GetSeq()
		case <-ctx.Done():
			t.Fatal("bob's phone did not get the messages")
		}
	}
	waitStatus := func(what string, want func(sdk.MessageStatus) bool) {
		t.Helper()
		for {
			if s, ok := alice.Status(conv, last); ok && want(s) {
				return
			}
			select {
			case <-alice.Statuses():
			case <-ctx.Done():
				s, _ := alice.Status(conv, last)
				t.Fatalf("%s: status of seq %d stays %+v", what, last, s)
			}
		}
	}
	waitStatus("delivered to bob's phone", func(s sdk.MessageStatus) bool { return s.Delivered == 1 && s.Read == 0 })

	// Read on the laptop: read by bob (once, whatever his devices), and
	// delivered to the laptop too.
	if _, err := laptop.Mark(ctx, conv, 0, last); err != nil {
		t.Fatal(err)
	}
	waitStatus("read by bob", func(s sdk.MessageStatus) bool { return s.Delivered == 2 && s.Read == 1 })

	unread := func(c *sdk.Client) uint64 {
		list, _, err := c.SyncConversations(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, cv := range list {
			if cv.GetConversationId() == conv {
				return cv.GetUnreadCount()
			}
		}
		t.Fatalf("%s does not list %s", c.DeviceID, conv)
		return 0
	}
	for deadline := time.Now().Add(10 * time.Second); unread(phone) != 0 || unread(laptop) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("unread stays phone %d laptop %d, want 0 on both after reading on the laptop", unread(phone), unread(laptop))
		}
	}
	// bob's phone was pushed the laptop's position too.
	for {
		select {
		case r := <-phone.ReceiptUpdates():
			if r.GetDeviceId() == "bob-laptop" && r.GetReadSeq() == last {
				return
			}
		case <-ctx.Done():
			t.Fatal("bob's phone never saw the laptop's read position")
		}
	}
}

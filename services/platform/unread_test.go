package platform_test

import (
	"fmt"
	"maps"
	"testing"
	"time"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	"github.com/parleychat/parley/pkg/sdk"
)

// TestUnreadAgreesAcrossDevices: one group seen from bob's device that
// stays connected, a fresh device of bob's dialled at each step, and
// another member, carol. At every step each lists the unread count of
// the one definition (messages by others after the user's read position;
// history.CountsAsUnread): creation, membership, edits and reactions
// count for nobody, one's own posts reset one's count, and reading on one
// device reads on all of them. The page counting live events is checked
// against the same steps by services/edge/webui/test.
func TestUnreadAgreesAcrossDevices(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	drain := func(c *sdk.Client) {
		go func() {
			for range c.Events() {
			}
		}()
	}
	alice := e.dialWith("alice", sdk.Options{DeviceID: "alice-phone"})
	tab := e.dialWith("bob", sdk.Options{DeviceID: "bob-tab"})
	carol := e.dialWith("carol", sdk.Options{DeviceID: "carol-phone"})
	drain(alice)
	drain(tab)
	drain(carol)

	var conv string
	var last uint64
	acc := func(what string) func(*clientv1.Accepted, error) uint64 {
		return func(a *clientv1.Accepted, err error) uint64 {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			last = max(last, a.GetSeq())
			return a.GetSeq()
		}
	}
	// listed is what c lists for the group: its last seq and unread count.
	listed := func(c *sdk.Client) (uint64, uint64) {
		t.Helper()
		list, _, err := c.SyncConversations(ctx, "")
		if err != nil {
			t.Fatalf("%s lists: %v", c.DeviceID, err)
		}
		for _, cv := range list {
			if cv.GetConversationId() == conv {
				return cv.GetLastSeq(), cv.GetUnreadCount()
			}
		}
		return 0, 0
	}
	fresh := 0
	step := func(name string, bob, carolWant uint64) {
		t.Helper()
		fresh++
		dev := e.dialWith("bob", sdk.Options{DeviceID: fmt.Sprintf("bob-fresh-%d", fresh)})
		drain(dev)
		defer dev.Close()
		want := map[string]uint64{"bob-tab": bob, dev.DeviceID: bob, "carol": carolWant}
		var got map[string]uint64
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got = map[string]uint64{}
			stored := true
			for k, c := range map[string]*sdk.Client{"bob-tab": tab, dev.DeviceID: dev, "carol": carol} {
				seq, n := listed(c)
				got[k] = n
				stored = stored && seq == last
			}
			if stored && maps.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: unread %v (stored through seq %d: %v), want %v", name, got, last, stored, want)
			}
		}
	}

	conv = func() string {
		a, err := alice.CreateGroup(ctx, "unread", "bob", "carol")
		acc("create")(a, err)
		return a.GetConversationId()
	}()
	step("created", 0, 0)
	one := acc("alice posts")(alice.Send(ctx, conv, "one"))
	step("one message and its creation event", 1, 1)
	acc("carol posts")(carol.Send(ctx, conv, "two"))
	step("carol posted", 2, 0)
	acc("alice reacts")(alice.React(ctx, conv, one, "👍"))
	acc("alice edits")(alice.Edit(ctx, conv, one, "one!"))
	acc("alice adds dave")(alice.AddMember(ctx, conv, "dave"))
	step("a reaction, an edit and a member added", 2, 0)
	if _, err := e.dialWith("bob", sdk.Options{DeviceID: "bob-laptop"}).Mark(ctx, conv, last, last); err != nil {
		t.Fatal(err)
	}
	step("bob read on his laptop", 0, 0)
	acc("alice posts again")(alice.Send(ctx, conv, "three"))
	step("alice posted again", 1, 1)
	acc("bob posts")(tab.Send(ctx, conv, "four"))
	step("bob posted", 0, 2)
}

package platform_test

import (
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// TestTyping: an indicator reaches every live device of the other members,
// not the typist's own, with its expiry; a stop follows it; a non-member
// is refused; and nothing of it is in history.
func TestTyping(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dialWith("alice", sdk.Options{DeviceID: "alice-phone"})
	aliceLaptop := e.dialWith("alice", sdk.Options{DeviceID: "alice-laptop"})
	bobPhone := e.dialWith("bob", sdk.Options{DeviceID: "bob-phone"})
	bobLaptop := e.dialWith("bob", sdk.Options{DeviceID: "bob-laptop"})
	carol := e.dialWith("carol", sdk.Options{DeviceID: "carol-phone"})
	g, err := alice.CreateGroup(ctx, "typing", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := g.GetConversationId()
	// Typing is checked against persistence's view of the members, which
	// follows the log by a moment: wait until the new group is stored.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := alice.History(ctx, &clientv1.GetHistory{ConversationId: conv}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the new group never reached history: %v", err)
		}
	}

	next := func(c *sdk.Client) *chatv1.Typing {
		t.Helper()
		select {
		case ind := <-c.Typing():
			return ind
		case <-time.After(10 * time.Second):
			t.Fatalf("%s got no typing indicator", c.DeviceID)
			return nil
		}
	}
	if err := alice.SetTyping(ctx, conv, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*sdk.Client{bobPhone, bobLaptop} {
		if ind := next(c); ind.GetUserId() != "alice" || ind.GetConversationId() != conv || ind.GetStopped() || ind.GetExpiresInMs() == 0 {
			t.Fatalf("%s: indicator %v", c.DeviceID, ind)
		}
	}
	if err := alice.SetTyping(ctx, conv, true); err != nil {
		t.Fatal(err)
	}
	tr := sdk.NewTypingTracker(nil)
	for _, c := range []*sdk.Client{bobPhone, bobLaptop} {
		ind := next(c)
		if !ind.GetStopped() {
			t.Fatalf("%s: want the stop, got %v", c.DeviceID, ind)
		}
		tr.Apply(ind)
	}
	if who := tr.Typing(conv); len(who) != 0 {
		t.Fatalf("still typing after the stop: %v", who)
	}

	var we *wire.Error
	if err := carol.SetTyping(ctx, conv, false); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("a non-member typing: %v, want NOT_FOUND", err)
	}
	// The typist's own other device got nothing, and history holds only
	// the creation.
	select {
	case ind := <-aliceLaptop.Typing():
		t.Fatalf("the typist's other device got %v", ind)
	default:
	}
	page, err := bobPhone.History(ctx, &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.GetEvents()) != 1 {
		t.Fatalf("history holds %d events, want only the creation", len(page.GetEvents()))
	}
}

// TestTypingEndsWithTheMembership: once a removed member has their
// removal, they can no longer type into the conversation nor see its
// members type, though the edge had just cached them as a member.
func TestTypingEndsWithTheMembership(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "a", false)
	bob := e.dial("bob", "b", false)
	carol := e.dial("carol", "c", true)
	g, err := alice.CreateGroup(ctx, "typing", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	conv := g.GetConversationId()
	// Typing is checked against persistence, which stores the group a
	// moment after its creation is accepted.
	listedTitle(t, carol.Client, conv, "typing")
	// Carol types as a member: the edge caches the member list with her.
	if err := carol.SetTyping(ctx, conv, false); err != nil {
		t.Fatal(err)
	}
	nextTyping(t, bob.Client)
	removed, err := alice.RemoveMember(ctx, conv, "carol")
	if err != nil {
		t.Fatal(err)
	}
	carol.upTo(t, conv, removed.GetSeq())
	listedTitle(t, carol.Client, conv, "")

	var we *wire.Error
	if err := carol.SetTyping(ctx, conv, false); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("the removed member typing: %v, want NOT_FOUND", err)
	}
	if err := alice.SetTyping(ctx, conv, false); err != nil {
		t.Fatal(err)
	}
	if ind := nextTyping(t, bob.Client); ind.GetUserId() != "alice" {
		t.Fatalf("bob got %v, want alice typing", ind)
	}
	select {
	case ind := <-carol.Typing():
		t.Fatalf("the removed member was pushed %v", ind)
	case <-time.After(500 * time.Millisecond):
	}
}

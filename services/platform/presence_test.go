package platform_test

import (
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// TestPresenceWatch: a watcher is pushed a co-member's changes (away when
// idle on every device, online, offline with last seen), a flapping user
// shows as a few changes ending where they settled, and someone sharing
// no conversation may not watch.
func TestPresenceWatch(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dialWith("alice", sdk.Options{DeviceID: "alice-phone"})
	bob := e.dialWith("bob", sdk.Options{DeviceID: "bob-phone"})
	carol := e.dialWith("carol", sdk.Options{DeviceID: "carol-phone"})
	if _, err := alice.CreateGroup(ctx, "presence", "bob"); err != nil {
		t.Fatal(err)
	}
	var now []*chatv1.Presence
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// Persistence lists the group a moment after it is created.
		var err error
		if now, err = alice.WatchPresence(ctx, "bob"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch: %v", err)
		}
	}
	if len(now) != 1 || now[0].GetState() != chatv1.PresenceState_PRESENCE_STATE_ONLINE {
		t.Fatalf("bob when watched: %v", now)
	}
	next := func(want chatv1.PresenceState) *chatv1.Presence {
		t.Helper()
		for {
			select {
			case p := <-alice.PresenceUpdates():
				if p.GetUserId() == "bob" && p.GetState() == want {
					return p
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("bob never showed %v", want)
			}
		}
	}
	if err := bob.SetIdle(ctx, true); err != nil {
		t.Fatal(err)
	}
	next(chatv1.PresenceState_PRESENCE_STATE_AWAY)
	if err := bob.SetIdle(ctx, false); err != nil {
		t.Fatal(err)
	}
	next(chatv1.PresenceState_PRESENCE_STATE_ONLINE)
	left := time.Now()
	bob.Close()
	if p := next(chatv1.PresenceState_PRESENCE_STATE_OFFLINE); p.GetLastSeen() == nil || p.GetLastSeen().AsTime().Before(left.Add(-time.Second)) {
		t.Fatalf("offline without a fitting last seen: %v (left at %v)", p, left)
	}

	// Flapping: ten connects and closes, ending connected.
	for range 10 {
		e.dialWith("bob", sdk.Options{DeviceID: "bob-phone"}).Close()
	}
	e.dialWith("bob", sdk.Options{DeviceID: "bob-phone"})
	var got []chatv1.PresenceState
	for settle := time.After(3 * time.Second); ; {
		select {
		case p := <-alice.PresenceUpdates():
			got = append(got, p.GetState())
			continue
		case <-settle:
		}
		break
	}
	// Twenty transitions; sampled once a second, they show as a few (how
	// many depends on how long the dials take on a loaded machine).
	if len(got) == 0 || len(got) > 6 || got[len(got)-1] != chatv1.PresenceState_PRESENCE_STATE_ONLINE {
		t.Fatalf("flapping bob showed %v: want a few changes, not twenty, ending online", got)
	}

	var we *wire.Error
	if _, err := carol.WatchPresence(ctx, "bob"); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER {
		t.Fatalf("carol watches bob: %v, want NOT_MEMBER", err)
	}
}

// TestPresenceWatchSurvivesAReconnect: the SDK renews a watch on its new
// connection and tells the app where the watched user is now, so a change
// made while it was cut off is seen, and later ones keep coming.
func TestPresenceWatchSurvivesAReconnect(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	p := newProxy(t, hostOf(e.url))
	alice := e.through(p, "alice", "alice-phone", sdk.Options{})
	bob := e.dialWith("bob", sdk.Options{DeviceID: "bob-phone"})
	if _, err := alice.CreateGroup(ctx, "watch", "bob"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := alice.WatchPresence(ctx, "bob"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("watch: %v", err)
		}
	}
	next := func(want chatv1.PresenceState) {
		t.Helper()
		for {
			select {
			case p := <-alice.PresenceUpdates():
				if p.GetUserId() == "bob" && p.GetState() == want {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("bob never showed %v", want)
			}
		}
	}
	// Cut alice off; bob goes idle while she is away.
	p.setRefuse(true)
	p.sever()
	if err := bob.SetIdle(ctx, true); err != nil {
		t.Fatal(err)
	}
	p.setRefuse(false)
	next(chatv1.PresenceState_PRESENCE_STATE_AWAY)
	// The renewed watch keeps pushing.
	if err := bob.SetIdle(ctx, false); err != nil {
		t.Fatal(err)
	}
	next(chatv1.PresenceState_PRESENCE_STATE_ONLINE)
}

// TestPresenceWatchEndsWithTheMembership: a watch made while sharing a
// conversation stops pushing once that is over, while a co-member's watch
// of the same user goes on.
func TestPresenceWatchEndsWithTheMembership(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dialWith("alice", sdk.Options{DeviceID: "alice-phone"})
	bob := e.dialWith("bob", sdk.Options{DeviceID: "bob-phone"})
	carol := e.dialWith("carol", sdk.Options{DeviceID: "carol-phone", JSON: true})
	g, err := alice.CreateGroup(ctx, "presence", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*sdk.Client{bob, carol} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			// Persistence lists the group a moment after it is created.
			if _, err := c.WatchPresence(ctx, "alice"); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("%s watches alice: %v", c.UserID, err)
			}
		}
	}
	removed, err := alice.RemoveMember(ctx, g.GetConversationId(), "carol")
	if err != nil {
		t.Fatal(err)
	}
	for ev := range carol.Events() {
		if ev.GetSeq() == removed.GetSeq() {
			break
		}
	}
	listedTitle(t, carol, g.GetConversationId(), "")

	if err := alice.SetIdle(ctx, true); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case p := <-bob.PresenceUpdates():
			if p.GetUserId() != "alice" || p.GetState() != chatv1.PresenceState_PRESENCE_STATE_AWAY {
				continue
			}
		case <-time.After(10 * time.Second):
			t.Fatal("bob, a member, never saw alice away")
		}
		break
	}
	// Changes are sampled once a second; bob's came, so carol's would have.
	select {
	case p := <-carol.PresenceUpdates():
		t.Fatalf("carol, removed, was pushed %v", p)
	case <-time.After(1500 * time.Millisecond):
	}
}

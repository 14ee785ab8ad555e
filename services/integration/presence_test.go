package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// TestDeadEdgeUsersGoOffline (real stack): bob's only device is on edge 1;
// edge 1 is killed with SIGKILL, so nobody tells presence his session
// ended; he shows offline, with a last seen, within the lease (5 s in this
// cluster; 10 s by default), and online again once he reconnects to edge
// 0. Only users who share a conversation may see each other's presence.
func TestDeadEdgeUsersGoOffline(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	alice := discardEvents(c.dial(0, "alice", "alice-0"))
	discardEvents(c.dial(1, "bob", "bob-1"))
	carol := discardEvents(c.dial(0, "carol", "carol-0"))
	if _, err := alice.CreateGroup(ctx, "presence", "bob"); err != nil {
		t.Fatal(err)
	}
	state := func(who *sdk.Client, user string) *chatv1.Presence {
		t.Helper()
		// The rule reads the conversation list, which persistence fills a
		// moment after the group is created.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			ps, err := who.Presence(ctx, user)
			if err == nil && len(ps) == 1 {
				return ps[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s asks about %s: %v %v", who.UserID, user, ps, err)
			}
		}
	}
	if p := state(alice, "bob"); p.GetState() != chatv1.PresenceState_PRESENCE_STATE_ONLINE {
		t.Fatalf("bob before the kill: %v", p)
	}
	var we *wire.Error
	if _, err := carol.Presence(ctx, "bob"); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER {
		t.Fatalf("carol, who shares nothing with bob, asks: %v, want NOT_MEMBER", err)
	}

	killed := time.Now()
	c.procs["edge1"].kill9()
	for {
		p := state(alice, "bob")
		if p.GetState() == chatv1.PresenceState_PRESENCE_STATE_OFFLINE {
			took := time.Since(killed)
			if p.GetLastSeen() == nil || p.GetLastSeen().AsTime().After(killed) || killed.Sub(p.GetLastSeen().AsTime()) > 10*time.Second {
				t.Fatalf("bob offline with last seen %v, killed at %v", p.GetLastSeen().AsTime(), killed)
			}
			t.Logf("bob offline %s after edge 1 was killed (lease 5 s)", took.Round(time.Millisecond))
			if took > 10*time.Second {
				t.Fatalf("bob offline only after %s, want within 10 s", took)
			}
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("bob still %v 20 s after his edge died", p)
		}
		time.Sleep(100 * time.Millisecond)
	}

	discardEvents(c.dial(0, "bob", "bob-1"))
	if p := state(alice, "bob"); p.GetState() != chatv1.PresenceState_PRESENCE_STATE_ONLINE || p.GetLastSeen() != nil {
		t.Fatalf("bob back on edge 0: %v", p)
	}
}

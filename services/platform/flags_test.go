package platform_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// nextFlags waits for the next flags pushed to c.
func nextFlags(t *testing.T, c *sdk.Client) *chatv1.ConversationFlags {
	t.Helper()
	select {
	case f := <-c.FlagUpdates():
		return f
	case <-time.After(10 * time.Second):
		t.Fatalf("%s/%s: no flags pushed in 10s", c.UserID, c.DeviceID)
		return nil
	}
}

func flagsOf(f *chatv1.ConversationFlags) string {
	return fmt.Sprintf("%s muted=%v pinned=%v v%d", f.GetUserId(), f.GetMuted(), f.GetPinned(), f.GetVersion())
}

// listFlags returns c's conversation list as "id muted pinned" in list
// order, once persistence shows want (the list is read from the store,
// which follows the log a little behind).
func listFlags(t *testing.T, c *sdk.Client, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := c.Conversations(context.Background(), 0)
		var got []string
		for _, e := range l {
			got = append(got, fmt.Sprintf("%s muted=%v pinned=%v", e.GetConversationId(), e.GetMuted(), e.GetPinned()))
		}
		if err == nil && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's list:\n got  %v (%v)\n want %v", c.UserID, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConversationFlags: a user mutes and pins a conversation on one
// device; their other device is pushed the change and both lists show it
// (pinned first); another member is told nothing and lists nothing of it;
// non-members and bad frames get stable codes.
func TestConversationFlags(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	phone := e.dial("alice", "alice-phone", true) // protojson
	laptop := e.dial("alice", "alice-laptop", false)
	bob := e.dial("bob", "bob-phone", false)
	mallory := e.dial("mallory", "mallory-phone", false)

	team, err := phone.CreateGroup(ctx, "team", "bob")
	if err != nil {
		t.Fatal(err)
	}
	later, err := bob.CreateGroup(ctx, "later", "alice")
	if err != nil {
		t.Fatal(err)
	}
	tid, lid := team.GetConversationId(), later.GetConversationId()
	// "later" is the most recent: first until "team" is pinned.
	listFlags(t, phone.Client, []string{lid + " muted=false pinned=false", tid + " muted=false pinned=false"})

	t.Run("muted on the phone, pushed to both devices, listed on both", func(t *testing.T) {
		f, err := phone.SetMuted(ctx, tid, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := flagsOf(f); got != "alice muted=true pinned=false v1" || f.GetConversationId() != tid {
			t.Fatalf("answer %s", got)
		}
		for _, d := range []*sdk.Client{laptop.Client, phone.Client} {
			if got := flagsOf(nextFlags(t, d)); got != "alice muted=true pinned=false v1" {
				t.Fatalf("%s pushed %s", d.DeviceID, got)
			}
		}
		listFlags(t, laptop.Client, []string{lid + " muted=false pinned=false", tid + " muted=true pinned=false"})
	})

	t.Run("pinned on the laptop: first in the list, muted kept", func(t *testing.T) {
		f, err := laptop.SetPinned(ctx, tid, true)
		if err != nil || flagsOf(f) != "alice muted=true pinned=true v2" {
			t.Fatalf("pin: %v, %v", f, err)
		}
		if got := flagsOf(nextFlags(t, phone.Client)); got != "alice muted=true pinned=true v2" {
			t.Fatalf("phone pushed %s", got)
		}
		if got := flagsOf(nextFlags(t, laptop.Client)); got != "alice muted=true pinned=true v2" {
			t.Fatalf("laptop pushed %s for its own change", got)
		}
		listFlags(t, phone.Client, []string{tid + " muted=true pinned=true", lid + " muted=false pinned=false"})
		// Setting a flag to what it is changes nothing: same version.
		if f, err := phone.SetPinned(ctx, tid, true); err != nil || flagsOf(f) != "alice muted=true pinned=true v2" {
			t.Fatalf("pin again: %v, %v", f, err)
		}
	})

	t.Run("another member is told nothing and lists nothing of it", func(t *testing.T) {
		// Bob's own change goes through the same partition after alice's,
		// so had he been pushed hers, it would come first.
		f, err := bob.SetPinned(ctx, tid, true)
		if err != nil || flagsOf(f) != "bob muted=false pinned=true v1" {
			t.Fatalf("bob pins: %v, %v", f, err)
		}
		if got := flagsOf(nextFlags(t, bob.Client)); got != "bob muted=false pinned=true v1" {
			t.Fatalf("bob was pushed %s before his own flags", got)
		}
		listFlags(t, bob.Client, []string{tid + " muted=false pinned=true", lid + " muted=false pinned=false"})
		// And alice's devices are not told of bob's flags.
		if _, err := phone.SetPinned(ctx, tid, false); err != nil {
			t.Fatal(err)
		}
		if got := flagsOf(nextFlags(t, laptop.Client)); got != "alice muted=true pinned=false v3" {
			t.Fatalf("alice's laptop was pushed %s, want her own unpin", got)
		}
	})

	t.Run("a flag change is a change in the list sync of its user", func(t *testing.T) {
		_, tok, err := laptop.SyncConversations(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := phone.SetMuted(ctx, tid, false); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, _, err := laptop.SyncConversations(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(l, func(c *chatv1.Conversation) bool { return c.GetConversationId() == tid })
			if i >= 0 && !l[i].GetMuted() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the unmute is not in the sync: %v", l)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("errors have stable codes", func(t *testing.T) {
		_, err := mallory.SetMuted(ctx, tid, true)
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = mallory.SetPinned(ctx, tid, true)
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = phone.SetMuted(ctx, "0199a3c2-7a1e-7b51-9c1e-2f1f5c1d0a99", true)
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = phone.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetFlags{SetFlags: &clientv1.SetConversationFlags{ConversationId: tid}}})
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		_, err = phone.SetMuted(ctx, "", true)
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	})
}

// TestSeenBy: who has read a group message, derived from read positions:
// the author never counts, a reader counts once they read it or anything
// after, a non-member gets NOT_FOUND.
func TestSeenBy(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "alice-phone", false)
	bob := e.dial("bob", "bob-phone", true)
	carol := e.dial("carol", "carol-phone", false)
	mallory := e.dial("mallory", "mallory-phone", false)

	acc, err := alice.CreateGroup(ctx, "team", "bob", "carol", "dave")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	msg, err := alice.Send(ctx, conv, "did you see this?")
	if err != nil {
		t.Fatal(err)
	}
	seenBy := func(t *testing.T, seq uint64, want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := alice.SeenBy(ctx, conv, seq)
			if err == nil && slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("seen by at seq %d: %v (%v), want %v", seq, got, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	seenBy(t, msg.GetSeq()) // nobody but its author has
	if _, err := bob.Mark(ctx, conv, 0, msg.GetSeq()); err != nil {
		t.Fatal(err)
	}
	seenBy(t, msg.GetSeq(), "bob")
	// Carol posts: what you post you have read, up to it.
	reply, err := carol.Send(ctx, conv, "yes")
	if err != nil {
		t.Fatal(err)
	}
	seenBy(t, msg.GetSeq(), "bob", "carol")
	seenBy(t, reply.GetSeq()) // alice posted before it and has not read on
	if _, err := alice.Mark(ctx, conv, 0, reply.GetSeq()); err != nil {
		t.Fatal(err)
	}
	seenBy(t, reply.GetSeq(), "alice")
	// Any member may ask; bob sees the same.
	if got, err := bob.SeenBy(ctx, conv, msg.GetSeq()); err != nil || !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("bob asks: %v, %v", got, err)
	}

	_, err = mallory.SeenBy(ctx, conv, msg.GetSeq())
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
	_, err = alice.SeenBy(ctx, conv, 99)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND)
	_, err = alice.SeenBy(ctx, conv, 0)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
}

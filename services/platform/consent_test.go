package platform_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/parleychat/parley/services/ingest"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// TestBlockKeepsTheBlockedOutOfNewGroups: a user who blocks mallory cannot
// be put into a group by mallory, neither when she creates one nor by
// adding them later; the refusal does not say who refused. The blocker
// may still put mallory in a group of their own, and others are not held
// back by a block that is not theirs.
func TestBlockKeepsTheBlockedOutOfNewGroups(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice, mallory := e.dial("alice", "a", true), e.dial("mallory", "m", false)
	bob := e.dial("bob", "b", false)
	if err := alice.Block(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, alice.Client, "mallory")

	_, created := mallory.CreateGroup(ctx, "trap", "alice")
	wantCode(t, created, chatv1.ErrorCode_ERROR_CODE_BLOCKED)
	_, mixed := mallory.CreateGroup(ctx, "trap", "bob", "alice")
	wantCode(t, mixed, chatv1.ErrorCode_ERROR_CODE_BLOCKED)
	acc, err := mallory.CreateGroup(ctx, "ok", "bob")
	if err != nil {
		t.Fatalf("a group without the blocker: %v", err)
	}
	g := acc.GetConversationId()
	_, added := mallory.AddMember(ctx, g, "alice")
	wantCode(t, added, chatv1.ErrorCode_ERROR_CODE_BLOCKED)
	// One answer whichever way mallory tries, naming nobody: she learns
	// that someone she named will not be put in a group by her, which a
	// direct conversation's BLOCKED tells her already, and not who.
	for _, err := range []error{mixed, added} {
		if err.Error() != created.Error() {
			t.Errorf("refusals differ: %q and %q", err, created)
		}
	}
	if strings.Contains(created.Error(), "alice") {
		t.Errorf("the refusal names the blocker: %q", created)
	}
	// Nothing was made of the refused commands: the group has its two
	// members only, and mallory's list only it.
	if got := listedTitle(t, mallory.Client, g, "ok").GetMemberIds(); strings.Join(got, ",") != "mallory,bob" {
		t.Errorf("members %v, want mallory and bob", got)
	}
	if l, err := mallory.Conversations(ctx, 10); err != nil || len(l) != 1 {
		t.Errorf("mallory lists %v, %v; want only %s", l, err, g)
	}

	// Others are not held back: bob adds carol, and the blocker may put
	// mallory in a group herself.
	if _, err := bob.AddMember(ctx, g, "carol"); err != nil {
		t.Errorf("bob adds carol: %v", err)
	}
	if _, err := alice.CreateGroup(ctx, "alice's", "mallory"); err != nil {
		t.Errorf("the blocker creates a group with mallory: %v", err)
	}
	// Once unblocked, mallory may add alice.
	if err := alice.Unblock(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, alice.Client, "")
	if _, err := mallory.AddMember(ctx, g, "alice"); err != nil {
		t.Errorf("after the unblock: %v", err)
	}
}

// TestBlockedSeesTheBlockerOffline: a blocked user who shares a group
// with the blocker sees them offline, with no last seen, when asking and
// when watching, and is pushed none of their changes; a co-member who is
// not blocked sees them as they are.
func TestBlockedSeesTheBlockerOffline(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dialWith("alice", sdk.Options{DeviceID: "alice-phone"})
	bob := e.dialWith("bob", sdk.Options{DeviceID: "bob-phone"})
	mallory := e.dialWith("mallory", sdk.Options{DeviceID: "mallory-phone"})
	if _, err := bob.CreateGroup(ctx, "shared", "alice", "mallory"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// Persistence lists the group a moment after it is created.
		ps, err := mallory.Presence(ctx, "alice")
		if err == nil && len(ps) == 1 && ps[0].GetState() == chatv1.PresenceState_PRESENCE_STATE_ONLINE {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("before the block, mallory sees alice as %v, %v; want online", ps, err)
		}
	}
	if err := alice.Block(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, alice, "mallory")
	offline := func(what string, ps []*chatv1.Presence, err error) {
		t.Helper()
		if err != nil || len(ps) != 1 || ps[0].GetUserId() != "alice" || ps[0].GetState() != chatv1.PresenceState_PRESENCE_STATE_OFFLINE || ps[0].GetLastSeen() != nil {
			t.Errorf("%s: alice is %v, %v; want offline without last seen", what, ps, err)
		}
	}
	// The edge may hold mallory's view of alice's blocks for a moment.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ps, err := mallory.Presence(ctx, "alice")
		if err == nil && len(ps) == 1 && ps[0].GetState() == chatv1.PresenceState_PRESENCE_STATE_OFFLINE {
			break
		}
		if time.Now().After(deadline) {
			offline("get_presence", ps, err)
			t.FailNow()
		}
	}
	ps, err := mallory.WatchPresence(ctx, "alice", "bob")
	if err != nil || len(ps) != 2 {
		t.Fatalf("watch: %v, %v", ps, err)
	}
	offline("watch_presence", ps[:1], nil)
	if ps[1].GetState() != chatv1.PresenceState_PRESENCE_STATE_ONLINE {
		t.Errorf("bob is %v, want online", ps[1])
	}
	if now, err := bob.WatchPresence(ctx, "alice"); err != nil || now[0].GetState() != chatv1.PresenceState_PRESENCE_STATE_ONLINE {
		t.Fatalf("bob sees alice as %v, %v; want online", now, err)
	}

	// alice goes away, then bob does: bob is pushed alice's change, and
	// mallory bob's but never alice's (changes are pushed in order).
	if err := alice.SetIdle(ctx, true); err != nil {
		t.Fatal(err)
	}
	for p := range bob.PresenceUpdates() {
		if p.GetUserId() == "alice" && p.GetState() == chatv1.PresenceState_PRESENCE_STATE_AWAY {
			break
		}
	}
	if err := bob.SetIdle(ctx, true); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case p := <-mallory.PresenceUpdates():
			if p.GetUserId() == "alice" {
				t.Errorf("mallory was pushed alice's change %v", p)
			}
			done = p.GetUserId() == "bob" && p.GetState() == chatv1.PresenceState_PRESENCE_STATE_AWAY
		case <-timeout:
			t.Fatal("mallory was never pushed bob's change")
		}
	}
}

// TestOneAnswerForMissingAndForeign: for a conversation one is not in,
// every frame naming it answers exactly as for one that does not exist,
// so a direct conversation's id, which anyone can derive from the pair,
// does not tell who talks to whom.
func TestOneAnswerForMissingAndForeign(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice, bob := e.dial("alice", "a", true), e.dial("bob", "b", false)
	mallory := &authzActor{name: "mallory", dev: e.dial("mallory", "m", true)}
	acc, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	talk := acc.GetConversationId()
	if talk != ingest.DirectID("alice", "bob") {
		t.Fatalf("direct id %s, want the pair's", talk)
	}
	sent, err := bob.Send(ctx, talk, "hi")
	if err != nil {
		t.Fatal(err)
	}
	waitHistory(t, alice.Client, talk, sent.GetSeq())
	exists := &authzScene{group: talk, channel: talk, bobMsg: sent.GetSeq(), carolMsg: sent.GetSeq(), carolMsgID: fresh(),
		invite: "guess-1111111111111111", revoked: "guess-2222222222222222"}
	missing := &authzScene{group: ingest.DirectID("alice", "nobody"), bobMsg: sent.GetSeq(), carolMsg: sent.GetSeq(), carolMsgID: fresh(),
		invite: exists.invite, revoked: exists.revoked}
	missing.channel = missing.group
	answer := func(s *authzScene, r authzRow) string {
		resp, err := mallory.dev.Do(ctx, r.build(s, mallory))
		var we *wire.Error
		if !errors.As(err, &we) {
			// Frames naming no conversation (ping, blocks, a new group)
			// answer alike, which is all this compares.
			return outcome(resp, err)
		}
		return we.Code.String() + ": " + we.Message
	}
	for _, r := range authzRows() {
		if r.check != nil && r.frame == "list_conversations" {
			continue // names no conversation
		}
		name := string(r.frame)
		if r.what != "" {
			name += " " + r.what
		}
		t.Run(name, func(t *testing.T) {
			got, want := answer(exists, r), answer(missing, r)
			if got != want {
				t.Errorf("alice and bob's conversation answers %q, a missing one %q", got, want)
			}
		})
	}
}

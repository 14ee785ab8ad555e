package platform_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/services/platform"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// nothingMore fails if d gets any event of conv within a short while: what
// a removed member must see after their removal.
func (d *device) nothingMore(t *testing.T, conv string) {
	t.Helper()
	timeout := time.After(500 * time.Millisecond)
	for {
		select {
		case ev := <-d.Events():
			if ev.GetConversationId() == conv {
				t.Fatalf("%s got event %d of %s after leaving it: %v", d.UserID, ev.GetSeq(), conv, ev)
			}
		case <-timeout:
			return
		}
	}
}

// listedTitle waits until c's conversation list shows conv with title, or
// (title "") does not show conv at all.
func listedTitle(t *testing.T, c *sdk.Client, conv, title string) *chatv1.Conversation {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := c.Conversations(context.Background(), 100)
		var found *chatv1.Conversation
		for _, x := range l {
			if x.GetConversationId() == conv {
				found = x
			}
		}
		if err == nil && (title == "" && found == nil || found != nil && found.GetTitle() == title) {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("list of %s: %v %v, want %s titled %q", c.UserID, l, err, conv, title)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGroupsEndToEnd drives groups and roles through the WebSocket
// protocol with the SDK (alice speaks protojson, the others protobuf):
// the authorisation matrix of every new command, membership events every
// member sees (the removed member their own removal, then nothing), the
// conversation list and history access after a removal.
func TestGroupsEndToEnd(t *testing.T) {
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), MaxMembers: 4})
	defer stop()
	ctx := tctx(t)
	alice, bob, carol := e.dial("alice", "a", true), e.dial("bob", "b", false), e.dial("carol", "c", false)
	dave, mallory := e.dial("dave", "d", false), e.dial("mallory", "m", false)
	var (
		notMember = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND // what a missing conversation answers
		denied    = chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED
		notFound  = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND
		invalid   = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
		admin     = chatv1.MemberRole_MEMBER_ROLE_ADMIN
	)
	must := func(a *clientv1.Accepted, err error) uint64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a.GetSeq()
	}
	acc, err := alice.CreateGroup(ctx, "team", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	g := acc.GetConversationId()

	// Not a member: every command is refused, nothing is written.
	_, err = mallory.RemoveMember(ctx, g, "bob")
	wantCode(t, err, notMember)
	_, err = mallory.Rename(ctx, g, "mine")
	wantCode(t, err, notMember)
	_, err = mallory.MuteMember(ctx, g, "bob", true)
	wantCode(t, err, notMember)
	_, err = mallory.SetRole(ctx, g, "bob", admin)
	wantCode(t, err, notMember)
	_, err = mallory.TransferOwnership(ctx, g, "mallory")
	wantCode(t, err, notMember)
	_, _, err = mallory.CreateInvite(ctx, g)
	wantCode(t, err, notMember)
	_, err = mallory.Leave(ctx, g)
	wantCode(t, err, notMember)
	// A member without a role.
	_, err = bob.RemoveMember(ctx, g, "carol")
	wantCode(t, err, denied)
	_, err = bob.Rename(ctx, g, "bob's")
	wantCode(t, err, denied)
	_, err = bob.MuteMember(ctx, g, "carol", true)
	wantCode(t, err, denied)
	_, err = bob.SetRole(ctx, g, "carol", admin)
	wantCode(t, err, denied)
	_, _, err = bob.CreateInvite(ctx, g)
	wantCode(t, err, denied)
	// The owner's own limits, and bad input.
	_, err = alice.Leave(ctx, g)
	wantCode(t, err, denied)
	_, err = alice.RemoveMember(ctx, g, "erin")
	wantCode(t, err, notFound)
	_, err = alice.RemoveMember(ctx, g, "alice")
	wantCode(t, err, invalid)
	_, err = alice.RemoveMember(ctx, g, "not a user")
	wantCode(t, err, invalid)
	_, err = alice.Rename(ctx, g, "  ")
	wantCode(t, err, invalid)
	_, err = alice.JoinByInvite(ctx, g, "short")
	wantCode(t, err, invalid)

	must(alice.SetRole(ctx, g, "bob", admin)) // 2
	_, err = bob.RemoveMember(ctx, g, "alice")
	wantCode(t, err, denied)
	must(bob.MuteMember(ctx, g, "carol", true)) // 3
	_, err = carol.Send(ctx, g, "can I speak?")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MUTED)
	must(bob.MuteMember(ctx, g, "carol", false)) // 4
	must(carol.Send(ctx, g, "thanks"))           // 5

	code, a, err := alice.CreateInvite(ctx, g) // 6
	if err != nil || a.GetSeq() != 6 {
		t.Fatalf("invite: %v %v", a, err)
	}
	_, err = mallory.JoinByInvite(ctx, g, "wrong-code-0000000")
	wantCode(t, err, notFound)
	must(dave.JoinByInvite(ctx, g, code)) // 7: four members, the limit
	_, err = mallory.JoinByInvite(ctx, g, code)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL)
	must(alice.Rename(ctx, g, "renamed"))   // 8
	must(bob.RemoveMember(ctx, g, "carol")) // 9
	must(alice.RevokeInvite(ctx, g, code))  // 10
	_, err = mallory.JoinByInvite(ctx, g, code)
	wantCode(t, err, notFound)
	must(alice.TransferOwnership(ctx, g, "bob")) // 11
	must(alice.Leave(ctx, g))                    // 12
	must(bob.Send(ctx, g, "my group now"))       // 13

	// Every member sees every membership event in order; the removed and
	// the one who left see up to their own departure, then nothing.
	bodies := func(evs []*chatv1.Event) string {
		s := ""
		for _, ev := range evs {
			s += fmt.Sprintf("%d:%T ", ev.GetSeq(), ev.GetBody())
		}
		return s
	}
	bobSaw := bodies(bob.upTo(t, g, 13))
	for i, want := range []string{"ConversationCreated", "RoleChanged", "MemberMuted", "MemberMuted", "MessagePosted", "InviteCreated",
		"MemberJoined", "ConversationRenamed", "MemberRemoved", "InviteRevoked", "OwnershipTransferred", "MemberLeft", "MessagePosted"} {
		if w := fmt.Sprintf("%d:*chatv1.Event_%s ", i+1, want); !contains(bobSaw, w) {
			t.Fatalf("bob saw %s; missing %s", bobSaw, w)
		}
	}
	if got := carol.upTo(t, g, 9); got[len(got)-1].GetMemberRemoved().GetUserId() != "carol" {
		t.Fatalf("carol's last event %v, want her removal", got[len(got)-1])
	}
	alice.upTo(t, g, 12)
	dave.upTo(t, g, 13)
	carol.nothingMore(t, g)
	alice.nothingMore(t, g)

	// What persistence shows: the title, the members, the roles, and no
	// access for those who are gone.
	sum := listedTitle(t, dave.Client, g, "renamed")
	waitHistory(t, dave.Client, g, 13)
	sum = listedTitle(t, dave.Client, g, "renamed")
	if fmt.Sprintf("%v %s %v", sum.GetMemberIds(), sum.GetOwnerId(), sum.GetAdminIds()) != "[bob dave] bob []" {
		t.Fatalf("summary %v", sum)
	}
	listedTitle(t, carol.Client, g, "")
	listedTitle(t, alice.Client, g, "")
	_, err = carol.History(ctx, &clientv1.GetHistory{ConversationId: g})
	wantCode(t, err, notMember)
	_, err = carol.Send(ctx, g, "still there?")
	wantCode(t, err, notMember)
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestChannelsEndToEnd: only the owner and admins post, anyone follows a
// public channel, a private one is joined by invite, unfollow is Leave.
func TestChannelsEndToEnd(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice, bob, carol := e.dial("alice", "a", false), e.dial("bob", "b", true), e.dial("carol", "c", false)
	denied := chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED

	acc, err := alice.CreateChannel(ctx, "news", true)
	if err != nil {
		t.Fatal(err)
	}
	ch := acc.GetConversationId()
	if a, err := bob.Follow(ctx, ch); err != nil || a.GetSeq() != 2 {
		t.Fatalf("follow: %v %v", a, err)
	}
	_, err = bob.Follow(ctx, ch)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS)
	_, err = bob.Send(ctx, ch, "may I?")
	wantCode(t, err, denied)
	_, err = bob.AddMember(ctx, ch, "carol")
	wantCode(t, err, denied)
	if _, err := alice.Send(ctx, ch, "headline"); err != nil {
		t.Fatal(err)
	}
	if got := bob.upTo(t, ch, 3); got[len(got)-1].GetMessagePosted().GetText() != "headline" {
		t.Fatalf("bob got %v", got)
	}
	if _, err := bob.Leave(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, ch, "second"); err != nil {
		t.Fatal(err)
	}
	bob.upTo(t, ch, 4)
	bob.nothingMore(t, ch)

	acc, err = alice.CreateChannel(ctx, "private", false)
	if err != nil {
		t.Fatal(err)
	}
	pc := acc.GetConversationId()
	// To a non-member a private channel is not there: it answers as a
	// missing one.
	_, err = carol.Follow(ctx, pc)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
	code, _, err := alice.CreateInvite(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinByInvite(ctx, pc, code); err != nil {
		t.Fatal(err)
	}
	_, err = carol.Send(ctx, pc, "follower")
	wantCode(t, err, denied)
	sum := listedTitle(t, carol.Client, pc, "private")
	if sum.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL || sum.GetPublic() || sum.GetOwnerId() != "alice" {
		t.Fatalf("channel summary %v", sum)
	}
}

// TestBlocksEndToEnd: a block stops both users of a direct conversation,
// existing or not, and the blocked user is told nothing but the refusal.
func TestBlocksEndToEnd(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice, bob, carol := e.dial("alice", "a", true), e.dial("bob", "b", false), e.dial("carol", "c", false)
	blocked := chatv1.ErrorCode_ERROR_CODE_BLOCKED

	acc, err := bob.OpenDirect(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	d := acc.GetConversationId()
	if _, err := bob.Send(ctx, d, "hi alice"); err != nil {
		t.Fatal(err)
	}
	bob.upTo(t, d, 2)
	if err := alice.Block(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Block(ctx, "bob"); err != nil {
		t.Fatalf("blocking twice: %v", err)
	}
	_, err = bob.Send(ctx, d, "hello?")
	wantCode(t, err, blocked)
	_, err = bob.OpenDirect(ctx, "alice")
	wantCode(t, err, blocked)
	_, err = alice.Send(ctx, d, "from the blocker")
	wantCode(t, err, blocked)
	// Bob is told nothing: no event, no frame, no seq taken.
	bob.nothingMore(t, d)
	waitHistory(t, bob.Client, d, 2)
	if err := alice.Unblock(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if a, err := bob.Send(ctx, d, "back"); err != nil || a.GetSeq() != 3 {
		t.Fatalf("after the unblock: %v %v", a, err)
	}

	// Someone alice never talked to.
	if err := alice.Block(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	_, err = carol.OpenDirect(ctx, "alice")
	wantCode(t, err, blocked)
	_, err = alice.OpenDirect(ctx, "carol")
	wantCode(t, err, blocked)
	listedTitle(t, carol.Client, acc.GetConversationId(), "") // nothing listed
	if l, err := carol.Conversations(ctx, 10); err != nil || len(l) != 0 {
		t.Fatalf("carol lists %v, %v", l, err)
	}
	err = alice.Block(ctx, "alice")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	if err := alice.Unblock(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if a, err := carol.OpenDirect(ctx, "alice"); err != nil || a.GetSeq() != 1 {
		t.Fatalf("open after the unblock: %v %v", a, err)
	}
}

// waitBlocks waits until c's list of blocks reads want (comma separated):
// the list is read from persistence, which follows the log by a moment.
func waitBlocks(t *testing.T, c *sdk.Client, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := c.Blocks(context.Background())
		if err == nil && strings.Join(got, ",") == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocks = %q, %v; want %q", got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestListBlocks(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	// Alice blocks from her phone (binary frames) and lists from her
	// laptop (protojson frames).
	phone, laptop := e.dial("alice", "phone", false), e.dial("alice", "laptop", true)
	bob, carol := e.dial("bob", "b", true), e.dial("carol", "c", false)
	if l, err := laptop.Blocks(ctx); err != nil || len(l) != 0 {
		t.Fatalf("before any block: %v, %v; want an empty list", l, err)
	}
	if _, err := bob.OpenDirect(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"carol", "bob"} {
		if err := phone.Block(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	waitBlocks(t, laptop.Client, "bob,carol")
	if err := phone.Unblock(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, laptop.Client, "bob")
	// Bob blocks carol too, and unblocks her: his list is his own.
	if err := bob.Block(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, bob.Client, "carol")
	if err := bob.Unblock(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, bob.Client, "")
	// Alice's list has settled (and bob's after it, in the same store):
	// neither the blocked nor anyone else sees her block.
	waitBlocks(t, laptop.Client, "bob")
	for _, c := range []*device{bob, carol} {
		if l, err := c.Blocks(ctx); err != nil || len(l) != 0 {
			t.Fatalf("a user who blocks nobody lists %v, %v", l, err)
		}
	}
	if l, err := phone.Blocks(ctx); err != nil || strings.Join(l, ",") != "bob" {
		t.Fatalf("the blocking device lists %v, %v", l, err)
	}
}

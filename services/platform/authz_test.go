package platform_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// notConversationScoped are the client frames the authorisation matrix
// leaves out, each with why: they name no conversation, so there is no
// membership to check.
var notConversationScoped = map[protoreflect.Name]string{
	"authenticate": "opens the connection; a second one is INVALID_ARGUMENT (TestBadInput)",
	"ping":         "a round trip through the edge only",
	"set_idle":     "the caller's own presence",
	"block_user":   "names a user, not a conversation; what a block stops is TestBlocksEndToEnd",
	"unblock_user": "names a user, not a conversation",
	"list_blocks":  "takes no argument: it lists the caller's own blocks, so there is no one else's to ask for (TestListBlocks)",
}

// authzScene is what the matrix runs against: a group with an owner
// (alice), a member (bob) and a removed member (carol), and a private
// channel; mallory was never in either.
type authzScene struct {
	group, channel string
	// bobMsg and carolMsg are messages of bob and of carol (posted while
	// a member, with a 👍 of hers on it); carolMsgID is its client id.
	bobMsg, carolMsg uint64
	carolMsgID       string
	// invite stays valid throughout; revoked was revoked before.
	invite, revoked string
}

// authzActor is a user outside the group.
type authzActor struct {
	name string
	dev  *device
	// token is a sync token the actor got before the rows ran (for carol,
	// while still a member).
	token string
}

// authzRow is one frame sent by each actor. want is the error code
// expected from both; check, when set, replaces the code check for
// frames that answer without an error.
type authzRow struct {
	frame protoreflect.Name
	what  string
	build func(s *authzScene, a *authzActor) *clientv1.ClientFrame
	want  chatv1.ErrorCode
	check func(t *testing.T, s *authzScene, a *authzActor, resp *clientv1.ServerFrame, err error)
}

func fresh() string { return sdk.NewClientMsgID() }

func authzRows() []authzRow {
	var (
		notMember = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND // one answer with a missing conversation
		notFound  = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND
		// presence is of users, not conversations: one who shares none
		// with the caller is refused whether or not they exist.
		noPresence = chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER
	)
	// own picks the message the actor is most entitled to touch: carol's
	// own, which she may edit and delete while a member.
	own := func(s *authzScene, a *authzActor) uint64 {
		if a.name == "carol" {
			return s.carolMsg
		}
		return s.bobMsg
	}
	noGroup := func(t *testing.T, s *authzScene, a *authzActor, resp *clientv1.ServerFrame, err error) {
		t.Helper()
		if err != nil || resp.GetConversations() == nil {
			t.Fatalf("list = %v, %v", resp, err)
		}
		for _, c := range resp.GetConversations().GetConversations() {
			if id := c.GetConversationId(); id == s.group || id == s.channel {
				t.Errorf("%s's list shows %s: %v", a.name, id, c)
			}
		}
	}
	return []authzRow{
		{frame: "send_message", what: "text", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
				ConversationId: s.group, ClientMsgId: fresh(), Text: "let me in"}}})
		}},
		{frame: "send_message", what: "rich: reply, mention, attachment", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
				ConversationId: s.group, ClientMsgId: fresh(), Text: "look", ReplyToSeq: s.bobMsg, MentionIds: []string{"alice"},
				Attachments: []*chatv1.Attachment{{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_FILE, Url: "https://files.example/x.pdf"}}}}})
		}},
		{frame: "send_message", what: "resend of a client_msg_id", build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			// carol's is the id of the message she posted as a member; a
			// retry of it must get its original answer, and write nothing
			// (which the scene's final checks see).
			id := s.carolMsgID
			if a.name != "carol" {
				id = fresh()
			}
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
				ConversationId: s.group, ClientMsgId: id, Text: "mine"}}})
		}, check: func(t *testing.T, s *authzScene, a *authzActor, resp *clientv1.ServerFrame, err error) {
			t.Helper()
			if a.name != "carol" {
				wantCodeE(t, err, notMember)
				return
			}
			if acc := resp.GetAccepted(); err != nil || !acc.GetDuplicate() || acc.GetSeq() != s.carolMsg {
				t.Errorf("carol's resend = %v, %v; want the original accepted (duplicate, seq %d)", resp, err, s.carolMsg)
			}
		}},
		{frame: "create_conversation", what: "a group with the group's id", want: chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
				ClientMsgId: fresh(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "mine now", ConversationId: s.group}}})
		}},
		{frame: "add_member", what: "themselves", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_AddMember{AddMember: &clientv1.AddMember{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: a.name}}})
		}},
		{frame: "list_conversations", what: "everything", check: noGroup, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{Limit: 200}}})
		}},
		{frame: "list_conversations", what: "sync since an earlier token", check: noGroup, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{ChangedSince: a.token}}})
		}},
		{frame: "get_history", what: "newest", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetHistory{GetHistory: &clientv1.GetHistory{ConversationId: s.group}}})
		}},
		{frame: "get_history", what: "forward from 0", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetHistory{GetHistory: &clientv1.GetHistory{ConversationId: s.group, AfterSeq: proto.Uint64(0)}}})
		}},
		{frame: "mark", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Mark{Mark: &clientv1.Mark{ConversationId: s.group, DeliveredSeq: s.bobMsg, ReadSeq: s.bobMsg}}})
		}},
		{frame: "get_receipts", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetReceipts{GetReceipts: &clientv1.GetReceipts{ConversationId: s.group}}})
		}},
		{frame: "typing", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Typing{Typing: &clientv1.SetTyping{ConversationId: s.group}}})
		}},
		{frame: "get_presence", what: "of the group's owner", want: noPresence, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetPresence{GetPresence: &clientv1.GetPresence{UserIds: []string{"alice"}}}})
		}},
		{frame: "watch_presence", what: "of the group's owner", want: noPresence, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_WatchPresence{WatchPresence: &clientv1.WatchPresence{UserIds: []string{"alice"}}}})
		}},
		{frame: "remove_member", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RemoveMember{RemoveMember: &clientv1.RemoveMember{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: "bob"}}})
		}},
		{frame: "leave", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Leave{Leave: &clientv1.LeaveConversation{ConversationId: s.group, ClientMsgId: fresh()}}})
		}},
		{frame: "set_role", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetRole{SetRole: &clientv1.SetMemberRole{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN}}})
		}},
		{frame: "transfer_ownership", what: "to themselves", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_TransferOwnership{TransferOwnership: &clientv1.TransferOwnership{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: a.name}}})
		}},
		{frame: "mute_member", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_MuteMember{MuteMember: &clientv1.MuteMember{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: "bob", Muted: true}}})
		}},
		{frame: "rename", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Rename{Rename: &clientv1.RenameConversation{
				ConversationId: s.group, ClientMsgId: fresh(), Title: "taken over"}}})
		}},
		{frame: "create_invite", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateInvite{CreateInvite: &clientv1.CreateInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: "outsider-code-" + a.name + "-0123456789"}}})
		}},
		{frame: "revoke_invite", what: "a valid invite", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RevokeInvite{RevokeInvite: &clientv1.RevokeInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: s.invite}}})
		}},
		{frame: "join_by_invite", what: "a revoked code", want: notFound, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_JoinByInvite{JoinByInvite: &clientv1.JoinByInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: s.revoked}}})
		}},
		{frame: "join_by_invite", what: "a guessed code", want: notFound, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_JoinByInvite{JoinByInvite: &clientv1.JoinByInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: "guess-0000000000000000"}}})
		}},
		{frame: "follow", what: "a private channel", want: notFound, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Follow{Follow: &clientv1.FollowChannel{ConversationId: s.channel, ClientMsgId: fresh()}}})
		}},
		{frame: "edit_message", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_EditMessage{EditMessage: &clientv1.EditMessage{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: own(s, a), Text: "rewritten"}}})
		}},
		{frame: "delete_message", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_DeleteMessage{DeleteMessage: &clientv1.DeleteMessage{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: own(s, a)}}})
		}},
		{frame: "react", what: "add", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_React{React: &clientv1.React{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: s.bobMsg, Emoji: "🔥"}}})
		}},
		{frame: "react", what: "remove carol's 👍", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_React{React: &clientv1.React{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: s.carolMsg, Emoji: "👍", Remove: true}}})
		}},
		{frame: "set_flags", what: "mute and pin", want: notMember, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetFlags{SetFlags: &clientv1.SetConversationFlags{
				ConversationId: s.group, Muted: proto.Bool(true), Pinned: proto.Bool(true)}}})
		}},
	}
}

// wantCodeE is wantCode that lets the other rows run.
func wantCodeE(t *testing.T, err error, code chatv1.ErrorCode) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != code {
		t.Errorf("err = %v, want %v", err, code)
	}
}

// TestAuthorisationMatrix sends every conversation-scoped client frame,
// over the WebSocket protocol, as a user who was never a member (mallory,
// protojson) and as one who was removed (carol, protobuf), and checks the
// exact answer; then that nothing changed: no event logged or pushed, the
// members, roles and title as they were, no receipt, typing indicator or
// presence pushed.
func TestAuthorisationMatrix(t *testing.T) {
	rows := authzRows()
	covered := map[protoreflect.Name]bool{}
	for _, r := range rows {
		covered[r.frame] = true
	}
	fields := (&clientv1.ClientFrame{}).ProtoReflect().Descriptor().Oneofs().ByName("frame").Fields()
	for i := range fields.Len() {
		name := fields.Get(i).Name()
		_, exempt := notConversationScoped[name]
		switch {
		case !covered[name] && !exempt:
			t.Errorf("client frame %s (%d) has no row in the authorisation matrix: add one, or list it in notConversationScoped with why", name, fields.Get(i).Number())
		case covered[name] && exempt:
			t.Errorf("client frame %s is both in the matrix and exempt from it", name)
		}
		delete(notConversationScoped, name)
	}
	for name := range notConversationScoped {
		t.Errorf("notConversationScoped names %s, which is no client frame", name)
	}

	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice, bob := e.dial("alice", "a", true), e.dial("bob", "b", false)
	carol := &authzActor{name: "carol", dev: e.dial("carol", "c", false)}
	mallory := &authzActor{name: "mallory", dev: e.dial("mallory", "m", true)}
	s := &authzScene{carolMsgID: fresh()}
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
	s.group = acc.GetConversationId()
	s.bobMsg = must(bob.Send(ctx, s.group, "from bob"))
	s.carolMsg = must(carol.dev.SendWithID(ctx, s.group, s.carolMsgID, "from carol"))
	must(carol.dev.React(ctx, s.group, s.carolMsg, "👍"))
	// Typing as a member leaves carol in the edge's member cache of the
	// group, which must not let her type once removed.
	if err := carol.dev.SetTyping(ctx, s.group, false); err != nil {
		t.Fatal(err)
	}
	if s.invite, _, err = alice.CreateInvite(ctx, s.group); err != nil {
		t.Fatal(err)
	}
	if s.revoked, _, err = alice.CreateInvite(ctx, s.group); err != nil {
		t.Fatal(err)
	}
	must(alice.RevokeInvite(ctx, s.group, s.revoked))
	if _, carol.token, err = carol.dev.SyncConversations(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, mallory.token, err = mallory.dev.SyncConversations(ctx, ""); err != nil {
		t.Fatal(err)
	}
	removed := must(alice.RemoveMember(ctx, s.group, "carol"))
	acc, err = alice.CreateChannel(ctx, "private", false)
	if err != nil {
		t.Fatal(err)
	}
	s.channel = acc.GetConversationId()

	// The baseline, once every service has taken the removal in: carol
	// got it, persistence lists the group without her and the channel.
	if got := carol.dev.upTo(t, s.group, removed); got[len(got)-1].GetMemberRemoved().GetUserId() != "carol" {
		t.Fatalf("carol's last event %v, want her removal", got[len(got)-1])
	}
	listedTitle(t, carol.dev.Client, s.group, "")
	waitHistory(t, alice.Client, s.group, removed)
	// The channel may sit in another partition, stored a moment later.
	waitHistory(t, alice.Client, s.channel, 1)
	bob.upTo(t, s.group, removed)
	before := summaries(t, alice.Client, s.group, s.channel)
	receiptsBefore := othersReceipts(t, alice.Client, s.group, "carol", "mallory")
	drainEphemeral(bob.Client)

	for _, r := range rows {
		for _, a := range []*authzActor{mallory, carol} {
			name := string(r.frame)
			if r.what != "" {
				name += " " + r.what
			}
			t.Run(name+"/"+a.name, func(t *testing.T) {
				resp, err := a.dev.Do(ctx, r.build(s, a))
				if r.check != nil {
					r.check(t, s, a, resp, err)
					return
				}
				wantCodeE(t, err, r.want)
			})
		}
	}

	t.Run("nothing changed", func(t *testing.T) {
		// Had a row logged anything, the next event would not be at
		// removed+1, and bob would have been pushed it first.
		sentinel := must(alice.Send(ctx, s.group, "sentinel"))
		if sentinel != removed+1 {
			t.Errorf("the next event is seq %d, want %d: a refused frame logged something", sentinel, removed+1)
		}
		if got := bob.upTo(t, s.group, sentinel); len(got) != 1 || got[0].GetMessagePosted().GetText() != "sentinel" {
			t.Errorf("bob was pushed %v, want only the sentinel", got)
		}
		waitHistory(t, alice.Client, s.group, sentinel)
		p, err := alice.History(ctx, &clientv1.GetHistory{ConversationId: s.group, AfterSeq: proto.Uint64(0), Limit: 200})
		if err != nil || uint64(len(p.GetEvents())) != sentinel {
			t.Errorf("history %v, %v: want %d events", p, err, sentinel)
		}
		after := summaries(t, alice.Client, s.group, s.channel)
		for id, b := range before {
			if a := after[id]; a != b {
				t.Errorf("conversation %s was %s, is %s", id, b, a)
			}
		}
		if got := othersReceipts(t, alice.Client, s.group, "carol", "mallory"); got != receiptsBefore {
			t.Errorf("receipts of carol and mallory were %s, are %s", receiptsBefore, got)
		}
		// Bob's typing indicator shows that earlier pushes have arrived:
		// the edge forwards them in order.
		if err := alice.SetTyping(ctx, s.group, false); err != nil {
			t.Fatal(err)
		}
		for {
			ind := nextTyping(t, bob.Client)
			if ind.GetUserId() == "alice" {
				break
			}
			t.Errorf("bob was pushed a typing indicator of %s", ind.GetUserId())
		}
		for _, c := range []*sdk.Client{bob.Client, mallory.dev.Client, carol.dev.Client} {
			for _, pushed := range drainEphemeral(c) {
				t.Errorf("%s was pushed %s", c.UserID, pushed)
			}
		}
	})
}

// summaries is what alice's list shows of the conversations: members,
// owner, admins, muted members and title.
func summaries(t *testing.T, c *sdk.Client, ids ...string) map[string]string {
	t.Helper()
	l, err := c.Conversations(context.Background(), 200)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, cv := range l {
		if slices.Contains(ids, cv.GetConversationId()) {
			out[cv.GetConversationId()] = fmt.Sprintf("members %v owner %s admins %v muted %v title %q public %v",
				cv.GetMemberIds(), cv.GetOwnerId(), cv.GetAdminIds(), cv.GetMutedIds(), cv.GetTitle(), cv.GetPublic())
		}
	}
	if len(out) != len(ids) {
		t.Fatalf("alice lists %v, want all of %v", out, ids)
	}
	return out
}

// othersReceipts prints the positions of users in conv.
func othersReceipts(t *testing.T, c *sdk.Client, conv string, users ...string) string {
	t.Helper()
	rs, err := c.Receipts(context.Background(), conv)
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, r := range rs {
		if slices.Contains(users, r.GetUserId()) {
			s += fmt.Sprintf("%s/%s:%d/%d ", r.GetUserId(), r.GetDeviceId(), r.GetDeliveredSeq(), r.GetReadSeq())
		}
	}
	return s
}

func nextTyping(t *testing.T, c *sdk.Client) *chatv1.Typing {
	t.Helper()
	select {
	case ind := <-c.Typing():
		return ind
	case <-time.After(10 * time.Second):
		t.Fatalf("%s got no typing indicator", c.UserID)
		return nil
	}
}

// drainEphemeral empties c's receipt, typing and presence pushes and
// returns them.
func drainEphemeral(c *sdk.Client) []string {
	var out []string
	for {
		select {
		case r := <-c.ReceiptUpdates():
			out = append(out, "receipt "+r.String())
		case ind := <-c.Typing():
			out = append(out, "typing "+ind.String())
		case p := <-c.PresenceUpdates():
			out = append(out, "presence "+p.String())
		default:
			return out
		}
	}
}

package platform_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// The matrix's columns: who sends each frame. A member (bob) and a blocked
// user (dave, a member the owner blocks) act in a fresh scene per row, so
// that what one row changes (a leave, a delete) does not decide the next;
// a non-member (mallory, protojson), a removed member (carol, protobuf)
// and an expired token act in one scene, after which nothing may have
// changed.
const (
	colMember    = "member"
	colNonMember = "non-member"
	colRemoved   = "removed member"
	colBlocked   = "blocked user"
	colExpired   = "expired token"
)

var authzColumns = []string{colMember, colNonMember, colRemoved, colBlocked, colExpired}

// authzScene is what a row runs against: a group owned by alice with
// bob, dave (whom alice blocks) and carol (removed in the shared scene),
// and a private channel of alice's; mallory was never in either, and
// erin (in no scene) blocks dave.
type authzScene struct {
	group, channel string
	// bobMsg, carolMsg and daveMsg are their messages (carol's with a 👍
	// of hers on it); the *ID fields are their client ids.
	bobMsg, carolMsg, daveMsg       uint64
	bobMsgID, carolMsgID, daveMsgID string
	// invite stays valid throughout; revoked was revoked before.
	invite, revoked string
	// token is a valid token of alice's, for a second authenticate.
	token string
}

// authzActor is who sends a row's frame.
type authzActor struct {
	name string
	dev  *device
	// token is a sync token the actor got before the rows ran (for carol,
	// while still a member).
	token string
}

// authzRow is one frame and what each column answers: "ok" for an
// answer that is no error (with ": online" or ": offline" for presence,
// the state the owner is shown in), else the error code without its
// ERROR_CODE_ prefix. check, when set, looks further at an "ok".
type authzRow struct {
	frame protoreflect.Name
	what  string
	build func(s *authzScene, a *authzActor) *clientv1.ClientFrame
	want  map[string]string
	check func(t *testing.T, col string, s *authzScene, a *authzActor, resp *clientv1.ServerFrame)
}

// cells is a row's answers: one for those in the group (the member and
// the blocked user), one for those outside (never in it, or removed),
// and TOKEN_EXPIRED for the expired token, whose frame is never read;
// then any column set apart, in column/answer pairs.
func cells(in, out string, except ...string) map[string]string {
	m := map[string]string{colMember: in, colBlocked: in, colNonMember: out, colRemoved: out, colExpired: "TOKEN_EXPIRED"}
	for i := 0; i+1 < len(except); i += 2 {
		m[except[i]] = except[i+1]
	}
	return m
}

func fresh() string { return sdk.NewClientMsgID() }

func authzRows() []authzRow {
	const (
		ok       = "ok"
		notFound = "NOT_FOUND" // a conversation one is not in answers as a missing one
		denied   = "PERMISSION_DENIED"
		exists   = "ALREADY_EXISTS"
		// presence is of users, not conversations: one who shares none
		// with the caller is refused whether or not they exist.
		noPresence = "NOT_MEMBER"
	)
	// own picks the message the actor is most entitled to touch: their
	// own, which they may edit and delete while a member.
	own := func(s *authzScene, a *authzActor) uint64 {
		switch a.name {
		case "carol":
			return s.carolMsg
		case "dave":
			return s.daveMsg
		}
		return s.bobMsg
	}
	inList := func(t *testing.T, col string, s *authzScene, a *authzActor, resp *clientv1.ServerFrame) {
		t.Helper()
		listed := false
		for _, c := range resp.GetConversations().GetConversations() {
			switch c.GetConversationId() {
			case s.group:
				listed = true
			case s.channel:
				t.Errorf("%s's list shows the private channel %v", a.name, c)
			}
		}
		if want := col == colMember || col == colBlocked; listed != want {
			t.Errorf("%s's list shows the group: %v, want %v (%v)", a.name, listed, want, resp)
		}
	}
	return []authzRow{
		{frame: "authenticate", what: "again", want: cells("INVALID_ARGUMENT", "INVALID_ARGUMENT"), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: s.token}}}
		}},
		{frame: "refresh_token", what: "the owner's token", want: cells(denied, denied), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RefreshToken{RefreshToken: &clientv1.RefreshToken{Token: s.token}}}
		}},
		{frame: "ping", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}}
		}},
		{frame: "set_idle", what: "not idle", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetIdle{SetIdle: &clientv1.SetIdle{Idle: false}}}
		}},
		{frame: "send_message", what: "text", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
				ConversationId: s.group, ClientMsgId: fresh(), Text: "let me in"}}})
		}},
		{frame: "send_message", what: "rich: reply, mention, attachment", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
				ConversationId: s.group, ClientMsgId: fresh(), Text: "look", ReplyToSeq: s.bobMsg, MentionIds: []string{"alice"},
				Attachments: []*chatv1.Attachment{{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_FILE, Url: "https://files.example/x.pdf"}}}}})
		}},
		{frame: "send_message", what: "resend of one's own client_msg_id", want: cells(ok, notFound, colRemoved, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			// A retry of a message posted as a member gets its original
			// answer, and writes nothing (which the final checks see).
			id := map[string]string{"bob": s.bobMsgID, "carol": s.carolMsgID, "dave": s.daveMsgID}[a.name]
			if id == "" {
				id = fresh()
			}
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
				ConversationId: s.group, ClientMsgId: id, Text: "mine"}}})
		}, check: func(t *testing.T, col string, s *authzScene, a *authzActor, resp *clientv1.ServerFrame) {
			t.Helper()
			if acc := resp.GetAccepted(); !acc.GetDuplicate() || acc.GetSeq() != own(s, a) {
				t.Errorf("%s's resend = %v; want the original accepted (duplicate, seq %d)", a.name, resp, own(s, a))
			}
		}},
		{frame: "create_conversation", what: "a group with the group's id", want: cells(exists, exists), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
				ClientMsgId: fresh(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "mine now", ConversationId: s.group}}})
		}},
		{frame: "create_conversation", what: "a group with erin, who blocks dave", want: cells(ok, ok, colBlocked, "BLOCKED"), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
				ClientMsgId: fresh(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "with erin", MemberIds: []string{"erin"}}}})
		}},
		{frame: "add_member", what: "themselves", want: cells(exists, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_AddMember{AddMember: &clientv1.AddMember{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: a.name}}})
		}},
		{frame: "add_member", what: "erin, who blocks dave", want: cells(ok, notFound, colBlocked, "BLOCKED"), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_AddMember{AddMember: &clientv1.AddMember{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: "erin"}}})
		}},
		{frame: "list_conversations", what: "everything", want: cells(ok, ok), check: inList, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{Limit: 200}}})
		}},
		{frame: "list_conversations", what: "sync since an earlier token", want: cells(ok, ok), check: inList, build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{ChangedSince: a.token}}})
		}},
		{frame: "get_history", what: "newest", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetHistory{GetHistory: &clientv1.GetHistory{ConversationId: s.group}}})
		}},
		{frame: "get_history", what: "forward from 0", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetHistory{GetHistory: &clientv1.GetHistory{ConversationId: s.group, AfterSeq: proto.Uint64(0)}}})
		}},
		{frame: "mark", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Mark{Mark: &clientv1.Mark{ConversationId: s.group, DeliveredSeq: s.bobMsg, ReadSeq: s.bobMsg}}})
		}},
		{frame: "get_receipts", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetReceipts{GetReceipts: &clientv1.GetReceipts{ConversationId: s.group}}})
		}},
		{frame: "typing", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Typing{Typing: &clientv1.SetTyping{ConversationId: s.group}}})
		}},
		{frame: "get_presence", what: "of the group's owner", want: cells("ok: online", noPresence, colBlocked, "ok: offline"), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetPresence{GetPresence: &clientv1.GetPresence{UserIds: []string{"alice"}}}})
		}},
		{frame: "watch_presence", what: "of the group's owner", want: cells("ok: online", noPresence, colBlocked, "ok: offline"), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_WatchPresence{WatchPresence: &clientv1.WatchPresence{UserIds: []string{"alice"}}}})
		}},
		{frame: "remove_member", what: "bob", want: cells(denied, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RemoveMember{RemoveMember: &clientv1.RemoveMember{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: "bob"}}})
		}},
		{frame: "leave", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Leave{Leave: &clientv1.LeaveConversation{ConversationId: s.group, ClientMsgId: fresh()}}})
		}},
		{frame: "set_role", what: "bob to admin", want: cells(denied, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetRole{SetRole: &clientv1.SetMemberRole{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN}}})
		}},
		{frame: "transfer_ownership", what: "to themselves", want: cells(denied, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_TransferOwnership{TransferOwnership: &clientv1.TransferOwnership{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: a.name}}})
		}},
		{frame: "mute_member", what: "bob", want: cells(denied, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_MuteMember{MuteMember: &clientv1.MuteMember{
				ConversationId: s.group, ClientMsgId: fresh(), UserId: "bob", Muted: true}}})
		}},
		{frame: "rename", want: cells(denied, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Rename{Rename: &clientv1.RenameConversation{
				ConversationId: s.group, ClientMsgId: fresh(), Title: "taken over"}}})
		}},
		{frame: "create_invite", want: cells(denied, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateInvite{CreateInvite: &clientv1.CreateInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: "outsider-code-" + a.name + "-0123456789"}}})
		}},
		{frame: "revoke_invite", what: "a valid invite", want: cells(denied, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RevokeInvite{RevokeInvite: &clientv1.RevokeInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: s.invite}}})
		}},
		{frame: "join_by_invite", what: "a revoked code", want: cells(notFound, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_JoinByInvite{JoinByInvite: &clientv1.JoinByInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: s.revoked}}})
		}},
		{frame: "join_by_invite", what: "a guessed code", want: cells(notFound, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_JoinByInvite{JoinByInvite: &clientv1.JoinByInvite{
				ConversationId: s.group, ClientMsgId: fresh(), Code: "guess-0000000000000000"}}})
		}},
		{frame: "follow", what: "a private channel", want: cells(notFound, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Follow{Follow: &clientv1.FollowChannel{ConversationId: s.channel, ClientMsgId: fresh()}}})
		}},
		{frame: "edit_message", what: "their own", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_EditMessage{EditMessage: &clientv1.EditMessage{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: own(s, a), Text: "rewritten"}}})
		}},
		{frame: "delete_message", what: "their own", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_DeleteMessage{DeleteMessage: &clientv1.DeleteMessage{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: own(s, a)}}})
		}},
		{frame: "react", what: "add", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_React{React: &clientv1.React{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: s.bobMsg, Emoji: "🔥"}}})
		}},
		{frame: "react", what: "remove carol's 👍", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			// For anyone but carol there is nothing of theirs to remove:
			// a member is answered as a duplicate, and nothing changes.
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_React{React: &clientv1.React{
				ConversationId: s.group, ClientMsgId: fresh(), TargetSeq: s.carolMsg, Emoji: "👍", Remove: true}}})
		}},
		{frame: "set_flags", what: "mute and pin", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return (&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetFlags{SetFlags: &clientv1.SetConversationFlags{
				ConversationId: s.group, Muted: proto.Bool(true), Pinned: proto.Bool(true)}}})
		}},
		{frame: "block_user", what: "zed", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_BlockUser{BlockUser: &clientv1.BlockUser{UserId: "zed"}}}
		}},
		{frame: "unblock_user", what: "zed", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_UnblockUser{UnblockUser: &clientv1.UnblockUser{UserId: "zed"}}}
		}},
		{frame: "list_blocks", what: "their own", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListBlocks{ListBlocks: &clientv1.ListBlocks{}}}
		}},
		{frame: "request_contact", what: "zed", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RequestContact{RequestContact: &clientv1.RequestContact{UserId: "zed"}}}
		}},
		{frame: "request_contact", what: "alice, who blocks dave", want: cells(ok, ok, colBlocked, "BLOCKED"), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RequestContact{RequestContact: &clientv1.RequestContact{UserId: "alice"}}}
		}},
		{frame: "respond_contact", what: "zed, who asked nobody", want: cells(notFound, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RespondContact{RespondContact: &clientv1.RespondContact{UserId: "zed", Accept: true}}}
		}},
		{frame: "cancel_contact", what: "zed", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CancelContact{CancelContact: &clientv1.CancelContact{UserId: "zed"}}}
		}},
		{frame: "respond_invitation", what: "accept, uninvited", want: cells(ok, notFound), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			// A member accepting is answered as joined already.
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RespondInvitation{RespondInvitation: &clientv1.RespondInvitation{ConversationId: s.group, Accept: true}}}
		}},
		{frame: "set_settings", what: "contacts only, their own", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetSettings{SetSettings: &clientv1.SetSettings{ContactsOnly: proto.Bool(false)}}}
		}},
		{frame: "get_settings", what: "their own", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetSettings{GetSettings: &clientv1.GetSettings{}}}
		}},
		{frame: "list_contacts", what: "their own", want: cells(ok, ok), build: func(s *authzScene, a *authzActor) *clientv1.ClientFrame {
			return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListContacts{ListContacts: &clientv1.ListContacts{}}}
		}},
	}
}

// outcome is what a frame's answer reads as in the matrix.
func outcome(resp *clientv1.ServerFrame, err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return strings.TrimPrefix(we.Code.String(), "ERROR_CODE_")
	}
	if err != nil {
		return "failed: " + err.Error()
	}
	if ps := resp.GetPresence().GetPresence(); len(ps) > 0 {
		return "ok: " + strings.ToLower(strings.TrimPrefix(ps[0].GetState().String(), "PRESENCE_STATE_"))
	}
	return "ok"
}

// rowName names a row in test names and in the docs.
func (r authzRow) name() string {
	if r.what == "" {
		return string(r.frame)
	}
	return string(r.frame) + " " + r.what
}

// wantCodeE is wantCode that lets the other rows run.
func wantCodeE(t *testing.T, err error, code chatv1.ErrorCode) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != code {
		t.Errorf("err = %v, want %v", err, code)
	}
}

// authzCast are the scene's connected users.
type authzCast struct {
	alice, bob, carol, dave *device
}

// newAuthzScene makes a group and a private channel as authzScene says
// (carol still in the group), and waits until persistence has them. It
// returns the group's last seq.
func newAuthzScene(t *testing.T, e *env, c authzCast) (*authzScene, uint64) {
	t.Helper()
	ctx := tctx(t)
	s := &authzScene{bobMsgID: fresh(), carolMsgID: fresh(), daveMsgID: fresh()}
	must := func(a *clientv1.Accepted, err error) uint64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a.GetSeq()
	}
	acc, err := c.alice.CreateGroup(ctx, "team", "bob", c.carol.UserID, "dave")
	if err != nil {
		t.Fatal(err)
	}
	s.group = acc.GetConversationId()
	s.bobMsg = must(c.bob.SendWithID(ctx, s.group, s.bobMsgID, "from bob"))
	s.carolMsg = must(c.carol.SendWithID(ctx, s.group, s.carolMsgID, "from carol"))
	s.daveMsg = must(c.dave.SendWithID(ctx, s.group, s.daveMsgID, "from dave"))
	last := must(c.carol.React(ctx, s.group, s.carolMsg, "👍"))
	// Typing as a member leaves carol in the edge's member cache of the
	// group, which must not let her type once removed.
	if err := c.carol.SetTyping(ctx, s.group, false); err != nil {
		t.Fatal(err)
	}
	if s.invite, _, err = c.alice.CreateInvite(ctx, s.group); err != nil {
		t.Fatal(err)
	}
	if s.revoked, _, err = c.alice.CreateInvite(ctx, s.group); err != nil {
		t.Fatal(err)
	}
	last = must(c.alice.RevokeInvite(ctx, s.group, s.revoked))
	acc, err = c.alice.CreateChannel(ctx, "private", false)
	if err != nil {
		t.Fatal(err)
	}
	s.channel = acc.GetConversationId()
	if s.token, err = e.minter.Mint("alice", time.Hour); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, c.alice.Client, s.group, last)
	// The channel may sit in another partition, stored a moment later.
	waitHistory(t, c.alice.Client, s.channel, 1)
	return s, last
}

// expiredDo sends f on a new connection right after an authenticate with
// an expired token, and returns the answer: the edge refuses the token
// and closes the connection (4001) without reading f.
func expiredDo(t *testing.T, e *env, f *clientv1.ClientFrame) (*clientv1.ServerFrame, error) {
	t.Helper()
	ctx := tctx(t)
	ws := rawConn(t, e.url, wire.SubprotocolProto)
	defer ws.CloseNow()
	tok, err := e.minter.MintAt("expired", time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range []*clientv1.ClientFrame{{RequestId: "a", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: tok}}}, f} {
		data, err := wire.Encode(wire.Binary, fr)
		if err != nil {
			t.Fatal(err)
		}
		if err := ws.Write(ctx, websocket.MessageBinary, data); err != nil {
			t.Fatal(err)
		}
	}
	answer := readFrame(t, ws, wire.Binary)
	if _, data, err := ws.Read(ctx); websocket.CloseStatus(err) != 4001 {
		t.Errorf("after the expired token: %q, %v; want the connection closed with 4001", data, err)
	}
	if e := answer.GetError(); e != nil {
		return nil, &wire.Error{Code: e.GetCode(), Message: e.GetMessage()}
	}
	return answer, nil
}

// TestAuthorisationMatrix sends every client frame over the WebSocket
// protocol as each column's user and checks the exact answer against the
// row; the docs' table is the same rows (TestAuthorisationMatrixDoc).
// After the non-member, the removed member and the expired token have
// sent every frame, nothing changed: no event logged or pushed, the
// members, roles and title as they were, no receipt, typing indicator or
// presence pushed.
func TestAuthorisationMatrix(t *testing.T) {
	rows := authzRows()
	covered := map[protoreflect.Name]bool{}
	for _, r := range rows {
		covered[r.frame] = true
		for _, col := range authzColumns {
			if r.want[col] == "" {
				t.Errorf("row %s has no answer for %s", r.name(), col)
			}
		}
	}
	fields := (&clientv1.ClientFrame{}).ProtoReflect().Descriptor().Oneofs().ByName("frame").Fields()
	for i := range fields.Len() {
		if name := fields.Get(i).Name(); !covered[name] {
			t.Errorf("client frame %s (%d) has no row in the authorisation matrix", name, fields.Get(i).Number())
		}
	}

	// Limits off: each row builds a fresh scene, far past the default
	// group_ops burst of 30 an hour.
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), Limits: edge.Limits{Off: true}})
	defer stop()
	// One bound for the whole matrix, which sends some 160 frames over
	// 60 fresh scenes: tctx's 20 s ran out on a loaded CI machine.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cast := authzCast{alice: e.dial("alice", "a", true), bob: e.dial("bob", "b", false), carol: e.dial("carol", "c", false), dave: e.dial("dave", "d", true)}
	erin := e.dial("erin", "e", false)
	// alice blocks dave, who stays in her groups; erin blocks him too,
	// and is in none.
	if err := cast.alice.Block(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	if err := erin.Block(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, cast.alice.Client, "dave")
	waitBlocks(t, erin.Client, "dave")
	erin.Close()

	run := func(t *testing.T, r authzRow, col string, s *authzScene, a *authzActor) {
		t.Helper()
		var resp *clientv1.ServerFrame
		var err error
		if col == colExpired {
			resp, err = expiredDo(t, e, r.build(s, a))
		} else {
			resp, err = a.dev.Do(ctx, r.build(s, a))
		}
		if got := outcome(resp, err); got != r.want[col] {
			t.Errorf("%s: %s (%v), want %s", a.name, got, err, r.want[col])
			return
		}
		if r.check != nil && err == nil {
			r.check(t, col, s, a, resp)
		}
	}

	// The member and the blocked user, each row in its own scene; cara
	// plays carol there, so that carol shares no conversation with alice
	// but the one she is removed from.
	inGroup := cast
	inGroup.carol = e.dial("cara", "c", false)
	for _, r := range rows {
		t.Run(r.name()+"/in the group", func(t *testing.T) {
			s, _ := newAuthzScene(t, e, inGroup)
			for _, a := range []struct {
				col string
				dev *device
			}{{colMember, cast.bob}, {colBlocked, cast.dave}} {
				actor := &authzActor{name: a.dev.UserID, dev: a.dev}
				var err error
				if _, actor.token, err = a.dev.SyncConversations(ctx, ""); err != nil {
					t.Fatal(err)
				}
				t.Run(a.col, func(t *testing.T) { run(t, r, a.col, s, actor) })
			}
		})
	}

	// The others, in one scene that none of them may change.
	mallory := &authzActor{name: "mallory", dev: e.dial("mallory", "m", true)}
	carol := &authzActor{name: "carol", dev: cast.carol}
	expired := &authzActor{name: "expired"}
	s, _ := newAuthzScene(t, e, cast)
	var err error
	if _, carol.token, err = carol.dev.SyncConversations(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, mallory.token, err = mallory.dev.SyncConversations(ctx, ""); err != nil {
		t.Fatal(err)
	}
	acc, err := cast.alice.RemoveMember(ctx, s.group, "carol")
	if err != nil {
		t.Fatal(err)
	}
	removed := acc.GetSeq()
	// The baseline, once every service has taken the removal in: carol
	// got it, persistence lists the group without her.
	if got := carol.dev.upTo(t, s.group, removed); got[len(got)-1].GetMemberRemoved().GetUserId() != "carol" {
		t.Fatalf("carol's last event %v, want her removal", got[len(got)-1])
	}
	listedTitle(t, carol.dev.Client, s.group, "")
	waitHistory(t, cast.alice.Client, s.group, removed)
	bob := cast.bob
	bob.upTo(t, s.group, removed)
	before := summaries(t, cast.alice.Client, s.group, s.channel)
	receiptsBefore := othersReceipts(t, cast.alice.Client, s.group, "carol", "mallory")
	drainEphemeral(bob.Client)
	drainEphemeral(mallory.dev.Client)
	drainEphemeral(carol.dev.Client)

	for _, r := range rows {
		for _, a := range []struct {
			col   string
			actor *authzActor
		}{{colNonMember, mallory}, {colRemoved, carol}, {colExpired, expired}} {
			t.Run(r.name()+"/"+a.col, func(t *testing.T) { run(t, r, a.col, s, a.actor) })
		}
	}

	t.Run("nothing changed", func(t *testing.T) {
		// Had a row logged anything, the next event would not be at
		// removed+1, and bob would have been pushed it first.
		sentinel, err := cast.alice.Send(ctx, s.group, "sentinel")
		if err != nil {
			t.Fatal(err)
		}
		if sentinel.GetSeq() != removed+1 {
			t.Errorf("the next event is seq %d, want %d: a refused frame logged something", sentinel.GetSeq(), removed+1)
		}
		if got := bob.upTo(t, s.group, sentinel.GetSeq()); len(got) != 1 || got[0].GetMessagePosted().GetText() != "sentinel" {
			t.Errorf("bob was pushed %v, want only the sentinel", got)
		}
		waitHistory(t, cast.alice.Client, s.group, sentinel.GetSeq())
		p, err := cast.alice.History(ctx, &clientv1.GetHistory{ConversationId: s.group, AfterSeq: proto.Uint64(0), Limit: 200})
		if err != nil || uint64(len(p.GetEvents())) != sentinel.GetSeq() {
			t.Errorf("history %v, %v: want %d events", p, err, sentinel.GetSeq())
		}
		after := summaries(t, cast.alice.Client, s.group, s.channel)
		for id, b := range before {
			if a := after[id]; a != b {
				t.Errorf("conversation %s was %s, is %s", id, b, a)
			}
		}
		if got := othersReceipts(t, cast.alice.Client, s.group, "carol", "mallory"); got != receiptsBefore {
			t.Errorf("receipts of carol and mallory were %s, are %s", receiptsBefore, got)
		}
		// Bob's typing indicator shows that earlier pushes have arrived:
		// the edge forwards them in order.
		if err := cast.alice.SetTyping(ctx, s.group, false); err != nil {
			t.Fatal(err)
		}
		for {
			ind := nextTyping(t, bob.Client)
			if ind.GetUserId() == "alice" && ind.GetConversationId() == s.group {
				break
			}
		}
		for _, c := range []*sdk.Client{mallory.dev.Client, carol.dev.Client} {
			for _, pushed := range drainEphemeral(c) {
				t.Errorf("%s was pushed %s", c.UserID, pushed)
			}
		}
	})
}

// authzDoc is the matrix as PROTOCOL.md shows it, between its markers.
func authzDoc() string {
	var b strings.Builder
	b.WriteString("| frame | " + strings.Join(authzColumns, " | ") + " |\n")
	b.WriteString("| --- |" + strings.Repeat(" --- |", len(authzColumns)) + "\n")
	for _, r := range authzRows() {
		b.WriteString("| `" + string(r.frame) + "`")
		if r.what != "" {
			b.WriteString(" " + r.what)
		}
		for _, col := range authzColumns {
			b.WriteString(" | " + r.want[col])
		}
		b.WriteString(" |\n")
	}
	return b.String()
}

const (
	authzBegin = "<!-- authorisation matrix: generated from services/platform/authz_test.go; PARLEY_UPDATE_DOCS=1 go test -run TestAuthorisationMatrixDoc ./services/platform rewrites it -->\n"
	authzEnd   = "<!-- end of the authorisation matrix -->\n"
)

// TestAuthorisationMatrixDoc: PROTOCOL.md's authorisation matrix is the
// table TestAuthorisationMatrix runs, cell for cell.
func TestAuthorisationMatrixDoc(t *testing.T) {
	const path = "../../docs/PROTOCOL.md"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, authzBegin), strings.Index(doc, authzEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no authorisation matrix between %q and %q", path, authzBegin, authzEnd)
	}
	got, want := doc[i+len(authzBegin):j], authzDoc()
	if got == want {
		return
	}
	if os.Getenv("PARLEY_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(doc[:i+len(authzBegin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's authorisation matrix differs from the test's; want:\n%s", path, want)
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

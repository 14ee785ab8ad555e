package historytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// At returns an event record at seq by sender with the given body (one of
// the chat.v1 event body wrappers); its time grows with seq.
func At(conv string, seq uint64, sender string, body any) *logv1.EventRecord {
	ev := &chatv1.Event{
		ConversationId: conv, Seq: seq, EventId: fmt.Sprintf("%s-%d", conv, seq), SenderId: sender,
		Time: timestamppb.New(base.Add(time.Duration(seq) * time.Second)),
	}
	switch b := body.(type) {
	case *chatv1.MemberRemoved:
		ev.Body = &chatv1.Event_MemberRemoved{MemberRemoved: b}
	case *chatv1.MemberLeft:
		ev.Body = &chatv1.Event_MemberLeft{MemberLeft: b}
	case *chatv1.MemberJoined:
		ev.Body = &chatv1.Event_MemberJoined{MemberJoined: b}
	case *chatv1.RoleChanged:
		ev.Body = &chatv1.Event_RoleChanged{RoleChanged: b}
	case *chatv1.OwnershipTransferred:
		ev.Body = &chatv1.Event_OwnershipTransferred{OwnershipTransferred: b}
	case *chatv1.MemberMuted:
		ev.Body = &chatv1.Event_MemberMuted{MemberMuted: b}
	case *chatv1.ConversationRenamed:
		ev.Body = &chatv1.Event_ConversationRenamed{ConversationRenamed: b}
	case *chatv1.InviteCreated:
		ev.Body = &chatv1.Event_InviteCreated{InviteCreated: b}
	case *chatv1.InviteRevoked:
		ev.Body = &chatv1.Event_InviteRevoked{InviteRevoked: b}
	default:
		panic(fmt.Sprintf("historytest.At: %T", body))
	}
	return &logv1.EventRecord{Event: ev}
}

// runGroups is the part of the suite about membership and roles: who is
// a member after removals, leaves and re-joins (the conversation list and
// with it persistence's history authorisation), owner, admins, muted,
// title and public, folded exactly as history.Summarize folds them, in
// any order and again; and block records, which show in no conversation
// (only in the blocker's Blocks, see runBlocks).
func runGroups(t *testing.T, open func(*testing.T) history.Store, conv func(*testing.T) string) {
	ctx := context.Background()
	admin, member := chatv1.MemberRole_MEMBER_ROLE_ADMIN, chatv1.MemberRole_MEMBER_ROLE_MEMBER
	t.Run("MembershipAndRoles", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		recs := []*logv1.EventRecord{
			Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "first", "alice", "bob", "carol", "dave"),
			At(c, 2, "alice", &chatv1.RoleChanged{UserId: "bob", Role: admin}),
			At(c, 3, "bob", &chatv1.MemberMuted{UserId: "carol", Muted: true}),
			At(c, 4, "alice", &chatv1.ConversationRenamed{Title: "second"}),
			At(c, 5, "alice", &chatv1.InviteCreated{Code: "code-0000000000001"}),
			At(c, 6, "erin", &chatv1.MemberJoined{UserId: "erin", InviteCode: "code-0000000000001"}),
			At(c, 7, "bob", &chatv1.MemberRemoved{UserId: "carol"}), // muted, then removed
			At(c, 8, "dave", &chatv1.MemberLeft{UserId: "dave"}),
			At(c, 9, "alice", &chatv1.OwnershipTransferred{NewOwnerId: "bob"}),
			At(c, 10, "bob", &chatv1.RoleChanged{UserId: "erin", Role: admin}),
			At(c, 11, "bob", &chatv1.RoleChanged{UserId: "erin", Role: member}),
			At(c, 12, "bob", &chatv1.MemberMuted{UserId: "erin", Muted: true}),
			At(c, 13, "bob", &chatv1.MemberMuted{UserId: "erin", Muted: false}),
			Added(c, 14, "bob", "carol"), // back, neither muted nor anything else
			At(c, 15, "alice", &chatv1.InviteRevoked{Code: "code-0000000000001"}),
			Posted(c, 16, "bob", "hello again"),
			Block(c, "alice", "bob", true, 1),
		}
		want := &chatv1.Conversation{}
		for _, r := range recs {
			if r.GetEvent() != nil {
				history.Summarize(want, r.GetEvent())
			}
		}
		if fmt.Sprintf("%v %v %v %v %v", want.GetMemberIds(), want.GetOwnerId(), want.GetAdminIds(), want.GetMutedIds(), want.GetTitle()) !=
			"[alice bob erin carol] bob [alice] [] second" {
			t.Fatalf("Summarize folded %v", want)
		}
		check := func(stage string) {
			t.Helper()
			got, err := s.Conversation(ctx, c)
			if err != nil || !proto.Equal(got, want) {
				t.Fatalf("%s: summary\n got  %v (%v)\n want %v", stage, got, err, want)
			}
			for _, u := range []string{"alice", "bob", "carol", "erin"} {
				if l, err := s.Conversations(ctx, u, history.ListQuery{}); err != nil || len(l) != 1 || l[0].GetTitle() != "second" {
					t.Fatalf("%s: %s lists %v, %v", stage, u, l, err)
				}
			}
			if l, err := s.Conversations(ctx, "dave", history.ListQuery{}); err != nil || len(l) != 0 {
				t.Fatalf("%s: dave left but lists %v, %v", stage, l, err)
			}
			if p, err := s.History(ctx, c, Query(0, 100)); err != nil || len(p.Events) != 16 {
				t.Fatalf("%s: history holds %d events, %v", stage, len(p.Events), err)
			}
		}
		apply(t, s, recs...)
		check("in order")
		for _, r := range recs {
			apply(t, s, r)
		}
		check("one by one")
		rev := slices.Clone(recs)
		slices.Reverse(rev)
		apply(t, s, rev...)
		check("reversed")
	})
	t.Run("RemovedMemberIsNoLongerListed", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		group(t, s, c, 3, "alice", "bob", "carol")
		apply(t, s, At(c, 4, "alice", &chatv1.MemberRemoved{UserId: "bob"}))
		sum, err := s.Conversation(ctx, c)
		if err != nil || history.IsMember(sum, "bob") || fmt.Sprint(sum.GetMemberIds()) != "[alice carol]" {
			t.Fatalf("after removal: %v, %v", sum, err)
		}
		wantListed(t, s, "bob", time.Time{}, "")
		wantListed(t, s, "carol", time.Time{}, c+" r0 u2")
		// Re-joining at a later seq makes bob a member again, last in
		// join order, whatever order the records are applied in.
		rejoin := At(c, 5, "bob", &chatv1.MemberJoined{UserId: "bob"})
		apply(t, s, rejoin)
		apply(t, s, At(c, 4, "alice", &chatv1.MemberRemoved{UserId: "bob"}))
		if sum, _ = s.Conversation(ctx, c); fmt.Sprint(sum.GetMemberIds()) != "[alice carol bob]" {
			t.Fatalf("after re-join: %v", sum.GetMemberIds())
		}
		wantListed(t, s, "bob", time.Time{}, c+" r5 u0")
	})
	t.Run("ChannelSummary", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		created := Created(c, chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL, "news", "alice")
		created.GetEvent().GetConversationCreated().Public = true
		apply(t, s, created, At(c, 2, "bob", &chatv1.MemberJoined{UserId: "bob"}))
		sum, err := s.Conversation(ctx, c)
		if err != nil || !sum.GetPublic() || sum.GetOwnerId() != "alice" || fmt.Sprint(sum.GetMemberIds()) != "[alice bob]" ||
			sum.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL {
			t.Fatalf("channel summary %v, %v", sum, err)
		}
	})
	t.Run("BlockRecordsChangeNothing", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		apply(t, s, Block(c, "alice", "bob", true, 1))
		if _, err := s.Conversation(ctx, c); !errors.Is(err, history.ErrNotFound) {
			t.Fatalf("a block made a conversation: %v", err)
		}
		wantListed(t, s, "alice", time.Time{}, "")
		wantListed(t, s, "bob", time.Time{}, "")
	})
}

// Query pages forward from after.
func Query(after uint64, limit int) history.Query {
	return history.Query{Forward: true, AfterSeq: after, Limit: limit}
}

package edge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// memberships answers Conversation and Conversations from a member list
// per conversation that a test changes between calls, counting the reads.
type memberships struct {
	persistencev1.PersistenceServiceClient
	mu    sync.Mutex
	convs map[string][]string
	// blocks is whom each user blocks.
	blocks map[string][]string
	reads  int
}

func (m *memberships) block(blocker string, blocked ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.blocks == nil {
		m.blocks = map[string][]string{}
	}
	m.blocks[blocker] = blocked
}

func (m *memberships) Blocks(_ context.Context, req *persistencev1.BlocksRequest, _ ...grpc.CallOption) (*persistencev1.BlocksResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	return &persistencev1.BlocksResponse{BlockedIds: m.blocks[req.GetUserId()]}, nil
}

func (m *memberships) set(conv string, members ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.convs[conv] = members
}

func (m *memberships) Conversation(_ context.Context, req *persistencev1.ConversationRequest, _ ...grpc.CallOption) (*persistencev1.ConversationResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	members := m.convs[req.GetConversationId()]
	if !slices.Contains(members, req.GetUserId()) {
		return nil, status.Error(codes.NotFound, "no such conversation")
	}
	return &persistencev1.ConversationResponse{Conversation: &chatv1.Conversation{ConversationId: req.GetConversationId(), MemberIds: members}}, nil
}

func (m *memberships) Conversations(_ context.Context, req *persistencev1.ConversationsRequest, _ ...grpc.CallOption) (*persistencev1.ConversationsResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	resp := &persistencev1.ConversationsResponse{}
	for id, members := range m.convs {
		if slices.Contains(members, req.GetUserId()) {
			resp.Conversations = append(resp.Conversations, &chatv1.Conversation{ConversationId: id, MemberIds: members})
		}
	}
	return resp, nil
}

func (m *memberships) readCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads
}

// TestAccessTyping: a member list is cached, a user it lacks is read
// again (they may have joined), a non-member is refused, and a departure
// pushed through the node drops the cached list.
func TestAccessTyping(t *testing.T) {
	p := &memberships{convs: map[string][]string{"c": {"alice", "bob"}}}
	a := &access{persistence: p}
	ctx := t.Context()
	if _, err := a.typingMembers(ctx, "alice", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.typingMembers(ctx, "bob", "c"); err != nil || p.readCount() != 1 {
		t.Fatalf("a cached member: %v after %d reads, want 1", err, p.readCount())
	}
	if _, err := a.typingMembers(ctx, "carol", "c"); status.Code(err) != codes.NotFound {
		t.Fatalf("a non-member: %v", err)
	}
	p.set("c", "alice", "bob", "carol")
	if members, err := a.typingMembers(ctx, "carol", "c"); err != nil || len(members) != 3 {
		t.Fatalf("a new member: %v, %v", members, err)
	}
	p.set("c", "alice", "carol")
	a.forget(&chatv1.Event{ConversationId: "c", Body: &chatv1.Event_MemberLeft{MemberLeft: &chatv1.MemberLeft{}}}, []string{"alice", "carol"})
	if _, err := a.typingMembers(ctx, "bob", "c"); status.Code(err) != codes.NotFound {
		t.Fatalf("a member who left: %v", err)
	}
}

// TestAccessPresence: presence is for co-members only; a refusal is
// decided on a fresh read, and a departure pushed through the node ends a
// watch at once.
func TestAccessPresence(t *testing.T) {
	p := &memberships{convs: map[string][]string{"c": {"alice", "bob"}}}
	a := &access{persistence: p}
	ctx := t.Context()
	if err := a.seePresence(ctx, "alice", []string{"alice", "bob"}); err != nil {
		t.Fatal(err)
	}
	if err := a.seePresence(ctx, "alice", []string{"carol"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a stranger: %v", err)
	}
	p.set("d", "alice", "carol")
	if err := a.seePresence(ctx, "alice", []string{"carol"}); err != nil {
		t.Fatalf("a new co-member is refused from the cache: %v", err)
	}
	if ok, err := a.mayWatch(ctx, "alice", "bob"); !ok || err != nil {
		t.Fatalf("mayWatch a co-member: %v, %v", ok, err)
	}
	p.set("c", "alice")
	a.forget(&chatv1.Event{ConversationId: "c", Body: &chatv1.Event_MemberRemoved{MemberRemoved: &chatv1.MemberRemoved{}}}, []string{"alice"})
	if ok, err := a.mayWatch(ctx, "alice", "bob"); ok || err != nil {
		t.Fatalf("mayWatch after the removal: %v, %v", ok, err)
	}
}

// TestAccessBlocks: a co-member who blocks the viewer shows offline
// without last seen and is not watched; consent refuses a command naming
// a user who blocks its sender, reading their block list fresh, and
// leaves a list ingest refuses anyway unread.
func TestAccessBlocks(t *testing.T) {
	p := &memberships{convs: map[string][]string{"c": {"alice", "bob", "mallory"}}}
	a := &access{persistence: p}
	ctx := t.Context()
	online := func(u string) *chatv1.Presence {
		return &chatv1.Presence{UserId: u, State: chatv1.PresenceState_PRESENCE_STATE_ONLINE}
	}
	show := func(viewer string) string {
		t.Helper()
		ps, err := a.hideBlockers(ctx, viewer, []*chatv1.Presence{online("alice"), online("bob")})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(ps)
	}
	if got, want := show("mallory"), fmt.Sprint([]*chatv1.Presence{online("alice"), online("bob")}); got != want {
		t.Fatalf("before any block: %s, want %s", got, want)
	}
	p.block("alice", "mallory")
	a.blocks.drop("alice") // what membersTTL does in time
	offline := &chatv1.Presence{UserId: "alice", State: chatv1.PresenceState_PRESENCE_STATE_OFFLINE}
	if got, want := show("mallory"), fmt.Sprint([]*chatv1.Presence{offline, online("bob")}); got != want {
		t.Errorf("mallory sees %s, want %s", got, want)
	}
	if got, want := show("bob"), fmt.Sprint([]*chatv1.Presence{online("alice"), online("bob")}); got != want {
		t.Errorf("bob sees %s, want %s", got, want)
	}
	if ok, err := a.mayWatch(ctx, "mallory", "alice"); ok || err != nil {
		t.Errorf("mallory may watch alice: %v, %v", ok, err)
	}
	if ok, err := a.mayWatch(ctx, "bob", "alice"); !ok || err != nil {
		t.Errorf("bob may not watch alice: %v, %v", ok, err)
	}

	// consent reads fresh: an unblock is seen at once.
	for _, tc := range []struct {
		sender string
		users  []string
		want   bool
	}{
		{"mallory", []string{"bob", "alice"}, true},
		{"mallory", []string{"bob", "carol"}, false},
		{"alice", []string{"mallory"}, false},
		{"bob", []string{"alice"}, false},
	} {
		if got, err := a.blockedBy(ctx, tc.sender, tc.users); got != tc.want || err != nil {
			t.Errorf("%s names %v: refused %v, %v; want %v", tc.sender, tc.users, got, err, tc.want)
		}
	}
	p.block("alice")
	if got, err := a.blockedBy(ctx, "mallory", []string{"alice"}); got || err != nil {
		t.Errorf("after the unblock: refused %v, %v", got, err)
	}
	p.block("alice", "mallory")
	many := []string{"alice"}
	for i := range membership.MaxCreateMembers {
		many = append(many, fmt.Sprintf("u%d", i))
	}
	before := p.readCount()
	if got, err := a.blockedBy(ctx, "mallory", many); got || err != nil || p.readCount() != before {
		t.Errorf("an oversized list: refused %v, %v after %d reads; want it left to ingest unread", got, err, p.readCount()-before)
	}
	if got, err := a.blockedBy(ctx, "mallory", []string{"alice", "not a user id"}); got || err != nil {
		t.Errorf("an invalid id: refused %v, %v; want it left to ingest", got, err)
	}
}

// TestAccessTypingBlocked: in a direct conversation with a block either
// way, an indicator goes to nobody; in a group, to every other member.
func TestAccessTypingBlocked(t *testing.T) {
	p := &memberships{}
	a := &access{persistence: p}
	ctx := t.Context()
	direct := uuid.NewSHA1(uuid.NameSpaceOID, []byte("alice\x00bob")).String()
	group := uuid.Must(uuid.NewV7()).String()
	to := func(user, conv string, others ...string) string {
		t.Helper()
		got, err := a.typingTo(ctx, user, conv, others)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(got)
	}
	if got := to("bob", direct, "alice"); got != "[alice]" {
		t.Errorf("no block: bob's indicator goes to %s", got)
	}
	p.block("alice", "bob")
	a.blocks.drop("alice")
	for _, tc := range []struct{ user, conv, other, want string }{
		{"bob", direct, "alice", "[]"},
		{"alice", direct, "bob", "[]"},
		{"bob", group, "alice", "[alice]"},
	} {
		if got := to(tc.user, tc.conv, tc.other); got != tc.want {
			t.Errorf("%s types in %s: to %s, want %s", tc.user, tc.conv, got, tc.want)
		}
	}
}

package edge

import (
	"context"
	"slices"
	"sync"
	"testing"

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
	reads int
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
		return nil, status.Error(codes.PermissionDenied, "not a member of this conversation")
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
	if _, err := a.typingMembers(ctx, "carol", "c"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a non-member: %v", err)
	}
	p.set("c", "alice", "bob", "carol")
	if members, err := a.typingMembers(ctx, "carol", "c"); err != nil || len(members) != 3 {
		t.Fatalf("a new member: %v, %v", members, err)
	}
	p.set("c", "alice", "carol")
	a.forget(&chatv1.Event{ConversationId: "c", Body: &chatv1.Event_MemberLeft{MemberLeft: &chatv1.MemberLeft{}}}, []string{"alice", "carol"})
	if _, err := a.typingMembers(ctx, "bob", "c"); status.Code(err) != codes.PermissionDenied {
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

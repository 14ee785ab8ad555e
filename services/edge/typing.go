package edge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// Typing indicators never touch Kafka or a store: the edge that receives
// one checks membership (persistence, cached), locates the other members'
// sessions (presence) and pushes to their edges itself. Losing one costs
// nothing, since the typist renews it every few seconds.
const (
	// TypingExpiry is how long a device shows an indicator that is not
	// renewed.
	TypingExpiry = 6 * time.Second
	// typingEvery is the least time between two indicators a connection
	// forwards; more are answered but not sent on.
	typingEvery = 500 * time.Millisecond
	// membersTTL bounds how stale a cached member list may be: a member
	// who left may see someone typing for that long.
	membersTTL = 5 * time.Second
	// membersMax bounds the cache; it is dropped whole when full.
	membersMax = 10_000
	typingPush = 2 * time.Second
)

// ttlCache keeps values for membersTTL; it is dropped whole once it holds
// membersMax of them, which bounds it without bookkeeping.
type ttlCache[V any] struct {
	mu sync.Mutex
	m  map[string]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v  V
	at time.Time
}

// get returns the value of key if it is younger than membersTTL.
func (c *ttlCache[V]) get(key string, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Sub(e.at) >= membersTTL {
		var zero V
		return zero, false
	}
	return e.v, true
}

// drop forgets key.
func (c *ttlCache[V]) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

func (c *ttlCache[V]) put(key string, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= membersMax {
		c.m = map[string]ttlEntry[V]{}
	}
	c.m[key] = ttlEntry[V]{v, now}
}

// membersOf returns the conversation's members if user is one. A cached
// list that lacks the user is read again: they may just have joined. A
// list that still holds a user who left is dropped when their departure
// is pushed through this node (forgetDeparture).
func (s *Service) membersOf(ctx context.Context, user, conv string) ([]string, error) {
	now := time.Now()
	if members, ok := s.members.get(conv, now); ok && slices.Contains(members, user) {
		return members, nil
	}
	resp, err := s.persistence.Conversation(ctx, &persistencev1.ConversationRequest{UserId: user, ConversationId: conv})
	if err != nil {
		return nil, err
	}
	members := resp.GetConversation().GetMemberIds()
	s.members.put(conv, members, now)
	return members, nil
}

// typing answers a typing frame with the indicator as sent and forwards
// it to the other members' live devices in the background.
func typing(ctx context.Context, c *conn, b *clientv1.ClientFrame_Typing) *clientv1.ServerFrame {
	t := b.Typing
	conv := t.GetConversationId()
	if conv == "" {
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "conversation_id is required", "")
	}
	members, err := c.svc.membersOf(ctx, c.user, conv)
	if err != nil {
		return failed(err)
	}
	ind := &chatv1.Typing{ConversationId: conv, UserId: c.user, DeviceId: c.device, Stopped: t.GetStopped(),
		ExpiresInMs: uint32(TypingExpiry.Milliseconds())}
	answer := &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Typing{Typing: &clientv1.TypingBatch{Typing: []*chatv1.Typing{ind}}}}
	now := time.Now()
	c.mu.Lock()
	// A stop always goes through, so an indicator never outlives typing
	// by more than its expiry because of the rate limit.
	forward := t.GetStopped() || now.Sub(c.lastTyping) >= typingEvery
	if forward {
		c.lastTyping = now
	}
	c.mu.Unlock()
	if !forward {
		return answer
	}
	others := make([]string, 0, len(members))
	for _, m := range members {
		if m != c.user {
			others = append(others, m)
		}
	}
	go c.svc.pushTyping(ind, others)
	return answer
}

// pushTyping delivers an indicator to the edges holding the users.
func (s *Service) pushTyping(ind *chatv1.Typing, users []string) {
	if len(users) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), typingPush)
	defer cancel()
	resp, err := s.presence.Locate(ctx, &presencev1.LocateRequest{UserIds: users})
	if err != nil {
		s.log.Debug("edge: typing not forwarded", "err", err)
		return
	}
	byEdge := map[string][]string{}
	for _, l := range resp.GetLocations() {
		for _, addr := range l.GetPushAddresses() {
			if !slices.Contains(byEdge[addr], l.GetUserId()) {
				byEdge[addr] = append(byEdge[addr], l.GetUserId())
			}
		}
	}
	for addr, us := range byEdge {
		if addr == s.pushAddr {
			s.hub.deliver(item{typing: ind}, us)
			continue
		}
		peer, err := s.peer(addr)
		if err == nil {
			_, err = edgev1.NewEdgeServiceClient(peer).Push(ctx, &edgev1.PushRequest{Deliveries: []*edgev1.Delivery{{Typing: ind, UserIds: us}}})
		}
		if err != nil {
			s.log.Debug("edge: typing not pushed", "edge", addr, "err", err)
		}
	}
}

// peer is a connection to another edge node's Push.
func (s *Service) peer(addr string) (*grpc.ClientConn, error) {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	if c := s.peers[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("edge client %s: %w", addr, err)
	}
	if s.peers == nil {
		s.peers = map[string]*grpc.ClientConn{}
	}
	s.peers[addr] = c
	return c, nil
}

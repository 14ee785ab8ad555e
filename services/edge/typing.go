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
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// Typing indicators never touch Kafka or a store: the edge that receives
// one checks membership (access.go), locates the other members' sessions
// (presence) and pushes to their edges itself. Losing one costs
// nothing, since the typist renews it every few seconds.
const (
	// TypingExpiry is how long a device shows an indicator that is not
	// renewed.
	TypingExpiry = 6 * time.Second
	// typingEvery is the least time between two indicators a connection
	// forwards; more are answered but not sent on.
	typingEvery = 500 * time.Millisecond
	typingPush  = 2 * time.Second
)

// typing answers a typing frame with the indicator as sent and forwards
// it to the other members' live devices in the background.
func typing(ctx context.Context, c *conn, b *clientv1.ClientFrame_Typing) *clientv1.ServerFrame {
	t := b.Typing
	conv := t.GetConversationId()
	if conv == "" {
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "conversation_id is required", "")
	}
	members, err := c.svc.access.typingMembers(ctx, c.user, conv)
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
	resp, err := s.clients.presence.Locate(ctx, &presencev1.LocateRequest{UserIds: users})
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
		if addr == s.peers.self {
			s.hub.deliver(item{typing: ind}, us)
			continue
		}
		peer, err := s.peers.get(addr)
		if err == nil {
			_, err = edgev1.NewEdgeServiceClient(peer).Push(ctx, &edgev1.PushRequest{Deliveries: []*edgev1.Delivery{{Typing: ind, UserIds: us}}})
		}
		if err != nil {
			s.log.Debug("edge: typing not pushed", "edge", addr, "err", err)
		}
	}
}

// peers are this node's connections to other edges' Push: typing
// indicators are routed by the edge that receives them, not by fan-out.
type peers struct {
	// self is this node's own push address; its users' indicators are
	// delivered without a call.
	self string
	// mu guards conns; a leaf in the lock order (package doc).
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// get is a connection to the edge at addr, dialled on first use.
func (p *peers) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("edge client %s: %w", addr, err)
	}
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

package edge

import (
	"context"
	"time"

	"github.com/parleychat/parley/pkg/server/push"

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
	forward := t.GetStopped() || now.Sub(time.Unix(0, c.lastTyping)) >= typingEvery
	if forward {
		c.lastTyping = now.UnixNano()
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
	if others, err = c.svc.access.typingTo(ctx, c.user, conv, others); err != nil {
		return failed(err)
	}
	go c.svc.pushTyping(ind, others)
	return answer
}

// pushTyping delivers an indicator to the edges holding the users,
// planned and pushed the way fan-out delivers the log (package push);
// this node's own users get theirs without a call.
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
	plan := push.Plan([]push.Item{{Delivery: &edgev1.Delivery{Typing: ind}, Recipients: users}}, resp.GetLocations())
	if own, ok := plan[s.peers.self]; ok {
		delete(plan, s.peers.self)
		for _, d := range own {
			s.hub.deliver(item{typing: ind}, d.GetUserIds())
		}
	}
	if err := s.peers.Push(ctx, plan); err != nil {
		s.log.Debug("edge: typing not pushed", "err", err)
	}
}

// peers are this node's connections to other edges' Push: a typing
// indicator goes from the edge that receives it straight to the others,
// never through Kafka or fan-out.
type peers struct {
	// self is this node's own push address.
	self string
	push.Edges
}

package edge

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// MaxPresenceUsers bounds one get_presence.
const MaxPresenceUsers = 200

// getPresence answers get_presence.
func getPresence(ctx context.Context, c *conn, b *clientv1.ClientFrame_GetPresence) *clientv1.ServerFrame {
	ps, err := c.presenceOf(ctx, b.GetPresence.GetUserIds())
	if err != nil {
		return failed(err)
	}
	if ps, err = c.svc.access.hideBlockers(ctx, c.user, ps); err != nil {
		return failed(err)
	}
	return presenceList(ps)
}

// watchPresence replaces the connection's watch set (watch.go) and answers
// the watched users' presence now.
func watchPresence(ctx context.Context, c *conn, b *clientv1.ClientFrame_WatchPresence) *clientv1.ServerFrame {
	ps, err := c.watch(ctx, b.WatchPresence.GetUserIds())
	if err != nil {
		return failed(err)
	}
	return presenceList(ps)
}

func presenceList(ps []*chatv1.Presence) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Presence{Presence: &clientv1.PresenceList{Presence: ps}}}
}

// setIdle reports the device's idle flag to presence when it changed: a
// user idle on every device is away.
func setIdle(_ context.Context, c *conn, b *clientv1.ClientFrame_SetIdle) *clientv1.ServerFrame {
	c.mu.Lock()
	changed := c.idle != b.SetIdle.GetIdle()
	c.idle = b.SetIdle.GetIdle()
	s := c.sessionLocked()
	c.mu.Unlock()
	if changed {
		c.svc.reporter.update(s)
	}
	return pong()
}

// presenceOf answers get_presence for the connection's user.
func (c *conn) presenceOf(ctx context.Context, users []string) ([]*chatv1.Presence, error) {
	if len(users) == 0 || len(users) > MaxPresenceUsers {
		return nil, status.Errorf(codes.InvalidArgument, "ask about 1 to %d users", MaxPresenceUsers)
	}
	if err := c.svc.access.seePresence(ctx, c.user, users); err != nil {
		return nil, err
	}
	resp, err := c.svc.clients.presence.Status(ctx, &presencev1.StatusRequest{UserIds: users})
	if err != nil {
		return nil, err
	}
	out := make([]*chatv1.Presence, 0, len(resp.GetStatuses()))
	for _, st := range resp.GetStatuses() {
		out = append(out, toPresence(st))
	}
	return out, nil
}

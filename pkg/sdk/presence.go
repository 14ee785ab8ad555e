package sdk

import (
	"context"
	"fmt"
	"slices"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// Presence asks whether users are online, or since when they are not.
// Only users you share a conversation with may be asked about.
func (c *Client) Presence(ctx context.Context, users ...string) ([]*chatv1.Presence, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetPresence{GetPresence: &clientv1.GetPresence{UserIds: users}}})
	if err != nil {
		return nil, err
	}
	if resp.GetPresence() == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return resp.GetPresence().GetPresence(), nil
}

// WatchPresence replaces the users whose presence changes this client is
// pushed on PresenceUpdates() (none with no users), and returns their
// presence now. Changes come at most once per user per second. With
// Options.Reconnect the watch is renewed on every new connection, and the
// users' presence then is delivered on PresenceUpdates(), so nothing that
// changed while the client was away goes unseen.
func (c *Client) WatchPresence(ctx context.Context, users ...string) ([]*chatv1.Presence, error) {
	ps, err := c.watch(ctx, users)
	if err != nil {
		return nil, err
	}
	c.pos.mu.Lock()
	c.pos.watching = slices.Clone(users)
	c.pos.mu.Unlock()
	return ps, nil
}

func (c *Client) watch(ctx context.Context, users []string) ([]*chatv1.Presence, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_WatchPresence{WatchPresence: &clientv1.WatchPresence{UserIds: users}}})
	if err != nil {
		return nil, err
	}
	if resp.GetPresence() == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return resp.GetPresence().GetPresence(), nil
}

// rewatch renews the watch on a new connection: a watch lives as long as
// the connection it was made on.
func (c *Client) rewatch() {
	c.pos.mu.Lock()
	users := slices.Clone(c.pos.watching)
	c.pos.mu.Unlock()
	if len(users) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	ps, err := c.watch(ctx, users)
	if err != nil {
		// The next connection tries again; this one may already be gone.
		return
	}
	c.onPresence(ps)
}

// PresenceUpdates delivers presence changes of watched users. The oldest
// are dropped when the app does not keep up; Presence gives the current.
func (c *Client) PresenceUpdates() <-chan *chatv1.Presence { return c.pos.presence }

// SetIdle says whether the user is idle on this device (app in the
// background): a user idle on every device shows away.
func (c *Client) SetIdle(ctx context.Context, idle bool) error {
	_, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetIdle{SetIdle: &clientv1.SetIdle{Idle: idle}}})
	return err
}

func (c *Client) onPresence(ps []*chatv1.Presence) {
	c.pos.mu.Lock()
	defer c.pos.mu.Unlock()
	for _, p := range ps {
		sendDropOldest(c.pos.presence, p)
	}
}

package sdk

import (
	"context"
	"fmt"

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

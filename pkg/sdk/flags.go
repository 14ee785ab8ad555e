package sdk

import (
	"context"
	"fmt"
	"slices"

	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// SetMuted mutes (or unmutes) notifications of a conversation for the
// user: their own setting, private to them and the same on all their
// devices, which are each pushed the change (FlagUpdates) and show it in
// the conversation list (Conversation.Muted). It returns the user's flags
// after the call. Setting it to what it is changes nothing. Not a member:
// a *wire.Error with NOT_FOUND, as for a conversation that does not exist.
func (c *Client) SetMuted(ctx context.Context, conversationID string, muted bool) (*chatv1.ConversationFlags, error) {
	return c.setFlags(ctx, &clientv1.SetConversationFlags{ConversationId: conversationID, Muted: proto.Bool(muted)})
}

// SetPinned pins (or unpins) a conversation for the user: pinned ones come
// first in their conversation list. Like SetMuted, private and kept for
// all their devices.
func (c *Client) SetPinned(ctx context.Context, conversationID string, pinned bool) (*chatv1.ConversationFlags, error) {
	return c.setFlags(ctx, &clientv1.SetConversationFlags{ConversationId: conversationID, Pinned: proto.Bool(pinned)})
}

func (c *Client) setFlags(ctx context.Context, f *clientv1.SetConversationFlags) (*chatv1.ConversationFlags, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetFlags{SetFlags: f}})
	if err != nil {
		return nil, err
	}
	if fs := resp.GetFlags().GetFlags(); len(fs) == 1 {
		return fs[0], nil
	}
	return nil, fmt.Errorf("unexpected answer %v", resp)
}

// FlagUpdates delivers the user's own conversation flags as they change,
// on any of their devices (this one included). The oldest are dropped when
// the app does not keep up; the conversation list has the current ones.
func (c *Client) FlagUpdates() <-chan *chatv1.ConversationFlags { return c.pos.flags }

func (c *Client) onFlags(fs []*chatv1.ConversationFlags) {
	c.pos.mu.Lock()
	defer c.pos.mu.Unlock()
	for _, f := range fs {
		sendDropOldest(c.pos.flags, f)
	}
}

// SeenBy returns who has read the message at seq of a conversation,
// sorted: every user whose read position there is at or beyond seq, other
// than the message's author (whose own post counts as read by them). It is
// derived from read positions (Receipts), not kept per message, so it
// costs two requests and holds for any event. Users who left after
// reading still count: they did see it. A seq with no event is
// MESSAGE_NOT_FOUND; a non-member gets NOT_FOUND.
func (c *Client) SeenBy(ctx context.Context, conversationID string, seq uint64) ([]string, error) {
	if seq == 0 {
		return nil, wire.Errorf(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "seq must be at least 1")
	}
	rs, err := c.Receipts(ctx, conversationID)
	if err != nil {
		return nil, err
	}
	after := seq - 1
	p, err := c.History(ctx, &clientv1.GetHistory{ConversationId: conversationID, AfterSeq: &after, Limit: 1})
	if err != nil {
		return nil, err
	}
	evs := p.GetEvents()
	if len(evs) == 0 || evs[0].GetSeq() != seq {
		return nil, wire.Errorf(chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND, "conversation %s has no event at seq %d", conversationID, seq)
	}
	author := evs[0].GetSenderId()
	var out []string
	for _, r := range rs {
		if u := r.GetUserId(); u != author && r.GetReadSeq() >= seq && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out, nil
}

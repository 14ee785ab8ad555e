package sdk

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// SetTyping tells the other members' live devices that you are typing in
// a conversation (call it again every few seconds while typing), or that
// you stopped. Nothing is stored.
func (c *Client) SetTyping(ctx context.Context, conversationID string, stopped bool) error {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Typing{Typing: &clientv1.SetTyping{
		ConversationId: conversationID, Stopped: stopped,
	}}})
	if err != nil {
		return err
	}
	if resp.GetTyping() == nil {
		return fmt.Errorf("unexpected answer %v", resp)
	}
	return nil
}

// Typing delivers the typing indicators pushed by other members. The
// oldest are dropped when the app does not keep up; a TypingTracker turns
// them into who is typing now.
func (c *Client) Typing() <-chan *chatv1.Typing { return c.pos.typing }

func (c *Client) onTyping(ts []*chatv1.Typing) {
	c.pos.mu.Lock()
	defer c.pos.mu.Unlock()
	for _, t := range ts {
		sendDropOldest(c.pos.typing, t)
	}
}

// TypingTracker says who is typing where: an indicator lasts its
// expires_in_ms unless renewed, and ends at once when stopped. Safe for
// concurrent use.
type TypingTracker struct {
	now func() time.Time
	mu  sync.Mutex
	// until is, per conversation and user, when the indicator expires.
	until map[string]map[string]time.Time
}

// NewTypingTracker uses now as its clock (time.Now when nil).
func NewTypingTracker(now func() time.Time) *TypingTracker {
	if now == nil {
		now = time.Now
	}
	return &TypingTracker{now: now, until: map[string]map[string]time.Time{}}
}

// Apply folds an indicator in.
func (t *TypingTracker) Apply(ind *chatv1.Typing) {
	t.mu.Lock()
	defer t.mu.Unlock()
	conv := ind.GetConversationId()
	if ind.GetStopped() {
		delete(t.until[conv], ind.GetUserId())
		return
	}
	if t.until[conv] == nil {
		t.until[conv] = map[string]time.Time{}
	}
	t.until[conv][ind.GetUserId()] = t.now().Add(time.Duration(ind.GetExpiresInMs()) * time.Millisecond)
}

// Typing lists, sorted, the users typing in a conversation now.
func (t *TypingTracker) Typing(conversationID string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var out []string
	for u, until := range t.until[conversationID] {
		if now.Before(until) {
			out = append(out, u)
		} else {
			delete(t.until[conversationID], u)
		}
	}
	slices.Sort(out)
	return out
}

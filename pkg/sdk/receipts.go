package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// receiptBuffer bounds the pushed positions and statuses waiting unread.
// They are state, not history: when the app falls behind, the oldest are
// dropped, and Receipts reads the current positions again.
const receiptBuffer = 1024

// defaultAckInterval is how often AckDelivered reports progress.
const defaultAckInterval = 500 * time.Millisecond

// positions is the client's receipt state: pushed positions for the app,
// and the status of its own messages when Options.TrackStatus is set.
type positions struct {
	updates  chan *chatv1.Receipt
	statuses chan MessageStatus
	typing   chan *chatv1.Typing
	presence chan *chatv1.Presence
	flags    chan *chatv1.ConversationFlags
	// watching is the last watch set, renewed on every new connection.
	watching []string

	// mu guards tracker and loaded, and makes drop-oldest sends atomic.
	mu      sync.Mutex
	tracker *StatusTracker
	// loaded holds the conversations whose positions were read once (or
	// are being read), so a status counts devices that reported before
	// this client came.
	loaded map[string]bool
}

func newPositions() *positions {
	return &positions{
		updates:  make(chan *chatv1.Receipt, receiptBuffer),
		statuses: make(chan MessageStatus, receiptBuffer),
		typing:   make(chan *chatv1.Typing, receiptBuffer),
		presence: make(chan *chatv1.Presence, receiptBuffer),
		flags:    make(chan *chatv1.ConversationFlags, receiptBuffer),
		loaded:   map[string]bool{},
	}
}

// ReceiptUpdates delivers positions pushed by the server as members'
// devices report them (yours included). The oldest are dropped when the
// app does not keep up; Receipts gives the current ones.
func (c *Client) ReceiptUpdates() <-chan *chatv1.Receipt { return c.pos.updates }

// Statuses delivers, with Options.TrackStatus, every change of status of
// the messages this client sent: delivered to N devices and read by M
// members, other than you. The oldest are dropped when the app does not
// keep up; Status gives the current one.
func (c *Client) Statuses() <-chan MessageStatus { return c.pos.statuses }

// Status is the current status of a message this client sent, with
// Options.TrackStatus.
func (c *Client) Status(conversationID string, seq uint64) (MessageStatus, bool) {
	c.pos.mu.Lock()
	defer c.pos.mu.Unlock()
	if c.pos.tracker == nil {
		return MessageStatus{}, false
	}
	return c.pos.tracker.Status(conversationID, seq)
}

// Mark reports this device's position in a conversation: it has every
// event up to delivered, and its user has read up to read (either may be
// zero). It returns the device's position after the mark; positions only
// move forward.
func (c *Client) Mark(ctx context.Context, conversationID string, delivered, read uint64) (*chatv1.Receipt, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Mark{Mark: &clientv1.Mark{
		ConversationId: conversationID, DeliveredSeq: delivered, ReadSeq: read,
	}}})
	if err != nil {
		return nil, err
	}
	if rs := resp.GetReceipts().GetReceipts(); len(rs) == 1 {
		return rs[0], nil
	}
	return nil, fmt.Errorf("unexpected answer %v", resp)
}

// Receipts reads every device position in a conversation.
func (c *Client) Receipts(ctx context.Context, conversationID string) ([]*chatv1.Receipt, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetReceipts{GetReceipts: &clientv1.GetReceipts{ConversationId: conversationID}}})
	if err != nil {
		return nil, err
	}
	if resp.GetReceipts() == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return resp.GetReceipts().GetReceipts(), nil
}

// SyncConversations lists the conversations that changed since the token
// of an earlier call (all of them with ""), each with its unread count,
// and the token for the next call. It may list a few that did not change,
// never miss one that did.
func (c *Client) SyncConversations(ctx context.Context, token string) ([]*chatv1.Conversation, string, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{ChangedSince: token}}})
	if err != nil {
		return nil, "", err
	}
	l := resp.GetConversations()
	if l == nil {
		return nil, "", fmt.Errorf("unexpected answer %v", resp)
	}
	return l.GetConversations(), l.GetSyncToken(), nil
}

// onReceipts handles pushed positions.
func (c *Client) onReceipts(rs []*chatv1.Receipt) {
	p := c.pos
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rs {
		sendDropOldest(p.updates, r)
		if p.tracker != nil {
			for _, s := range p.tracker.Apply(r) {
				sendDropOldest(p.statuses, s)
			}
		}
	}
}

// sent starts tracking a message this client sent. The first one in a
// conversation also reads its positions, in the background: devices that
// reported before this client came count too.
func (c *Client) sent(a *clientv1.Accepted) {
	p := c.pos
	conv := a.GetConversationId()
	p.mu.Lock()
	if p.tracker == nil || a.GetSeq() == 0 {
		p.mu.Unlock()
		return
	}
	p.tracker.Sent(conv, a.GetSeq())
	load := !p.loaded[conv]
	p.loaded[conv] = true
	p.mu.Unlock()
	if !load {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		defer cancel()
		rs, err := c.Receipts(ctx, conv)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			// Read again on the next message sent.
			delete(p.loaded, conv)
			return
		}
		for _, s := range p.tracker.Load(conv, rs) {
			sendDropOldest(p.statuses, s)
		}
	}()
}

// ackLoop reports, every interval, how far the app has read Events() in
// each conversation as this device's delivered position: what a sender
// sees as "delivered to this device".
func (c *Client) ackLoop(interval time.Duration) {
	acked := map[string]uint64{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.done:
			return
		case <-t.C:
		}
		c.mu.Lock()
		todo := map[string]uint64{}
		for conv, cur := range c.seen {
			if cur.seq > acked[conv] {
				todo[conv] = cur.seq
			}
		}
		c.mu.Unlock()
		for conv, seq := range todo {
			ctx, cancel := context.WithTimeout(c.ctx, interval*10)
			_, err := c.Mark(ctx, conv, seq, 0)
			cancel()
			// A refusal (say, a conversation left) would be refused again.
			var refused *wire.Error
			if err == nil || errors.As(err, &refused) {
				acked[conv] = seq
			}
		}
	}
}

// sendDropOldest sends v, dropping the oldest queued value when ch is
// full. Callers serialise their sends.
func sendDropOldest[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

package sdk

import (
	"slices"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// MessageStatus is how far one of your messages got: it was accepted (it
// holds a seq, so it is on the replicated event log, the store of record),
// delivered to Delivered devices of other members and read by Read other
// members. Counts only grow.
type MessageStatus struct {
	ConversationID string
	Seq            uint64
	Delivered      int
	Read           int
}

// maxTracked bounds the messages a StatusTracker follows per conversation:
// statuses of older ones are rarely looked at and can be derived again from
// Receipts.
const maxTracked = 256

// StatusTracker derives per-message status for one user's messages from
// device positions (receipts). Positions, not rows per message per member,
// are what the server keeps, so a status is computed here: a message at seq
// s is delivered to every device of another member whose delivered
// position is at least s, and read by every other member whose read
// position is.
//
// Feed it the positions a conversation already has (Load, from
// Client.Receipts), your sent messages (Sent) and every receipt pushed
// (Apply); Apply returns the statuses that changed. Not safe for concurrent
// use.
type StatusTracker struct {
	user  string
	convs map[string]*tracked
}

type tracked struct {
	delivered map[[2]string]uint64 // (user, device) → delivered position
	read      map[string]uint64    // user → read position
	sent      []uint64             // own seqs, ascending, at most maxTracked
	status    map[uint64]MessageStatus
}

// NewStatusTracker tracks the messages user sends.
func NewStatusTracker(user string) *StatusTracker {
	return &StatusTracker{user: user, convs: map[string]*tracked{}}
}

func (t *StatusTracker) conv(id string) *tracked {
	c := t.convs[id]
	if c == nil {
		c = &tracked{delivered: map[[2]string]uint64{}, read: map[string]uint64{}, status: map[uint64]MessageStatus{}}
		t.convs[id] = c
	}
	return c
}

// Load folds a conversation's positions in; it returns the statuses that
// changed.
func (t *StatusTracker) Load(conversationID string, receipts []*chatv1.Receipt) []MessageStatus {
	c := t.conv(conversationID)
	for _, r := range receipts {
		c.fold(r)
	}
	return t.recount(conversationID, c)
}

// Sent starts tracking your message at seq; it returns its status.
func (t *StatusTracker) Sent(conversationID string, seq uint64) MessageStatus {
	c := t.conv(conversationID)
	if _, ok := c.status[seq]; !ok {
		i, _ := slices.BinarySearch(c.sent, seq)
		c.sent = slices.Insert(c.sent, i, seq)
		if len(c.sent) > maxTracked {
			delete(c.status, c.sent[0])
			c.sent = c.sent[1:]
		}
		c.status[seq] = MessageStatus{ConversationID: conversationID, Seq: seq}
		t.recount(conversationID, c)
	}
	return c.status[seq]
}

// Apply folds a pushed receipt in; it returns the statuses that changed.
func (t *StatusTracker) Apply(r *chatv1.Receipt) []MessageStatus {
	c := t.conv(r.GetConversationId())
	if !c.fold(r) {
		return nil
	}
	return t.recount(r.GetConversationId(), c)
}

// Status is the current status of a tracked message.
func (t *StatusTracker) Status(conversationID string, seq uint64) (MessageStatus, bool) {
	c := t.convs[conversationID]
	if c == nil {
		return MessageStatus{}, false
	}
	s, ok := c.status[seq]
	return s, ok
}

// fold keeps the highest position of each device and user, as the server
// does, so receipts arriving late or twice change nothing.
func (c *tracked) fold(r *chatv1.Receipt) bool {
	moved := false
	k := [2]string{r.GetUserId(), r.GetDeviceId()}
	if d := max(r.GetDeliveredSeq(), r.GetReadSeq()); d > c.delivered[k] {
		c.delivered[k], moved = d, true
	}
	if r.GetReadSeq() > c.read[r.GetUserId()] {
		c.read[r.GetUserId()], moved = r.GetReadSeq(), true
	}
	return moved
}

func (t *StatusTracker) recount(id string, c *tracked) []MessageStatus {
	var changed []MessageStatus
	for _, seq := range c.sent {
		s := MessageStatus{ConversationID: id, Seq: seq}
		for k, d := range c.delivered {
			if k[0] != t.user && d >= seq {
				s.Delivered++
			}
		}
		for u, r := range c.read {
			if u != t.user && r >= seq {
				s.Read++
			}
		}
		if s != c.status[seq] {
			c.status[seq] = s
			changed = append(changed, s)
		}
	}
	return changed
}

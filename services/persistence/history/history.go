// Package history defines the store behind persistence: the views of the
// event log that reads are served from. Every backend (the embedded Pebble
// store, Cassandra) passes the conformance suite in historytest.
package history

import (
	"context"
	"errors"
	"unicode/utf8"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// ErrNotFound means the store has no such conversation.
var ErrNotFound = errors.New("conversation not found")

// Page limits.
const (
	DefaultLimit = 50
	MaxLimit     = 200
	// PreviewRunes bounds last_message_preview.
	PreviewRunes = 120
)

// Query pages one conversation. With Forward the page holds the oldest
// events after AfterSeq; otherwise the newest before BeforeSeq (the newest
// of all when BeforeSeq is 0).
type Query struct {
	Forward   bool
	AfterSeq  uint64
	BeforeSeq uint64
	Limit     int
}

// Page is events in ascending seq order; HasMore says whether the query's
// direction holds more.
type Page struct {
	Events  []*chatv1.Event
	HasMore bool
}

// Store is the contract every backend keeps.
type Store interface {
	// Apply writes records of the event log. Records of one conversation
	// arrive in seq order. Apply is idempotent: writing a record again, or
	// replaying the whole log, leaves the same state. It returns nil only
	// once the records are durable.
	Apply(ctx context.Context, recs []*logv1.EventRecord) error
	// History pages a conversation. ErrNotFound if it does not exist.
	History(ctx context.Context, conversationID string, q Query) (Page, error)
	// Conversation returns one conversation's summary, members included.
	// ErrNotFound if it does not exist.
	Conversation(ctx context.Context, conversationID string) (*chatv1.Conversation, error)
	// Conversations lists a user's conversations, most recent activity
	// first, at most limit (DefaultLimit when 0, capped at MaxLimit).
	Conversations(ctx context.Context, userID string, limit int) ([]*chatv1.Conversation, error)
	// Close releases the store.
	Close() error
}

// ClampLimit applies the default and the cap to a page size.
func ClampLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

// Summarize folds one event into a conversation summary. It is what every
// backend applies, so the views agree. Events at or below the summary's
// last seq are ignored, which makes replays harmless. It reports the users
// who became members.
func Summarize(c *chatv1.Conversation, ev *chatv1.Event) (joined []string, changed bool) {
	if ev.GetSeq() <= c.GetLastSeq() {
		return nil, false
	}
	c.ConversationId = ev.GetConversationId()
	c.LastSeq = ev.GetSeq()
	c.LastActivity = ev.GetTime()
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_ConversationCreated:
		c.Kind = b.ConversationCreated.GetKind()
		c.Title = b.ConversationCreated.GetTitle()
		for _, m := range b.ConversationCreated.GetMemberIds() {
			if !IsMember(c, m) {
				c.MemberIds = append(c.MemberIds, m)
				joined = append(joined, m)
			}
		}
	case *chatv1.Event_MemberAdded:
		if m := b.MemberAdded.GetUserId(); !IsMember(c, m) {
			c.MemberIds = append(c.MemberIds, m)
			joined = append(joined, m)
		}
	case *chatv1.Event_MessagePosted:
		c.LastMessagePreview = Preview(b.MessagePosted.GetText())
	}
	return joined, true
}

// IsMember reports whether user is in the summary's member list.
func IsMember(c *chatv1.Conversation, user string) bool {
	for _, m := range c.GetMemberIds() {
		if m == user {
			return true
		}
	}
	return false
}

// Preview cuts text to PreviewRunes runes.
func Preview(text string) string {
	if utf8.RuneCountInString(text) <= PreviewRunes {
		return text
	}
	r := []rune(text)
	return string(r[:PreviewRunes-1]) + "…"
}

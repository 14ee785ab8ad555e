// Package history defines the store behind persistence: the views of the
// event log that reads are served from. Every backend (the embedded Pebble
// store, Cassandra) passes the conformance suite in historytest.
package history

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	"github.com/parleychat/parley/pkg/server/membership"
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
	// Viewer is the user reading, for ReactionCount.Me; empty: nobody.
	Viewer string
	// LastSeq, when not 0, is the conversation's last seq as the caller
	// has just read it (from its summary, authorizing the read): a
	// backend that would read it again takes this one instead, saving a
	// round trip. The page is then as of the caller's read.
	LastSeq uint64
}

// Page is events in ascending seq order; HasMore says whether the query's
// direction holds more. Messages show as they are now (see Overlay); the
// edit, delete and reaction events are in the page at their own seqs too,
// so a device syncing forward learns what changed in messages it holds.
type Page struct {
	Events  []*chatv1.Event
	HasMore bool
}

// Store is the contract every backend keeps.
type Store interface {
	// Apply writes records of the event log. Records of one conversation
	// arrive in log order. Apply is idempotent: writing a record again, or
	// replaying the whole log, leaves the same state (but for ChangedAt
	// times, which may move later: a replayed conversation may show as
	// changed again, never as unchanged when it did change). It returns nil
	// only once the records are durable.
	//
	// A record holds an event, a receipt (see ApplyReceipt), a contact
	// change or a declined invitation (nothing to store: see Contacts; the
	// invitee's inbox says it), a block or
	// unblock (shown to the blocker alone by Blocks; the latest wins, see
	// NewerBlock) or a user's conversation flags (the highest version
	// wins; see NewerFlags). An event also moves its sender's read
	// position, and its sending device's delivered position, to the event's
	// seq: what you post you have read.
	Apply(ctx context.Context, recs []*logv1.EventRecord) error
	// History pages a conversation. ErrNotFound if it does not exist.
	History(ctx context.Context, conversationID string, q Query) (Page, error)
	// Conversation returns one conversation's summary, members included.
	// ErrNotFound if it does not exist.
	Conversation(ctx context.Context, conversationID string) (*chatv1.Conversation, error)
	// Conversations lists a user's conversations in ListOrder (pinned
	// first, then most recent activity), at most q.Limit (DefaultLimit when
	// 0, capped at MaxLimit), each with the user's ReadSeq, UnreadCount
	// (see CountsAsUnread) and own Muted and Pinned flags. With
	// q.ChangedSince set it lists only conversations whose summary changed,
	// or whose read position or flags for this user changed, at or after
	// that time as
	// the store saw it (the time of the Apply, not of the event: a view that
	// catches up after an outage shows the change when it lands). A
	// change becomes visible at most ChangeLag after the time it counts
	// as changed at.
	Conversations(ctx context.Context, userID string, q ListQuery) ([]*chatv1.Conversation, error)
	// ConversationFor returns one conversation as Conversations lists it
	// for userID (ReadSeq, UnreadCount, own flags), whether or not they
	// are a member: how a user reads an audience they belong to by an
	// attribute. ErrNotFound if it does not exist.
	ConversationFor(ctx context.Context, conversationID, userID string) (*chatv1.Conversation, error)
	// Receipts lists one receipt per device that has a position in the
	// conversation (by a receipt or by posting), each with its user's read
	// position, ordered by user then device. ErrNotFound if the
	// conversation does not exist.
	Receipts(ctx context.Context, conversationID string) ([]*chatv1.Receipt, error)
	// Blocks lists the users blockerID blocks, in byte order: those whose
	// latest block record (see NewerBlock) blocks them. A user who blocks
	// nobody has an empty list, not an error.
	Blocks(ctx context.Context, blockerID string) ([]string, error)
	// Contacts lists the user's contact list in user id order: for each
	// other user, the state of the ContactUpdated item of the user's
	// inbox (CONVERSATION_KIND_INBOX) with the highest seq that names
	// them, with that seq and the item's time, leaving out those whose
	// state is none. Apply folds it from those items (a ContactChange
	// record, the pair's own, changes nothing here). A user without any
	// has an empty list, not an error.
	Contacts(ctx context.Context, userID string) ([]*chatv1.Contact, error)
	// Close releases the store.
	Close() error
}

// ChangeLag bounds how long after its change time a change may become
// visible to Conversations. A backend stamps a change with its clock before
// the write that makes the change visible, and stamps it again (later) when
// that write took longer than ChangeLag. Whoever hands out ChangedSince
// times must therefore take the time before listing and subtract ChangeLag
// (and any clock skew between persistence instances): otherwise a change
// landing while the list runs, stamped before the list began, would be
// missed by the next sync.
const ChangeLag = 5 * time.Second

// ListQuery selects a user's conversations.
type ListQuery struct {
	Limit int
	// ChangedSince, when not zero, keeps only what changed at or after it.
	ChangedSince time.Time
}

// ApplyReceipt folds a receipt into a device's position: each seq only
// moves forward, and reading implies delivered. Backends use it so that
// positions agree; it reports whether anything moved.
func ApplyReceipt(pos *chatv1.Receipt, r *chatv1.Receipt) bool {
	moved := false
	if d := max(r.GetDeliveredSeq(), r.GetReadSeq()); d > pos.GetDeliveredSeq() {
		pos.DeliveredSeq, moved = d, true
	}
	if r.GetReadSeq() > pos.GetReadSeq() {
		pos.ReadSeq, moved = r.GetReadSeq(), true
	}
	return moved
}

// NewerFlags reports whether f should replace what a store holds for its
// user and conversation (held: the version stored, 0 for none). Flags
// records carry a version the sequencer counts per user and conversation,
// so keeping the highest makes Apply idempotent in any order.
func NewerFlags(f *chatv1.ConversationFlags, held uint64) bool {
	return f.GetVersion() > held
}

// BlockStamp is the version of a block record: its time in whole
// microseconds, the resolution of Cassandra's write timestamps, so that
// every backend ranks two records alike. Block records carry no seq, but
// all those of one pair of users are in their direct conversation, one
// aggregate of the sequencer, which stamps them with strictly increasing
// times (see the ingest service's decideBlock); log order and time order
// therefore agree.
func BlockStamp(b *logv1.BlockChange) int64 {
	return b.GetTime().AsTime().UnixMicro()
}

// NewerBlock reports whether b should replace what a store holds for its
// blocker and blocked user (held: the stamp stored and whether it blocks;
// a stamp of 0 with false for nothing held). The later stamp wins, so
// applying records again, or in any order, leaves the same state. On a
// tie, which the sequencer never produces, blocking wins: it is what
// Cassandra does with two writes of one timestamp (the greater value, and
// true is greater), so the backends agree even then.
func NewerBlock(b *logv1.BlockChange, heldStamp int64, heldBlocked bool) bool {
	st := BlockStamp(b)
	return st > heldStamp || st == heldStamp && b.GetBlocked() && !heldBlocked
}

// ListOrder is the order of a conversation list: the user's pinned
// conversations first, then the others; within each, the most recent
// activity first, ties by id. Pinned ones are ordered by activity too
// (not by when they were pinned), so a list is one sort by what the
// entries show.
func ListOrder(a, b *chatv1.Conversation) int {
	if a.GetPinned() != b.GetPinned() {
		if a.GetPinned() {
			return -1
		}
		return 1
	}
	if c := b.GetLastActivity().AsTime().Compare(a.GetLastActivity().AsTime()); c != 0 {
		return c
	}
	return strings.Compare(a.GetConversationId(), b.GetConversationId())
}

// UnreadCap bounds Conversation.unread_count: a count of UnreadCap means
// that many or more. It also bounds the work of counting, which reads the
// events after the user's read position until it has UnreadCap messages.
const UnreadCap = 100

// CountsAsUnread reports whether ev, after user's read position, counts
// toward user's unread count: a message posted by someone else, or an
// inbox item that asks the user for an answer (a contact request to them,
// an invitation). Creation, membership, role, invite, edit, delete and
// reaction events do not, nor does anything user sent (posting moves
// one's read position anyway). A message deleted since it was posted
// still counts, as it did for a client that counted it live. Clients
// counting pushed events apply the same rule, so a live count and a
// listed one agree.
func CountsAsUnread(ev *chatv1.Event, user string) bool {
	switch {
	case ev.GetMessagePosted() != nil:
		return ev.GetSenderId() != user
	case ev.GetContactUpdated() != nil:
		u := ev.GetContactUpdated()
		return u.GetAction() == chatv1.ContactAction_CONTACT_ACTION_REQUESTED && !u.GetOutgoing()
	case ev.GetInvitationUpdated() != nil:
		return ev.GetInvitationUpdated().GetAction() == chatv1.InvitationAction_INVITATION_ACTION_INVITED
	}
	return false
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
// who became members and those who stopped being members (removed or
// left): a backend drops the latter's conversation-list entry, and with
// the summary's member list their access to history.
func Summarize(c *chatv1.Conversation, ev *chatv1.Event) (joined, left []string, changed bool) {
	if ev.GetSeq() <= c.GetLastSeq() {
		return nil, nil, false
	}
	c.ConversationId = ev.GetConversationId()
	c.LastSeq = ev.GetSeq()
	c.LastActivity = ev.GetTime()
	joined, left = membership.Fold(c, ev)
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessagePosted:
		c.LastMessagePreview, c.LastMessageKind = MessagePreview(b.MessagePosted)
		c.LastMessageSeq, c.LastMessageDeleted = ev.GetSeq(), false
	case *chatv1.Event_MessageEdited:
		// The sequencer says whether the target was the latest message, so
		// that Cassandra can write the preview blindly; checking the seq as
		// well costs nothing here.
		if e := b.MessageEdited; e.GetLatest() && e.GetTargetSeq() == c.GetLastMessageSeq() && !c.GetLastMessageDeleted() {
			c.LastMessagePreview = Preview(e.GetText())
		}
	case *chatv1.Event_MessageDeleted:
		if d := b.MessageDeleted; d.GetLatest() && d.GetTargetSeq() == c.GetLastMessageSeq() {
			c.LastMessagePreview, c.LastMessageDeleted = "", true
		}
	}
	return joined, left, true
}

// Previews of messages without text. They are fixed words, not prose:
// clients that localise go by Conversation.last_message_kind.
const (
	PreviewAttachment = "attachment"
	PreviewContact    = "contact"
)

// MessagePreview is a message's preview in the conversation list and its
// kind: an excerpt of its text, or a word for what it holds.
func MessagePreview(m *chatv1.MessagePosted) (string, chatv1.MessageKind) {
	kind := chatv1.MessageKind_MESSAGE_KIND_TEXT
	switch {
	case len(m.GetAttachments()) > 0:
		kind = chatv1.MessageKind_MESSAGE_KIND_ATTACHMENT
	case m.GetContact() != nil:
		kind = chatv1.MessageKind_MESSAGE_KIND_CONTACT
	}
	switch {
	case strings.TrimSpace(m.GetText()) != "":
		return Preview(m.GetText()), kind
	case kind == chatv1.MessageKind_MESSAGE_KIND_ATTACHMENT:
		return PreviewAttachment, kind
	case kind == chatv1.MessageKind_MESSAGE_KIND_CONTACT:
		return PreviewContact, kind
	}
	return "", kind
}

// IsMember reports whether user is in the summary's member list.
func IsMember(c *chatv1.Conversation, user string) bool { return membership.IsMember(c, user) }

// Preview cuts text to PreviewRunes runes.
func Preview(text string) string {
	if utf8.RuneCountInString(text) <= PreviewRunes {
		return text
	}
	r := []rune(text)
	return string(r[:PreviewRunes-1]) + "…"
}

// MessageState is what later events did to one message: its latest edit
// (a MessageEdited event), whether it was deleted, and its reactions.
type MessageState struct {
	Edit      *chatv1.Event
	Deleted   bool
	Reactions []*chatv1.ReactionCount
}

// Overlay shows a page's messages as they are now, the same way for every
// backend: a MessagePosted gets the text, links and mentions of its latest
// edit (and edited_seq, edited_time), or becomes a tombstone when deleted
// (no content, no reactions), and its reaction counts. A MessageEdited of
// a deleted message loses its text too, or history would keep what the
// delete took away. states holds the page's messages and the targets of
// its edits, by seq; events are changed in place.
func Overlay(evs []*chatv1.Event, states map[uint64]*MessageState) {
	for _, ev := range evs {
		switch b := ev.GetBody().(type) {
		case *chatv1.Event_MessagePosted:
			st := states[ev.GetSeq()]
			if st == nil {
				continue
			}
			m := b.MessagePosted
			if st.Deleted {
				b.MessagePosted = &chatv1.MessagePosted{Deleted: true}
				continue
			}
			if e := st.Edit.GetMessageEdited(); e != nil && st.Edit.GetSeq() > ev.GetSeq() {
				m.Text, m.Links, m.MentionIds = e.GetText(), e.GetLinks(), e.GetMentionIds()
				m.EditedSeq, m.EditedTime = st.Edit.GetSeq(), st.Edit.GetTime()
			}
			m.Reactions = st.Reactions
		case *chatv1.Event_MessageEdited:
			if st := states[b.MessageEdited.GetTargetSeq()]; st != nil && st.Deleted {
				e := b.MessageEdited
				b.MessageEdited = &chatv1.MessageEdited{TargetSeq: e.GetTargetSeq(), Latest: e.GetLatest()}
			}
		}
	}
}

// OverlaySeqs are the seqs whose MessageState a page needs: its messages
// and the targets of its edits, ascending, without repeats.
func OverlaySeqs(evs []*chatv1.Event) []uint64 {
	var out []uint64
	for _, ev := range evs {
		switch b := ev.GetBody().(type) {
		case *chatv1.Event_MessagePosted:
			out = append(out, ev.GetSeq())
		case *chatv1.Event_MessageEdited:
			out = append(out, b.MessageEdited.GetTargetSeq())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Reactions counts reactions per emoji, in byte order of the emoji, for
// the users whose reaction is present. me says whether viewer is one.
type Reactions struct {
	counts map[string]*chatv1.ReactionCount
}

// Add counts user's reaction with emoji.
func (r *Reactions) Add(emoji, user, viewer string) {
	if r.counts == nil {
		r.counts = map[string]*chatv1.ReactionCount{}
	}
	c := r.counts[emoji]
	if c == nil {
		c = &chatv1.ReactionCount{Emoji: emoji}
		r.counts[emoji] = c
	}
	c.Count++
	if viewer != "" && user == viewer {
		c.Me = true
	}
}

// Counts returns the counts in emoji order.
func (r *Reactions) Counts() []*chatv1.ReactionCount {
	out := make([]*chatv1.ReactionCount, 0, len(r.counts))
	for _, c := range r.counts {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *chatv1.ReactionCount) int { return strings.Compare(a.GetEmoji(), b.GetEmoji()) })
	return out
}

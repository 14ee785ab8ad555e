package cassandrastore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// eventNanos is the summary's last_activity: the event time in Unix
// nanoseconds, or null when the event has none.
func eventNanos(ev *chatv1.Event) any {
	if ev.GetTime() == nil {
		return nil
	}
	return ev.GetTime().AsTime().UnixNano()
}

const (
	updateLast    = `UPDATE conversations USING TIMESTAMP ? SET last_seq = ?, last_activity = ?, changed_at = ? WHERE conversation_id = ?`
	updateCreated = `UPDATE conversations USING TIMESTAMP ? SET kind = ?, title = ? WHERE conversation_id = ?`
	updatePreview = `UPDATE conversations USING TIMESTAMP ? SET last_message_preview = ?, last_message_seq = ?, last_message_kind = ?, last_message_deleted = false WHERE conversation_id = ?`
	// updateLastPosted is updateLast and updatePreview in one statement,
	// for the usual write whose newest event is the newest post: both
	// carry that seq as their timestamp.
	updateLastPosted = `UPDATE conversations USING TIMESTAMP ? SET last_seq = ?, last_activity = ?, changed_at = ?, last_message_preview = ?, last_message_seq = ?, last_message_kind = ?, last_message_deleted = false WHERE conversation_id = ?`
	updateEdited     = `UPDATE conversations USING TIMESTAMP ? SET last_message_preview = ? WHERE conversation_id = ?`
	updateGone       = `UPDATE conversations USING TIMESTAMP ? SET last_message_preview = '', last_message_deleted = true WHERE conversation_id = ?`
	addMembers       = `UPDATE conversations USING TIMESTAMP ? SET members = members + ? WHERE conversation_id = ?`
	insertMember     = `INSERT INTO members_by_conversation (conversation_id, user_id, joined_seq, join_pos) VALUES (?, ?, ?, ?) USING TIMESTAMP ?`
	insertUser       = `INSERT INTO conversations_by_user (user_id, conversation_id, joined_seq) VALUES (?, ?, ?) USING TIMESTAMP ?`
	// Groups (0003_groups.cql).
	setLeft      = `UPDATE conversations USING TIMESTAMP ? SET member_left[?] = ? WHERE conversation_id = ?`
	deleteMember = `DELETE FROM members_by_conversation USING TIMESTAMP ? WHERE conversation_id = ? AND user_id = ?`
	deleteUser   = `DELETE FROM conversations_by_user USING TIMESTAMP ? WHERE user_id = ? AND conversation_id = ?`
	setOwner     = `UPDATE conversations USING TIMESTAMP ? SET owner_id = ? WHERE conversation_id = ?`
	setPublic    = `UPDATE conversations USING TIMESTAMP ? SET public = ? WHERE conversation_id = ?`
	// 0008_consent.cql.
	setConsent = `UPDATE conversations USING TIMESTAMP ? SET consent = ? WHERE conversation_id = ?`
	// 0009_settings.cql.
	setContactsOnly = `UPDATE conversations USING TIMESTAMP ? SET contacts_only = ? WHERE conversation_id = ?`
	setTitle        = `UPDATE conversations USING TIMESTAMP ? SET title = ? WHERE conversation_id = ?`
	addAdmin        = `UPDATE conversations USING TIMESTAMP ? SET admins = admins + ? WHERE conversation_id = ?`
	removeAdmin     = `UPDATE conversations USING TIMESTAMP ? SET admins = admins - ? WHERE conversation_id = ?`
	addMuted        = `UPDATE conversations USING TIMESTAMP ? SET muted = muted + ? WHERE conversation_id = ?`
	removeMuted     = `UPDATE conversations USING TIMESTAMP ? SET muted = muted - ? WHERE conversation_id = ?`
	updateRead      = `UPDATE read_positions_by_conversation USING TIMESTAMP ? SET read_seq = ? WHERE conversation_id = ? AND user_id = ?`
	updateDevice    = `UPDATE device_positions USING TIMESTAMP ? SET delivered_seq = ? WHERE conversation_id = ? AND user_id = ? AND device_id = ?`
	updateUser      = `UPDATE read_positions USING TIMESTAMP ? SET read_seq = ?, changed_at = ? WHERE user_id = ? AND conversation_id = ?`
	restampConv     = `UPDATE conversations USING TIMESTAMP ? SET changed_at = ? WHERE conversation_id = ?`
	restampUser     = `UPDATE read_positions USING TIMESTAMP ? SET changed_at = ? WHERE user_id = ? AND conversation_id = ?`
	// Flags (0005_flags.cql), USING TIMESTAMP their version.
	updateFlags  = `UPDATE conversation_flags USING TIMESTAMP ? SET muted = ?, pinned = ?, version = ?, changed_at = ? WHERE user_id = ? AND conversation_id = ?`
	restampFlags = `UPDATE conversation_flags USING TIMESTAMP ? SET changed_at = ? WHERE user_id = ? AND conversation_id = ?`
)

// writeSummary queues the conversation's summary, membership and position
// writes. The summary row, the members_by_conversation rows and the
// conversation's position rows share the partition key, so they go in one
// unlogged batch (one mutation); each joined user's conversations_by_user
// row is its own partition and its own write.
//
// Only the cells that can win are written: of the events in this call, the
// highest seq sets last_seq, last_activity and changed_at, the highest
// MessagePosted the preview, ConversationCreated kind and title, and each
// position is written once, at its highest. The others would lose to those
// timestamps anyway. Every join is written.
func (s *Store) writeSummary(p *pack, w *convWrites, stamp int64) {
	var last, created, posted, edited, gone *chatv1.Event
	type join struct {
		user string
		seq  int64
		pos  int64
	}
	var joins, leaves []join
	batch := s.sess.NewBatch(gocql.UnloggedBatch)
	for _, ev := range w.events {
		seq := ev.GetSeq()
		if last == nil || seq > last.GetSeq() {
			last = ev
		}
		var users []string
		switch b := ev.GetBody().(type) {
		case *chatv1.Event_ConversationCreated:
			if created == nil || seq > created.GetSeq() {
				created = ev
			}
			users = b.ConversationCreated.GetMemberIds()
		case *chatv1.Event_MemberAdded:
			users = []string{b.MemberAdded.GetUserId()}
		case *chatv1.Event_MemberJoined:
			users = []string{b.MemberJoined.GetUserId()}
		case *chatv1.Event_MessagePosted:
			if posted == nil || seq > posted.GetSeq() {
				posted = ev
			}
		case *chatv1.Event_MessageEdited:
			// Only the sequencer knows, without a read, whether the target
			// is the latest message: it says so in latest.
			if b.MessageEdited.GetLatest() && (edited == nil || seq > edited.GetSeq()) {
				edited = ev
			}
		case *chatv1.Event_MessageDeleted:
			if b.MessageDeleted.GetLatest() && (gone == nil || seq > gone.GetSeq()) {
				gone = ev
			}
		default:
			if u := groupWrites(batch, w.id, ev); u != "" {
				leaves = append(leaves, join{user: u, seq: int64(seq)})
			}
		}
		if len(users) == 0 {
			continue
		}
		// The map keeps every entry (the reader keeps each user's first);
		// the per-user rows keep a user's first entry in this event.
		entries := make(map[int64]string, len(users))
		seen := make(map[string]bool, len(users))
		for i, u := range users {
			pos := int64(seq)<<memberPosBits | int64(i)
			entries[pos] = u
			if u != "" && !seen[u] {
				seen[u] = true
				joins = append(joins, join{user: u, seq: int64(seq), pos: pos})
			}
		}
		batch.Query(addMembers, int64(seq), entries, w.id)
	}
	switch {
	case last != nil && last == posted:
		ts := int64(last.GetSeq())
		preview, kind := history.MessagePreview(posted.GetMessagePosted())
		batch.Query(updateLastPosted, ts, ts, eventNanos(last), stamp, preview, ts, int32(kind), w.id)
		posted = nil
	case last != nil:
		ts := int64(last.GetSeq())
		batch.Query(updateLast, ts, ts, eventNanos(last), stamp, w.id)
	}
	if created != nil {
		c := created.GetConversationCreated()
		batch.Query(updateCreated, int64(created.GetSeq()), int32(c.GetKind()), c.GetTitle(), w.id)
		batch.Query(setPublic, int64(created.GetSeq()), c.GetPublic(), w.id)
		if c.GetConsent() {
			// Absent reads as false: only a conversation with consent
			// pays the statement.
			batch.Query(setConsent, int64(created.GetSeq()), true, w.id)
		}
		if c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_GROUP || c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL {
			batch.Query(setOwner, int64(created.GetSeq()), created.GetSenderId(), w.id)
		}
	}
	if posted != nil {
		preview, kind := history.MessagePreview(posted.GetMessagePosted())
		batch.Query(updatePreview, int64(posted.GetSeq()), preview, int64(posted.GetSeq()), int32(kind), w.id)
	}
	if edited != nil {
		batch.Query(updateEdited, int64(edited.GetSeq()), history.Preview(edited.GetMessageEdited().GetText()), w.id)
	}
	if gone != nil {
		batch.Query(updateGone, int64(gone.GetSeq()), w.id)
	}
	for _, j := range joins {
		batch.Query(insertMember, w.id, j.user, j.seq, j.pos, j.seq)
	}
	for _, l := range leaves {
		batch.Query(deleteMember, l.seq, w.id, l.user)
	}
	for u, seq := range w.reads {
		batch.Query(updateRead, int64(seq), int64(seq), w.id, u)
	}
	for d, seq := range w.delivered {
		batch.Query(updateDevice, int64(seq), int64(seq), w.id, d[0], d[1])
	}
	if batch.Size() == 0 {
		return // receipts that moved nothing
	}
	if last == nil {
		p.add(batch, "write positions in "+w.id)
	} else {
		p.add(batch, fmt.Sprintf("write summary of %s up to seq %d", w.id, last.GetSeq()))
	}
	for _, j := range joins {
		p.query(fmt.Sprintf("write conversation list entry %s of %s", w.id, j.user), insertUser, j.user, w.id, j.seq, j.seq)
	}
	for _, l := range leaves {
		p.query(fmt.Sprintf("delete conversation list entry %s of %s", w.id, l.user), deleteUser, l.seq, l.user, w.id)
	}
}

// groupWrites queues the summary cells a group event sets, each USING
// TIMESTAMP its seq, and returns the user it removes, if any. Every such
// event is written (unlike last_seq, which only the highest needs): each
// touches its own cells, and the timestamps decide which one holds.
func groupWrites(batch *gocql.Batch, conv string, ev *chatv1.Event) (removed string) {
	seq := int64(ev.GetSeq())
	one := func(u string) []string { return []string{u} }
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MemberRemoved:
		removed = b.MemberRemoved.GetUserId()
	case *chatv1.Event_MemberLeft:
		removed = b.MemberLeft.GetUserId()
	case *chatv1.Event_RoleChanged:
		q := removeAdmin
		if b.RoleChanged.GetRole() == chatv1.MemberRole_MEMBER_ROLE_ADMIN {
			q = addAdmin
		}
		batch.Query(q, seq, one(b.RoleChanged.GetUserId()), conv)
	case *chatv1.Event_OwnershipTransferred:
		// The sender is the owner until now; see history.Summarize.
		if s := ev.GetSenderId(); s != "" {
			batch.Query(addAdmin, seq, one(s), conv)
		}
		batch.Query(removeAdmin, seq, one(b.OwnershipTransferred.GetNewOwnerId()), conv)
		batch.Query(setOwner, seq, b.OwnershipTransferred.GetNewOwnerId(), conv)
	case *chatv1.Event_MemberMuted:
		q := removeMuted
		if b.MemberMuted.GetMuted() {
			q = addMuted
		}
		batch.Query(q, seq, one(b.MemberMuted.GetUserId()), conv)
	case *chatv1.Event_ConversationRenamed:
		batch.Query(setTitle, seq, b.ConversationRenamed.GetTitle(), conv)
	case *chatv1.Event_SettingsChanged:
		batch.Query(setContactsOnly, seq, b.SettingsChanged.GetContactsOnly(), conv)
	}
	if removed != "" {
		batch.Query(setLeft, seq, removed, seq, conv)
		batch.Query(removeAdmin, seq, one(removed), conv)
		batch.Query(removeMuted, seq, one(removed), conv)
	}
	return removed
}

const selectSummary = `SELECT kind, title, members, last_seq, last_activity, last_message_preview, changed_at,
member_left, owner_id, admins, muted, public, last_message_seq, last_message_kind, last_message_deleted, consent, contacts_only FROM conversations WHERE conversation_id = ?`

// Conversation implements history.Store.
func (s *Store) Conversation(ctx context.Context, conv string) (*chatv1.Conversation, error) {
	c, _, err := s.summary(ctx, conv)
	return c, err
}

// summary reads a conversation's summary and when it last changed (Unix
// nanoseconds, 0 when never recorded).
func (s *Store) summary(ctx context.Context, conv string) (*chatv1.Conversation, int64, error) {
	if conv == "" {
		return nil, 0, history.ErrNotFound
	}
	var (
		kind     int32
		title    string
		members  map[int64]string
		lastSeq  int64
		activity *int64
		preview  string
		changed  *int64
		left     map[string]int64
		owner    string
		admins   []string
		muted    []string
		public   bool
		msgSeq   int64
		msgKind  int32
		msgGone  bool
		consent  bool
		contacts bool
	)
	err := s.sess.Query(selectSummary, conv).WithContext(ctx).Scan(&kind, &title, &members, &lastSeq, &activity, &preview, &changed,
		&left, &owner, &admins, &muted, &public, &msgSeq, &msgKind, &msgGone, &consent, &contacts)
	if errors.Is(err, gocql.ErrNotFound) {
		return nil, 0, history.ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read conversation %s: %w", conv, err)
	}
	if lastSeq <= 0 {
		// Only possible for a row holding membership without any event
		// applied, which Apply never writes: treat it as absent.
		return nil, 0, history.ErrNotFound
	}
	c := &chatv1.Conversation{
		ConversationId:     conv,
		Kind:               chatv1.ConversationKind(kind),
		Title:              title,
		MemberIds:          memberList(members, left),
		LastSeq:            uint64(lastSeq),
		LastMessagePreview: preview,
		OwnerId:            owner,
		AdminIds:           admins,
		MutedIds:           muted,
		Public:             public,
		Consent:            consent,
		ContactsOnly:       contacts,
		LastMessageSeq:     uint64(msgSeq),
		LastMessageKind:    chatv1.MessageKind(msgKind),
		LastMessageDeleted: msgGone,
	}
	if activity != nil {
		c.LastActivity = timestamppb.New(time.Unix(0, *activity).UTC())
	}
	var changedAt int64
	if changed != nil {
		changedAt = *changed
	}
	return c, changedAt, nil
}

// memberList orders the members map by key (join order) and keeps each
// user's first entry after their latest leave (left: user -> seq), as
// history.Summarize does.
func memberList(m map[int64]string, left map[string]int64) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]int64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]string, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if u := m[k]; !seen[u] && k>>memberPosBits > left[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

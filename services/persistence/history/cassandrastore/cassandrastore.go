// Package cassandrastore is the history.Store on Apache Cassandra, used
// when persistence runs against real infrastructure (the embedded mode uses
// pebblestore). The schema lives in migrations/*.cql, embedded in the
// binary and applied by Migrate; the comments there describe each table and
// the query it serves.
//
// Writes are blind (Apply never reads) and idempotent without lightweight
// transactions: every cell is written USING TIMESTAMP taken from the seq of
// the event that sets it, so the highest seq wins whatever the order of
// arrival, and writing an event again stores what is already there.
// Replaying parley.events.v1 therefore rebuilds the same views.
//
// Positions follow the same rule with the position as its own timestamp,
// so they only move forward. The one value not derived from the log is
// changed_at, the store's clock when Apply wrote a change (for
// ListQuery.ChangedSince); it is written with the timestamp of the change
// it records, so a replay can only move it later. See
// migrations/0002_receipts.cql.
//
// Within one Apply, the events go first and the summaries and positions
// after, so a conversation's last_seq never names an event that is not yet
// stored. History relies on that: it bounds its reads by last_seq and never
// shows a gap.
package cassandrastore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

const (
	// memberPosBits is the room for a user's index within one event's
	// member list in a conversations.members key (seq << memberPosBits |
	// index).
	memberPosBits      = 20
	maxMembersPerEvent = 1 << memberPosBits
	// maxSeq keeps every member key, and every write timestamp, within a
	// bigint.
	maxSeq = 1<<(63-memberPosBits) - 1
	// parallel bounds the requests one call keeps in flight.
	parallel = 16
	// Event batches stay small enough to be cheap to retry.
	maxBatchStatements = 100
	maxBatchBytes      = 1 << 20
)

// Store is a history.Store on Cassandra. It is safe for concurrent use.
type Store struct {
	sess       *gocql.Session
	keyspace   string
	bucketSize uint64
	now        func() time.Time
}

var _ history.Store = (*Store)(nil)

// Open connects to cfg's keyspace, which Migrate must have brought to this
// build's schema; Open checks that, and the bucket size, and fails with
// what to do otherwise.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, cons, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	sess, err := connect(cfg, cons, cfg.Keyspace, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("%w (a missing keyspace is created by Migrate: start parley-persistence once with -migrate / PARLEY_MIGRATE=1)", err)
	}
	s, err := newStore(ctx, sess, cfg)
	if err != nil {
		sess.Close()
		return nil, err
	}
	return s, nil
}

// newStore wraps a session bound to a migrated keyspace.
func newStore(ctx context.Context, sess *gocql.Session, cfg Config) (*Store, error) {
	if err := checkSchema(ctx, sess, cfg.Keyspace); err != nil {
		return nil, err
	}
	size, err := settleBucketSize(ctx, sess, cfg, false)
	if err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Store{sess: sess, keyspace: cfg.Keyspace, bucketSize: uint64(size), now: now}, nil
}

// Close closes the session.
func (s *Store) Close() error {
	s.sess.Close()
	return nil
}

func (s *Store) bucket(seq uint64) int64 { return int64((seq - 1) / s.bucketSize) }

// convWrites are one conversation's records within an Apply call: its
// events, and the positions they and its receipts move, folded to the
// highest (the lower ones would lose to it anyway).
type convWrites struct {
	id        string
	events    []*chatv1.Event
	blobs     [][]byte
	reads     map[string]uint64    // user -> read seq
	delivered map[[2]string]uint64 // (user, device) -> delivered seq
	// states are the edits, deletes and reactions among events, written
	// to their target message's rows (see migrations/0004_messages.cql).
	states []stateWrite
	// flags are each user's flags of highest version in this call (see
	// migrations/0005_flags.cql).
	flags map[string]*chatv1.ConversationFlags
}

// setFlags keeps f if it is the user's newest in this call; the store's
// timestamps sort it out against what is stored.
func (w *convWrites) setFlags(f *chatv1.ConversationFlags) {
	if w.flags == nil {
		w.flags = map[string]*chatv1.ConversationFlags{}
	}
	if history.NewerFlags(f, w.flags[f.GetUserId()].GetVersion()) {
		w.flags[f.GetUserId()] = f
	}
}

// stateWrite is one edit, delete or reaction: what it does to the row of
// its target message.
type stateWrite struct {
	ev     *chatv1.Event
	target uint64
	blob   []byte // the edit event, for edits
}

// move folds a position change with history.ApplyReceipt. A change
// without a device has no delivered position to keep.
func (w *convWrites) move(user, device string, r *chatv1.Receipt) {
	dk := [2]string{user, device}
	pos := &chatv1.Receipt{ReadSeq: w.reads[user], DeliveredSeq: w.delivered[dk]}
	if !history.ApplyReceipt(pos, r) {
		return
	}
	if pos.GetReadSeq() > 0 {
		if w.reads == nil {
			w.reads = map[string]uint64{}
		}
		w.reads[user] = pos.GetReadSeq()
	}
	if device != "" && pos.GetDeliveredSeq() > 0 {
		if w.delivered == nil {
			w.delivered = map[[2]string]uint64{}
		}
		w.delivered[dk] = pos.GetDeliveredSeq()
	}
}

var marshal = proto.MarshalOptions{Deterministic: true}

// Apply implements history.Store: first every event row, then every
// summary, membership and position row; nil only when all of them were
// acknowledged at the configured consistency. Should that second step
// take longer than history.ChangeLag, a third one writes the change times
// again with the clock after it.
func (s *Store) Apply(ctx context.Context, recs []*logv1.EventRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var convs []*convWrites
	var blocks blockWrites
	byID := map[string]*convWrites{}
	writes := func(conv string) *convWrites {
		w := byID[conv]
		if w == nil {
			w = &convWrites{id: conv}
			byID[conv] = w
			convs = append(convs, w)
		}
		return w
	}
	for _, rec := range recs {
		ev, r := rec.GetEvent(), rec.GetReceipt()
		switch f := rec.GetFlags(); {
		case rec.GetBlock() != nil && ev == nil && r == nil:
			bl := rec.GetBlock()
			if bl.GetBlockerId() == "" || bl.GetBlockedId() == "" || bl.GetTime() == nil {
				return fmt.Errorf("apply block of %q by %q: missing blocker, blocked user or time", bl.GetBlockedId(), bl.GetBlockerId())
			}
			if history.BlockStamp(bl) <= 0 {
				return fmt.Errorf("apply block of %s by %s: time %v not after 1970, no write timestamp", bl.GetBlockedId(), bl.GetBlockerId(), bl.GetTime().AsTime())
			}
			blocks.add(bl)
			continue
		case f != nil && ev == nil && r == nil:
			conv, user := f.GetConversationId(), f.GetUserId()
			if conv == "" || user == "" {
				return fmt.Errorf("apply flags of %q in %q: missing conversation or user id", user, conv)
			}
			if f.GetVersion() == 0 || f.GetVersion() > maxSeq {
				return fmt.Errorf("apply flags of %s in %s: version %d not in 1..%d", user, conv, f.GetVersion(), uint64(maxSeq))
			}
			writes(conv).setFlags(f)
			continue
		case ev != nil && r != nil:
			return fmt.Errorf("apply record of command %q: holds both an event and a receipt", rec.GetCommandId())
		case r != nil:
			conv, user := r.GetConversationId(), r.GetUserId()
			if conv == "" || user == "" {
				return fmt.Errorf("apply receipt of %q/%q in %q: missing conversation or user id", user, r.GetDeviceId(), conv)
			}
			if seq := max(r.GetDeliveredSeq(), r.GetReadSeq()); seq > maxSeq {
				return fmt.Errorf("apply receipt of %s/%s in %s: seq %d beyond %d", user, r.GetDeviceId(), conv, seq, uint64(maxSeq))
			}
			// A conversation not stored yet gets the positions all the
			// same; Receipts shows them once it exists.
			writes(conv).move(user, r.GetDeviceId(), r)
			continue
		case ev == nil:
			return fmt.Errorf("apply record of command %q: holds neither an event nor a receipt", rec.GetCommandId())
		}
		conv, seq := ev.GetConversationId(), ev.GetSeq()
		if conv == "" || seq == 0 {
			return fmt.Errorf("apply event %q: missing conversation id or seq", ev.GetEventId())
		}
		if seq > maxSeq {
			return fmt.Errorf("apply event %s/%d: seq beyond %d", conv, seq, uint64(maxSeq))
		}
		if n := len(ev.GetConversationCreated().GetMemberIds()); n > maxMembersPerEvent {
			return fmt.Errorf("apply event %s/%d: %d members in one event, at most %d", conv, seq, n, maxMembersPerEvent)
		}
		blob, err := marshal.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal event %s/%d: %w", conv, seq, err)
		}
		w := writes(conv)
		w.events = append(w.events, ev)
		w.blobs = append(w.blobs, blob)
		if target := stateTarget(ev); target != 0 {
			if target > maxSeq {
				return fmt.Errorf("apply event %s/%d: target seq %d beyond %d", conv, seq, target, uint64(maxSeq))
			}
			st := stateWrite{ev: ev, target: target}
			if ev.GetMessageEdited() != nil {
				st.blob = blob
			}
			w.states = append(w.states, st)
		}
		if u := ev.GetSenderId(); u != "" {
			// What you post you have, and have read.
			w.move(u, ev.GetSenderDeviceId(), &chatv1.Receipt{DeliveredSeq: seq, ReadSeq: seq})
		}
	}
	if len(convs) == 0 && len(blocks.order) == 0 {
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	// Blocks belong to no conversation's view, so they may land with the
	// events.
	s.writeBlocks(gctx, g, &blocks)
	for _, w := range convs {
		s.writeEvents(gctx, g, w)
		s.writeStates(gctx, g, w)
	}
	if err := g.Wait(); err != nil {
		return err
	}

	// The clock is read as late as possible: the changes become visible
	// with the writes that follow.
	stamp := s.now()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, w := range convs {
		s.writeSummary(gctx, g, w, stamp.UnixNano())
	}
	s.writeUserReads(gctx, g, convs, stamp.UnixNano())
	s.writeFlags(gctx, g, convs, stamp.UnixNano(), false)
	if err := g.Wait(); err != nil {
		return err
	}
	if s.now().Sub(stamp) <= history.ChangeLag {
		return nil
	}
	return s.restamp(ctx, convs, s.now().UnixNano())
}

const insertEvent = `INSERT INTO history_events (conversation_id, bucket, seq, event_id, sender_id, event_time, event)
VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`

// writeEvents queues one unlogged batch per history partition (and per
// maxBatchStatements or maxBatchBytes): a single-partition batch is one
// mutation on each replica, so it costs one round trip and lands whole.
func (s *Store) writeEvents(ctx context.Context, g *errgroup.Group, w *convWrites) {
	type chunk struct {
		bucket int64
		idx    []int
		bytes  int
	}
	var chunks []*chunk
	open := map[int64]*chunk{}
	for i, ev := range w.events {
		b := s.bucket(ev.GetSeq())
		c := open[b]
		if c == nil || len(c.idx) == maxBatchStatements || c.bytes+len(w.blobs[i]) > maxBatchBytes {
			c = &chunk{bucket: b}
			open[b] = c
			chunks = append(chunks, c)
		}
		c.idx = append(c.idx, i)
		c.bytes += len(w.blobs[i])
	}
	for _, c := range chunks {
		g.Go(func() error {
			batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
			for _, i := range c.idx {
				ev := w.events[i]
				seq := int64(ev.GetSeq())
				batch.Query(insertEvent, w.id, c.bucket, seq, ev.GetEventId(), ev.GetSenderId(), eventTime(ev), w.blobs[i], seq)
			}
			if err := s.sess.ExecuteBatch(batch); err != nil {
				first, last := w.events[c.idx[0]].GetSeq(), w.events[c.idx[len(c.idx)-1]].GetSeq()
				return fmt.Errorf("write events %d..%d of %s (bucket %d): %w", first, last, w.id, c.bucket, err)
			}
			return nil
		})
	}
}

// stateTarget is the message an edit, delete or reaction is about, 0 for
// other events.
func stateTarget(ev *chatv1.Event) uint64 {
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessageEdited:
		return b.MessageEdited.GetTargetSeq()
	case *chatv1.Event_MessageDeleted:
		return b.MessageDeleted.GetTargetSeq()
	case *chatv1.Event_ReactionAdded:
		return b.ReactionAdded.GetTargetSeq()
	case *chatv1.Event_ReactionRemoved:
		return b.ReactionRemoved.GetTargetSeq()
	}
	return 0
}

const (
	updateEdit     = `UPDATE history_events USING TIMESTAMP ? SET edit = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?`
	updateDeleted  = `UPDATE history_events USING TIMESTAMP ? SET deleted_seq = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?`
	updateReaction = `UPDATE reactions USING TIMESTAMP ? SET present = ? WHERE conversation_id = ? AND bucket = ? AND message_seq = ? AND emoji = ? AND user_id = ?`
)

// writeStates queues what edits, deletes and reactions do to their
// targets: one unlogged batch per target partition and table, each write
// at its event's seq, so the newest wins in any order. They go with the
// events, before the summary, like the events they come from.
func (s *Store) writeStates(ctx context.Context, g *errgroup.Group, w *convWrites) {
	type part struct {
		reactions bool
		bucket    int64
	}
	open := map[part]*gocql.Batch{}
	var batches []*gocql.Batch
	batch := func(p part) *gocql.Batch {
		b := open[p]
		if b == nil || b.Size() >= maxBatchStatements {
			b = s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
			open[p] = b
			batches = append(batches, b)
		}
		return b
	}
	for _, st := range w.states {
		seq, bucket, target := int64(st.ev.GetSeq()), s.bucket(st.target), int64(st.target)
		switch b := st.ev.GetBody().(type) {
		case *chatv1.Event_MessageEdited:
			batch(part{false, bucket}).Query(updateEdit, seq, st.blob, w.id, bucket, target)
		case *chatv1.Event_MessageDeleted:
			batch(part{false, bucket}).Query(updateDeleted, seq, seq, w.id, bucket, target)
		case *chatv1.Event_ReactionAdded:
			batch(part{true, bucket}).Query(updateReaction, seq, true, w.id, bucket, target, b.ReactionAdded.GetEmoji(), st.ev.GetSenderId())
		case *chatv1.Event_ReactionRemoved:
			batch(part{true, bucket}).Query(updateReaction, seq, false, w.id, bucket, target, b.ReactionRemoved.GetEmoji(), st.ev.GetSenderId())
		}
	}
	for _, b := range batches {
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(b); err != nil {
				return fmt.Errorf("write edits, deletes and reactions in %s: %w", w.id, err)
			}
			return nil
		})
	}
}

func eventTime(ev *chatv1.Event) any {
	if ev.GetTime() == nil {
		return nil
	}
	return ev.GetTime().AsTime()
}

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
	updateEdited  = `UPDATE conversations USING TIMESTAMP ? SET last_message_preview = ? WHERE conversation_id = ?`
	updateGone    = `UPDATE conversations USING TIMESTAMP ? SET last_message_preview = '', last_message_deleted = true WHERE conversation_id = ?`
	addMembers    = `UPDATE conversations USING TIMESTAMP ? SET members = members + ? WHERE conversation_id = ?`
	insertMember  = `INSERT INTO members_by_conversation (conversation_id, user_id, joined_seq, join_pos) VALUES (?, ?, ?, ?) USING TIMESTAMP ?`
	insertUser    = `INSERT INTO conversations_by_user (user_id, conversation_id, joined_seq) VALUES (?, ?, ?) USING TIMESTAMP ?`
	// Groups (0003_groups.cql).
	setLeft      = `UPDATE conversations USING TIMESTAMP ? SET member_left[?] = ? WHERE conversation_id = ?`
	deleteMember = `DELETE FROM members_by_conversation USING TIMESTAMP ? WHERE conversation_id = ? AND user_id = ?`
	deleteUser   = `DELETE FROM conversations_by_user USING TIMESTAMP ? WHERE user_id = ? AND conversation_id = ?`
	setOwner     = `UPDATE conversations USING TIMESTAMP ? SET owner_id = ? WHERE conversation_id = ?`
	setPublic    = `UPDATE conversations USING TIMESTAMP ? SET public = ? WHERE conversation_id = ?`
	setTitle     = `UPDATE conversations USING TIMESTAMP ? SET title = ? WHERE conversation_id = ?`
	addAdmin     = `UPDATE conversations USING TIMESTAMP ? SET admins = admins + ? WHERE conversation_id = ?`
	removeAdmin  = `UPDATE conversations USING TIMESTAMP ? SET admins = admins - ? WHERE conversation_id = ?`
	addMuted     = `UPDATE conversations USING TIMESTAMP ? SET muted = muted + ? WHERE conversation_id = ?`
	removeMuted  = `UPDATE conversations USING TIMESTAMP ? SET muted = muted - ? WHERE conversation_id = ?`
	updateRead   = `UPDATE read_positions_by_conversation USING TIMESTAMP ? SET read_seq = ? WHERE conversation_id = ? AND user_id = ?`
	updateDevice = `UPDATE device_positions USING TIMESTAMP ? SET delivered_seq = ? WHERE conversation_id = ? AND user_id = ? AND device_id = ?`
	updateUser   = `UPDATE read_positions USING TIMESTAMP ? SET read_seq = ?, changed_at = ? WHERE user_id = ? AND conversation_id = ?`
	restampConv  = `UPDATE conversations USING TIMESTAMP ? SET changed_at = ? WHERE conversation_id = ?`
	restampUser  = `UPDATE read_positions USING TIMESTAMP ? SET changed_at = ? WHERE user_id = ? AND conversation_id = ?`
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
func (s *Store) writeSummary(ctx context.Context, g *errgroup.Group, w *convWrites, stamp int64) {
	var last, created, posted, edited, gone *chatv1.Event
	type join struct {
		user string
		seq  int64
		pos  int64
	}
	var joins, leaves []join
	batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
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
	if last != nil {
		ts := int64(last.GetSeq())
		batch.Query(updateLast, ts, ts, eventNanos(last), stamp, w.id)
	}
	if created != nil {
		c := created.GetConversationCreated()
		batch.Query(updateCreated, int64(created.GetSeq()), int32(c.GetKind()), c.GetTitle(), w.id)
		batch.Query(setPublic, int64(created.GetSeq()), c.GetPublic(), w.id)
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
	g.Go(func() error {
		if err := s.sess.ExecuteBatch(batch); err != nil {
			if last == nil {
				return fmt.Errorf("write positions in %s: %w", w.id, err)
			}
			return fmt.Errorf("write summary of %s up to seq %d: %w", w.id, last.GetSeq(), err)
		}
		return nil
	})
	for _, j := range joins {
		g.Go(func() error {
			if err := s.sess.Query(insertUser, j.user, w.id, j.seq, j.seq).WithContext(ctx).Exec(); err != nil {
				return fmt.Errorf("write conversation list entry %s of %s: %w", w.id, j.user, err)
			}
			return nil
		})
	}
	for _, l := range leaves {
		g.Go(func() error {
			if err := s.sess.Query(deleteUser, l.seq, l.user, w.id).WithContext(ctx).Exec(); err != nil {
				return fmt.Errorf("delete conversation list entry %s of %s: %w", w.id, l.user, err)
			}
			return nil
		})
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
	}
	if removed != "" {
		batch.Query(setLeft, seq, removed, seq, conv)
		batch.Query(removeAdmin, seq, one(removed), conv)
		batch.Query(removeMuted, seq, one(removed), conv)
	}
	return removed
}

// userReads groups the read positions of an Apply by user: a user's
// read_positions rows share a partition and go in one unlogged batch.
func userReads(convs []*convWrites) (users []string, byUser map[string][]*convWrites) {
	byUser = map[string][]*convWrites{}
	for _, w := range convs {
		for u := range w.reads {
			if byUser[u] == nil {
				users = append(users, u)
			}
			byUser[u] = append(byUser[u], w)
		}
	}
	return users, byUser
}

// writeUserReads queues each user's read_positions batch, stamped: what
// the conversation list reads for unread counts and changes.
func (s *Store) writeUserReads(ctx context.Context, g *errgroup.Group, convs []*convWrites, stamp int64) {
	users, byUser := userReads(convs)
	for _, u := range users {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		for _, w := range byUser[u] {
			seq := int64(w.reads[u])
			batch.Query(updateUser, seq, seq, stamp, u, w.id)
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write read positions of %s in %d conversations: %w", u, len(byUser[u]), err)
			}
			return nil
		})
	}
}

// blockWrites are the block records of one Apply call, the newest per
// pair (see history.NewerBlock), by blocker in arrival order.
type blockWrites struct {
	order []string
	by    map[string]map[string]*logv1.BlockChange // blocker -> blocked -> record
}

func (b *blockWrites) add(bl *logv1.BlockChange) {
	if b.by == nil {
		b.by = map[string]map[string]*logv1.BlockChange{}
	}
	pairs := b.by[bl.GetBlockerId()]
	if pairs == nil {
		pairs = map[string]*logv1.BlockChange{}
		b.by[bl.GetBlockerId()] = pairs
		b.order = append(b.order, bl.GetBlockerId())
	}
	held := pairs[bl.GetBlockedId()]
	if held == nil || history.NewerBlock(bl, history.BlockStamp(held), held.GetBlocked()) {
		pairs[bl.GetBlockedId()] = bl
	}
}

// writeBlocks queues one user_blocks batch per blocker (one partition),
// each row USING TIMESTAMP its record's stamp (see
// migrations/0006_blocks.cql).
func (s *Store) writeBlocks(ctx context.Context, g *errgroup.Group, b *blockWrites) {
	for _, blocker := range b.order {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		for blocked, bl := range b.by[blocker] {
			batch.Query(insertBlock, blocker, blocked, bl.GetBlocked(), history.BlockStamp(bl))
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write %d blocks of %s: %w", len(b.by[blocker]), blocker, err)
			}
			return nil
		})
	}
}

const insertBlock = `INSERT INTO user_blocks (blocker_id, blocked_id, blocked) VALUES (?, ?, ?) USING TIMESTAMP ?`

// Blocks implements history.Store: one partition read; rows come in
// blocked-id order, the clustering order.
func (s *Store) Blocks(ctx context.Context, blocker string) ([]string, error) {
	iter := s.sess.Query(`SELECT blocked_id, blocked FROM user_blocks WHERE blocker_id = ?`, blocker).WithContext(ctx).Iter()
	out := []string{}
	var id string
	var blocked bool
	for iter.Scan(&id, &blocked) {
		if blocked {
			out = append(out, id)
		}
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read blocks of %s: %w", blocker, err)
	}
	return out, nil
}

// writeFlags queues each user's conversation_flags batch (one partition
// per user), stamped; with again set, only the change times (restamp).
func (s *Store) writeFlags(ctx context.Context, g *errgroup.Group, convs []*convWrites, stamp int64, again bool) {
	var users []string
	byUser := map[string][]*chatv1.ConversationFlags{}
	for _, w := range convs {
		for u, f := range w.flags {
			if byUser[u] == nil {
				users = append(users, u)
			}
			byUser[u] = append(byUser[u], f)
		}
	}
	for _, u := range users {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		for _, f := range byUser[u] {
			v := int64(f.GetVersion())
			if again {
				batch.Query(restampFlags, v, stamp, u, f.GetConversationId())
			} else {
				batch.Query(updateFlags, v, f.GetMuted(), f.GetPinned(), v, stamp, u, f.GetConversationId())
			}
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write flags of %s in %d conversations: %w", u, len(byUser[u]), err)
			}
			return nil
		})
	}
}

// restamp writes the change times of an Apply again, at a time after its
// changes became visible (see history.ChangeLag). Each changed_at goes
// with the timestamp it was first written with and a later value, so it
// wins the tie, and loses to anything newer.
func (s *Store) restamp(ctx context.Context, convs []*convWrites, stamp int64) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, w := range convs {
		var last uint64
		for _, ev := range w.events {
			last = max(last, ev.GetSeq())
		}
		if last == 0 {
			continue
		}
		g.Go(func() error {
			if err := s.sess.Query(restampConv, int64(last), stamp, w.id).WithContext(gctx).Exec(); err != nil {
				return fmt.Errorf("write change time of %s: %w", w.id, err)
			}
			return nil
		})
	}
	users, byUser := userReads(convs)
	for _, u := range users {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(gctx)
		for _, w := range byUser[u] {
			batch.Query(restampUser, int64(w.reads[u]), stamp, u, w.id)
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write change times of %s's read positions: %w", u, err)
			}
			return nil
		})
	}
	s.writeFlags(gctx, g, convs, stamp, true)
	return g.Wait()
}

const selectSummary = `SELECT kind, title, members, last_seq, last_activity, last_message_preview, changed_at,
member_left, owner_id, admins, muted, public, last_message_seq, last_message_kind, last_message_deleted FROM conversations WHERE conversation_id = ?`

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
	)
	err := s.sess.Query(selectSummary, conv).WithContext(ctx).Scan(&kind, &title, &members, &lastSeq, &activity, &preview, &changed,
		&left, &owner, &admins, &muted, &public, &msgSeq, &msgKind, &msgGone)
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

// lastSeq is the conversation's last applied seq, ErrNotFound when it has
// none.
func (s *Store) lastSeq(ctx context.Context, conv string) (uint64, error) {
	if conv == "" {
		return 0, history.ErrNotFound
	}
	var last int64
	err := s.sess.Query(`SELECT last_seq FROM conversations WHERE conversation_id = ?`, conv).WithContext(ctx).Scan(&last)
	if errors.Is(err, gocql.ErrNotFound) || (err == nil && last <= 0) {
		return 0, history.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("read last seq of %s: %w", conv, err)
	}
	return uint64(last), nil
}

// History implements history.Store. It reads the conversation's last_seq,
// then walks buckets from the starting seq in the query's direction, one
// single-partition read per bucket, until it holds one event more than the
// limit (which is how it knows there are more) or runs out of buckets.
func (s *Store) History(ctx context.Context, conv string, q history.Query) (history.Page, error) {
	last, err := s.lastSeq(ctx, conv)
	if err != nil {
		return history.Page{}, err
	}
	limit := history.ClampLimit(q.Limit)
	var page history.Page
	if q.Forward {
		if q.AfterSeq >= last {
			return page, nil
		}
		evs, states, err := s.scan(ctx, conv, q.AfterSeq+1, last, limit+1, true)
		if err != nil {
			return history.Page{}, err
		}
		if len(evs) > limit {
			evs, page.HasMore = evs[:limit], true
		}
		page.Events = evs
		if err := s.overlay(ctx, conv, evs, states, q.Viewer); err != nil {
			return history.Page{}, err
		}
		return page, nil
	}
	hi := last
	if q.BeforeSeq > 0 && q.BeforeSeq-1 < hi {
		hi = q.BeforeSeq - 1
	}
	if hi == 0 {
		return page, nil
	}
	evs, states, err := s.scan(ctx, conv, 1, hi, limit+1, false)
	if err != nil {
		return history.Page{}, err
	}
	if len(evs) > limit {
		evs, page.HasMore = evs[:limit], true
	}
	slices.Reverse(evs)
	page.Events = evs
	if err := s.overlay(ctx, conv, evs, states, q.Viewer); err != nil {
		return history.Page{}, err
	}
	return page, nil
}

const (
	selectAsc       = `SELECT seq, event, edit, deleted_seq FROM history_events WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq ASC LIMIT ?`
	selectDesc      = `SELECT seq, event, edit, deleted_seq FROM history_events WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq DESC LIMIT ?`
	selectGone      = `SELECT seq, deleted_seq FROM history_events WHERE conversation_id = ? AND bucket = ? AND seq IN ?`
	selectReactions = `SELECT message_seq, emoji, user_id, present FROM reactions WHERE conversation_id = ? AND bucket = ? AND message_seq >= ? AND message_seq <= ?`
)

// scan returns up to n events with lo <= seq <= hi, ascending from lo or
// descending from hi, and the edit and delete state of each row it read.
func (s *Store) scan(ctx context.Context, conv string, lo, hi uint64, n int, asc bool) ([]*chatv1.Event, map[uint64]*history.MessageState, error) {
	out := make([]*chatv1.Event, 0, n)
	states := map[uint64]*history.MessageState{}
	first, final := s.bucket(lo), s.bucket(hi)
	stmt, step := selectAsc, int64(1)
	if !asc {
		stmt, step, first, final = selectDesc, -1, final, first
	}
	for b := first; len(out) < n; b += step {
		iter := s.sess.Query(stmt, conv, b, int64(lo), int64(hi), n-len(out)).WithContext(ctx).Iter()
		var (
			seq        int64
			blob, edit []byte
			deleted    *int64
		)
		for iter.Scan(&seq, &blob, &edit, &deleted) {
			if len(blob) == 0 {
				// A row holding only what an edit or delete wrote: its
				// message is not stored (Apply writes events in log order,
				// so only a hand-made log gets here).
				continue
			}
			ev := &chatv1.Event{}
			if err := proto.Unmarshal(blob, ev); err != nil {
				_ = iter.Close()
				return nil, nil, fmt.Errorf("decode event of %s in bucket %d: %w", conv, b, err)
			}
			out = append(out, ev)
			st := &history.MessageState{Deleted: deleted != nil}
			if len(edit) > 0 {
				st.Edit = &chatv1.Event{}
				if err := proto.Unmarshal(edit, st.Edit); err != nil {
					_ = iter.Close()
					return nil, nil, fmt.Errorf("decode edit of %s/%d: %w", conv, seq, err)
				}
			}
			states[uint64(seq)] = st
		}
		if err := iter.Close(); err != nil {
			return nil, nil, fmt.Errorf("read history of %s, bucket %d: %w", conv, b, err)
		}
		if b == final {
			break
		}
	}
	return out, states, nil
}

// overlay shows a page's messages as they are now (history.Overlay): the
// edit and delete state scan read with them, whether the targets of the
// page's edits elsewhere were deleted (one read per bucket), and the
// reactions of its messages (one range read per bucket).
func (s *Store) overlay(ctx context.Context, conv string, evs []*chatv1.Event, states map[uint64]*history.MessageState, viewer string) error {
	byBucket := map[int64][]int64{}
	for _, seq := range history.OverlaySeqs(evs) {
		if states[seq] == nil {
			byBucket[s.bucket(seq)] = append(byBucket[s.bucket(seq)], int64(seq))
		}
	}
	for b, seqs := range byBucket {
		iter := s.sess.Query(selectGone, conv, b, seqs).WithContext(ctx).Iter()
		var (
			seq     int64
			deleted *int64
		)
		for iter.Scan(&seq, &deleted) {
			states[uint64(seq)] = &history.MessageState{Deleted: deleted != nil}
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read deletes in %s, bucket %d: %w", conv, b, err)
		}
	}
	var lo, hi uint64
	for _, ev := range evs {
		if st := states[ev.GetSeq()]; ev.GetMessagePosted() != nil && st != nil && !st.Deleted {
			if lo == 0 {
				lo = ev.GetSeq()
			}
			hi = ev.GetSeq()
		}
	}
	counts := map[uint64]*history.Reactions{}
	for b := s.bucket(max(lo, 1)); lo != 0 && b <= s.bucket(hi); b++ {
		iter := s.sess.Query(selectReactions, conv, b, int64(lo), int64(hi)).WithContext(ctx).Iter()
		var (
			seq         int64
			emoji, user string
			present     bool
		)
		for iter.Scan(&seq, &emoji, &user, &present) {
			if !present {
				continue
			}
			r := counts[uint64(seq)]
			if r == nil {
				r = &history.Reactions{}
				counts[uint64(seq)] = r
			}
			r.Add(emoji, user, viewer)
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read reactions in %s, bucket %d: %w", conv, b, err)
		}
	}
	for seq, r := range counts {
		if st := states[seq]; st != nil {
			st.Reactions = r.Counts()
		}
	}
	history.Overlay(evs, states)
	return nil
}

// readPosition is a user's read position in one conversation and when it
// last moved (Unix nanoseconds, 0 when never recorded).
type readPosition struct {
	seq     uint64
	changed int64
}

// userFlags are a user's flags of one conversation and when they last
// changed (Unix nanoseconds, 0 when never set).
type userFlags struct {
	muted, pinned bool
	changed       int64
}

// Conversations implements history.Store: the user's conversation ids
// from conversations_by_user, read positions from read_positions and
// flags from conversation_flags (three single-partition reads,
// concurrent), then each summary (concurrent single-partition reads), in
// history.ListOrder. The cost grows with the number of conversations the
// user is in, not with limit or ChangedSince; see conversations_by_user
// in migrations/0001_init.cql.
func (s *Store) Conversations(ctx context.Context, user string, q history.ListQuery) ([]*chatv1.Conversation, error) {
	if user == "" {
		return nil, nil
	}
	var (
		ids   []string
		reads = map[string]readPosition{}
		flags = map[string]userFlags{}
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		iter := s.sess.Query(`SELECT conversation_id, muted, pinned, changed_at FROM conversation_flags WHERE user_id = ?`, user).WithContext(gctx).Iter()
		var (
			id            string
			muted, pinned *bool
			changed       *int64
		)
		for iter.Scan(&id, &muted, &pinned, &changed) {
			var f userFlags
			f.muted, f.pinned = muted != nil && *muted, pinned != nil && *pinned
			if changed != nil {
				f.changed = *changed
			}
			flags[id] = f
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read flags of %s: %w", user, err)
		}
		return nil
	})
	g.Go(func() error {
		iter := s.sess.Query(`SELECT conversation_id FROM conversations_by_user WHERE user_id = ?`, user).WithContext(gctx).Iter()
		var id string
		for iter.Scan(&id) {
			ids = append(ids, id)
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("list conversations of %s: %w", user, err)
		}
		return nil
	})
	g.Go(func() error {
		iter := s.sess.Query(`SELECT conversation_id, read_seq, changed_at FROM read_positions WHERE user_id = ?`, user).WithContext(gctx).Iter()
		var (
			id      string
			seq     *int64
			changed *int64
		)
		for iter.Scan(&id, &seq, &changed) {
			var p readPosition
			if seq != nil {
				p.seq = uint64(*seq)
			}
			if changed != nil {
				p.changed = *changed
			}
			reads[id] = p
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read read positions of %s: %w", user, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var since int64
	if !q.ChangedSince.IsZero() {
		since = q.ChangedSince.UnixNano()
	}
	sums := make([]*chatv1.Conversation, len(ids))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, id := range ids {
		g.Go(func() error {
			c, changed, err := s.summary(gctx, id)
			if errors.Is(err, history.ErrNotFound) {
				// Listed before its summary landed (an Apply cut short);
				// the retry of that Apply writes it.
				return nil
			}
			if err != nil {
				return err
			}
			read, fl := reads[id], flags[id]
			if since != 0 && changed < since && read.changed < since && fl.changed < since {
				return nil
			}
			c.ReadSeq = read.seq
			if read.seq < c.GetLastSeq() {
				c.UnreadCount = c.GetLastSeq() - read.seq
			}
			c.Muted, c.Pinned = fl.muted, fl.pinned
			sums[i] = c
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	out := slices.DeleteFunc(sums, func(c *chatv1.Conversation) bool { return c == nil })
	slices.SortFunc(out, history.ListOrder)
	if n := history.ClampLimit(q.Limit); len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// Receipts implements history.Store: the conversation's existence, its
// read positions and its device positions, three concurrent
// single-partition reads; device_positions is clustered in the order
// Receipts returns.
func (s *Store) Receipts(ctx context.Context, conv string) ([]*chatv1.Receipt, error) {
	if conv == "" {
		return nil, history.ErrNotFound
	}
	var (
		reads = map[string]uint64{}
		out   []*chatv1.Receipt
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := s.lastSeq(gctx, conv)
		return err
	})
	g.Go(func() error {
		iter := s.sess.Query(`SELECT user_id, read_seq FROM read_positions_by_conversation WHERE conversation_id = ?`, conv).WithContext(gctx).Iter()
		var (
			user string
			seq  *int64
		)
		for iter.Scan(&user, &seq) {
			if seq != nil {
				reads[user] = uint64(*seq)
			}
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read read positions in %s: %w", conv, err)
		}
		return nil
	})
	g.Go(func() error {
		iter := s.sess.Query(`SELECT user_id, device_id, delivered_seq FROM device_positions WHERE conversation_id = ?`, conv).WithContext(gctx).Iter()
		var (
			user, device string
			seq          *int64
		)
		for iter.Scan(&user, &device, &seq) {
			r := &chatv1.Receipt{ConversationId: conv, UserId: user, DeviceId: device}
			if seq != nil {
				r.DeliveredSeq = uint64(*seq)
			}
			out = append(out, r)
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read delivered positions in %s: %w", conv, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, r := range out {
		r.ReadSeq = reads[r.GetUserId()]
	}
	return out, nil
}

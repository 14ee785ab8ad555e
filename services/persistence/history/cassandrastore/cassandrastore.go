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
// Within one Apply, the events go first and the summaries after, so a
// conversation's last_seq never names an event that is not yet stored.
// History relies on that: it bounds its reads by last_seq and never shows a
// gap.
package cassandrastore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	return &Store{sess: sess, keyspace: cfg.Keyspace, bucketSize: uint64(size)}, nil
}

// Close closes the session.
func (s *Store) Close() error {
	s.sess.Close()
	return nil
}

func (s *Store) bucket(seq uint64) int64 { return int64((seq - 1) / s.bucketSize) }

// convWrites are one conversation's events within an Apply call.
type convWrites struct {
	id     string
	events []*chatv1.Event
	blobs  [][]byte
}

var marshal = proto.MarshalOptions{Deterministic: true}

// Apply implements history.Store: first every event row, then every
// summary and membership row; nil only when all of them were acknowledged
// at the configured consistency.
func (s *Store) Apply(ctx context.Context, recs []*logv1.EventRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var convs []*convWrites
	byID := map[string]*convWrites{}
	for _, rec := range recs {
		ev := rec.GetEvent()
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
		w := byID[conv]
		if w == nil {
			w = &convWrites{id: conv}
			byID[conv] = w
			convs = append(convs, w)
		}
		w.events = append(w.events, ev)
		w.blobs = append(w.blobs, blob)
	}
	if len(convs) == 0 {
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, w := range convs {
		s.writeEvents(gctx, g, w)
	}
	if err := g.Wait(); err != nil {
		return err
	}

	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, w := range convs {
		s.writeSummary(gctx, g, w)
	}
	return g.Wait()
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
	updateLast    = `UPDATE conversations USING TIMESTAMP ? SET last_seq = ?, last_activity = ? WHERE conversation_id = ?`
	updateCreated = `UPDATE conversations USING TIMESTAMP ? SET kind = ?, title = ? WHERE conversation_id = ?`
	updatePreview = `UPDATE conversations USING TIMESTAMP ? SET last_message_preview = ? WHERE conversation_id = ?`
	addMembers    = `UPDATE conversations USING TIMESTAMP ? SET members = members + ? WHERE conversation_id = ?`
	insertMember  = `INSERT INTO members_by_conversation (conversation_id, user_id, joined_seq, join_pos) VALUES (?, ?, ?, ?) USING TIMESTAMP ?`
	insertUser    = `INSERT INTO conversations_by_user (user_id, conversation_id, joined_seq) VALUES (?, ?, ?) USING TIMESTAMP ?`
)

// writeSummary queues the conversation's summary and membership writes.
// The summary row and the members_by_conversation rows share the partition
// key, so they go in one unlogged batch (one mutation); each joined user's
// conversations_by_user row is its own partition and its own write.
//
// Only the cells that can win are written: of the events in this call, the
// highest seq sets last_seq and last_activity, the highest
// MessagePosted the preview, ConversationCreated kind and title. The
// others would lose to those timestamps anyway. Every join is written.
func (s *Store) writeSummary(ctx context.Context, g *errgroup.Group, w *convWrites) {
	var last, created, posted *chatv1.Event
	type join struct {
		user string
		seq  int64
		pos  int64
	}
	var joins []join
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
		case *chatv1.Event_MessagePosted:
			if posted == nil || seq > posted.GetSeq() {
				posted = ev
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
	ts := int64(last.GetSeq())
	batch.Query(updateLast, ts, ts, eventNanos(last), w.id)
	if created != nil {
		c := created.GetConversationCreated()
		batch.Query(updateCreated, int64(created.GetSeq()), int32(c.GetKind()), c.GetTitle(), w.id)
	}
	if posted != nil {
		batch.Query(updatePreview, int64(posted.GetSeq()), history.Preview(posted.GetMessagePosted().GetText()), w.id)
	}
	for _, j := range joins {
		batch.Query(insertMember, w.id, j.user, j.seq, j.pos, j.seq)
	}
	g.Go(func() error {
		if err := s.sess.ExecuteBatch(batch); err != nil {
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
}

const selectSummary = `SELECT kind, title, members, last_seq, last_activity, last_message_preview FROM conversations WHERE conversation_id = ?`

// Conversation implements history.Store.
func (s *Store) Conversation(ctx context.Context, conv string) (*chatv1.Conversation, error) {
	if conv == "" {
		return nil, history.ErrNotFound
	}
	var (
		kind     int32
		title    string
		members  map[int64]string
		lastSeq  int64
		activity *int64
		preview  string
	)
	err := s.sess.Query(selectSummary, conv).WithContext(ctx).Scan(&kind, &title, &members, &lastSeq, &activity, &preview)
	if errors.Is(err, gocql.ErrNotFound) {
		return nil, history.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read conversation %s: %w", conv, err)
	}
	if lastSeq <= 0 {
		// Only possible for a row holding membership without any event
		// applied, which Apply never writes: treat it as absent.
		return nil, history.ErrNotFound
	}
	c := &chatv1.Conversation{
		ConversationId:     conv,
		Kind:               chatv1.ConversationKind(kind),
		Title:              title,
		MemberIds:          memberList(members),
		LastSeq:            uint64(lastSeq),
		LastMessagePreview: preview,
	}
	if activity != nil {
		c.LastActivity = timestamppb.New(time.Unix(0, *activity).UTC())
	}
	return c, nil
}

// memberList orders the members map by key (join order) and keeps each
// user's first entry, as history.Summarize does.
func memberList(m map[int64]string) []string {
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
		if u := m[k]; !seen[u] {
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
		evs, err := s.scan(ctx, conv, q.AfterSeq+1, last, limit+1, true)
		if err != nil {
			return history.Page{}, err
		}
		if len(evs) > limit {
			evs, page.HasMore = evs[:limit], true
		}
		page.Events = evs
		return page, nil
	}
	hi := last
	if q.BeforeSeq > 0 && q.BeforeSeq-1 < hi {
		hi = q.BeforeSeq - 1
	}
	if hi == 0 {
		return page, nil
	}
	evs, err := s.scan(ctx, conv, 1, hi, limit+1, false)
	if err != nil {
		return history.Page{}, err
	}
	if len(evs) > limit {
		evs, page.HasMore = evs[:limit], true
	}
	slices.Reverse(evs)
	page.Events = evs
	return page, nil
}

const (
	selectAsc  = `SELECT event FROM history_events WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq ASC LIMIT ?`
	selectDesc = `SELECT event FROM history_events WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq DESC LIMIT ?`
)

// scan returns up to n events with lo <= seq <= hi, ascending from lo or
// descending from hi.
func (s *Store) scan(ctx context.Context, conv string, lo, hi uint64, n int, asc bool) ([]*chatv1.Event, error) {
	out := make([]*chatv1.Event, 0, n)
	first, final := s.bucket(lo), s.bucket(hi)
	stmt, step := selectAsc, int64(1)
	if !asc {
		stmt, step, first, final = selectDesc, -1, final, first
	}
	for b := first; len(out) < n; b += step {
		iter := s.sess.Query(stmt, conv, b, int64(lo), int64(hi), n-len(out)).WithContext(ctx).Iter()
		var blob []byte
		for iter.Scan(&blob) {
			ev := &chatv1.Event{}
			if err := proto.Unmarshal(blob, ev); err != nil {
				_ = iter.Close()
				return nil, fmt.Errorf("decode event of %s in bucket %d: %w", conv, b, err)
			}
			out = append(out, ev)
		}
		if err := iter.Close(); err != nil {
			return nil, fmt.Errorf("read history of %s, bucket %d: %w", conv, b, err)
		}
		if b == final {
			break
		}
	}
	return out, nil
}

// Conversations implements history.Store: the user's conversation ids
// from conversations_by_user, then each summary (concurrent
// single-partition reads), sorted by last activity, newest first, ties by
// id. The cost grows with the number of conversations the user is in, not
// with limit; see conversations_by_user in migrations/0001_init.cql.
func (s *Store) Conversations(ctx context.Context, user string, limit int) ([]*chatv1.Conversation, error) {
	if user == "" {
		return nil, nil
	}
	var ids []string
	iter := s.sess.Query(`SELECT conversation_id FROM conversations_by_user WHERE user_id = ?`, user).WithContext(ctx).Iter()
	var id string
	for iter.Scan(&id) {
		ids = append(ids, id)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	sums := make([]*chatv1.Conversation, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, id := range ids {
		g.Go(func() error {
			c, err := s.Conversation(gctx, id)
			if errors.Is(err, history.ErrNotFound) {
				// Listed before its summary landed (an Apply cut short);
				// the retry of that Apply writes it.
				return nil
			}
			sums[i] = c
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	out := slices.DeleteFunc(sums, func(c *chatv1.Conversation) bool { return c == nil })
	slices.SortFunc(out, func(a, b *chatv1.Conversation) int {
		if c := b.GetLastActivity().AsTime().Compare(a.GetLastActivity().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.GetConversationId(), b.GetConversationId())
	})
	if n := history.ClampLimit(limit); len(out) > n {
		out = out[:n]
	}
	return out, nil
}

package cassandrastore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

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

// History implements history.Store. It reads the conversation's last_seq
// (unless the query brings it), then walks buckets from the starting seq
// in the query's direction, one single-partition read per bucket, until it
// holds one event more than the limit (which is how it knows there are
// more) or runs out of buckets. Seqs are contiguous, so the seqs a page
// can hold are known before the walk: their reactions are read beside it.
func (s *Store) History(ctx context.Context, conv string, q history.Query) (history.Page, error) {
	last := q.LastSeq
	if last == 0 {
		var err error
		if last, err = s.lastSeq(ctx, conv); err != nil {
			return history.Page{}, err
		}
	}
	limit := uint64(history.ClampLimit(q.Limit))
	// lo..hi bounds the walk; from..to, the seqs the page can hold.
	var lo, hi, from, to uint64
	if q.Forward {
		if q.AfterSeq >= last {
			return history.Page{}, nil
		}
		lo, hi = q.AfterSeq+1, last
		from, to = lo, min(hi, q.AfterSeq+limit)
	} else {
		lo, hi = 1, last
		if q.BeforeSeq > 0 && q.BeforeSeq-1 < hi {
			hi = q.BeforeSeq - 1
		}
		if hi == 0 {
			return history.Page{}, nil
		}
		from, to = max(hi, limit)-limit+1, hi
	}
	var (
		evs    []*chatv1.Event
		states map[uint64]*history.MessageState
		ahead  reactionRange
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		ahead, err = s.reactions(gctx, conv, from, to, q.Viewer)
		return err
	})
	g.Go(func() error {
		var err error
		evs, states, err = s.scan(gctx, conv, lo, hi, int(limit)+1, q.Forward)
		return err
	})
	if err := g.Wait(); err != nil {
		return history.Page{}, err
	}
	var page history.Page
	if uint64(len(evs)) > limit {
		evs, page.HasMore = evs[:limit], true
	}
	if !q.Forward {
		slices.Reverse(evs)
	}
	page.Events = evs
	if err := s.overlay(ctx, conv, evs, states, q.Viewer, ahead); err != nil {
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
// reactions of its messages: those of ahead when it covers them (History
// reads them beside the page), else one range read per bucket.
func (s *Store) overlay(ctx context.Context, conv string, evs []*chatv1.Event, states map[uint64]*history.MessageState, viewer string, ahead reactionRange) error {
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
	counts := ahead
	if lo != 0 && (lo < ahead.from || hi > ahead.to) {
		var err error
		if counts, err = s.reactions(ctx, conv, lo, hi, viewer); err != nil {
			return err
		}
	}
	for seq, r := range counts.bySeq {
		if st := states[seq]; st != nil && lo != 0 && seq >= lo && seq <= hi {
			st.Reactions = r.Counts()
		}
	}
	history.Overlay(evs, states)
	return nil
}

// reactionRange is the reactions of the messages from..to, by seq.
type reactionRange struct {
	from, to uint64
	bySeq    map[uint64]*history.Reactions
}

// reactions reads the reactions of the messages from..to, one range read
// per bucket; viewer is the user reading, for ReactionCount.Me.
func (s *Store) reactions(ctx context.Context, conv string, from, to uint64, viewer string) (reactionRange, error) {
	out := reactionRange{from: from, to: to, bySeq: map[uint64]*history.Reactions{}}
	for b := s.bucket(max(from, 1)); from != 0 && from <= to && b <= s.bucket(to); b++ {
		iter := s.sess.Query(selectReactions, conv, b, int64(from), int64(to)).WithContext(ctx).Iter()
		var (
			seq         int64
			emoji, user string
			present     bool
		)
		for iter.Scan(&seq, &emoji, &user, &present) {
			if !present {
				continue
			}
			r := out.bySeq[uint64(seq)]
			if r == nil {
				r = &history.Reactions{}
				out.bySeq[uint64(seq)] = r
			}
			r.Add(emoji, user, viewer)
		}
		if err := iter.Close(); err != nil {
			return reactionRange{}, fmt.Errorf("read reactions in %s, bucket %d: %w", conv, b, err)
		}
	}
	return out, nil
}

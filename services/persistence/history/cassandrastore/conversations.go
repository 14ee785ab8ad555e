package cassandrastore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"golang.org/x/sync/errgroup"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

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
// concurrent), then each summary (concurrent single-partition reads) and,
// where the user has not read to the end, the unread count (see unread),
// in history.ListOrder. The cost grows with the number of conversations the
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
				if c.UnreadCount, err = s.unread(gctx, id, user, read.seq, c.GetLastSeq()); err != nil {
					return err
				}
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

// ConversationFor implements history.Store: the summary, and the user's
// read position and flags in it (single-row reads, concurrent), then the
// unread count as Conversations counts it.
func (s *Store) ConversationFor(ctx context.Context, conv, user string) (*chatv1.Conversation, error) {
	var (
		c             *chatv1.Conversation
		seq           *int64
		muted, pinned *bool
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		c, _, err = s.summary(gctx, conv)
		return err
	})
	g.Go(func() error {
		err := s.sess.Query(`SELECT read_seq FROM read_positions WHERE user_id = ? AND conversation_id = ?`, user, conv).WithContext(gctx).Scan(&seq)
		if err != nil && !errors.Is(err, gocql.ErrNotFound) {
			return fmt.Errorf("read read position of %s in %s: %w", user, conv, err)
		}
		return nil
	})
	g.Go(func() error {
		err := s.sess.Query(`SELECT muted, pinned FROM conversation_flags WHERE user_id = ? AND conversation_id = ?`, user, conv).WithContext(gctx).Scan(&muted, &pinned)
		if err != nil && !errors.Is(err, gocql.ErrNotFound) {
			return fmt.Errorf("read flags of %s in %s: %w", user, conv, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if seq != nil {
		c.ReadSeq = uint64(*seq)
	}
	if c.ReadSeq < c.GetLastSeq() {
		var err error
		if c.UnreadCount, err = s.unread(ctx, conv, user, c.ReadSeq, c.GetLastSeq()); err != nil {
			return nil, err
		}
	}
	c.Muted, c.Pinned = muted != nil && *muted, pinned != nil && *pinned
	return c, nil
}

// unread counts the events in (read, last] that history.CountsAsUnread
// for user, up to history.UnreadCap: it reads history pages forward from
// read+1 (one single-partition read per bucket and page) until it has
// UnreadCap messages or reaches last. Most entries read nothing (read ==
// last); one far behind reads at least UnreadCap events, more when
// reactions, edits and membership events lie between the messages.
func (s *Store) unread(ctx context.Context, conv, user string, read, last uint64) (uint64, error) {
	var n uint64
	for lo := read + 1; lo <= last && n < history.UnreadCap; {
		evs, _, err := s.scan(ctx, conv, lo, last, history.MaxLimit, true)
		if err != nil {
			return 0, fmt.Errorf("count unread of %s: %w", user, err)
		}
		for _, ev := range evs {
			if history.CountsAsUnread(ev, user) {
				n++
			}
		}
		if len(evs) < history.MaxLimit {
			break
		}
		lo = evs[len(evs)-1].GetSeq() + 1
	}
	return min(n, history.UnreadCap), nil
}

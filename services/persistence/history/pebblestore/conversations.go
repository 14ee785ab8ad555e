package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

func getConversation(r getter, conv string) (*chatv1.Conversation, error) {
	v, closer, err := r.Get(convKey(conv))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, history.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read conversation %s: %w", conv, err)
	}
	defer closer.Close()
	c := &chatv1.Conversation{}
	if err := proto.Unmarshal(v, c); err != nil {
		return nil, fmt.Errorf("decode conversation %s: %w", conv, err)
	}
	return c, nil
}

// Conversation implements history.Store.
func (s *Store) Conversation(ctx context.Context, conv string) (*chatv1.Conversation, error) {
	return getConversation(s.db, conv)
}

// getChanged returns when a conversation's summary last changed (Unix
// nanoseconds), 0 when never recorded.
func getChanged(r getter, conv string) (int64, error) {
	v, closer, err := r.Get(changedKey(conv))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read change time of %s: %w", conv, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("read change time of %s: %d bytes, want 8", conv, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// unread counts the events after read that history.CountsAsUnread for
// user, up to history.UnreadCap.
func unread(ctx context.Context, snap *pebble.Snapshot, conv, user string, read uint64) (uint64, error) {
	it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: eventKey(conv, read+1),
		UpperBound: eventKey(conv, ^uint64(0)),
	})
	if err != nil {
		return 0, fmt.Errorf("count unread of %s in %s: %w", user, conv, err)
	}
	defer it.Close()
	var n uint64
	for ok := it.First(); ok && n < history.UnreadCap; ok = it.Next() {
		ev := &chatv1.Event{}
		if err := proto.Unmarshal(it.Value(), ev); err != nil {
			return 0, fmt.Errorf("decode event in %s: %w", conv, err)
		}
		if history.CountsAsUnread(ev, user) {
			n++
		}
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("count unread of %s in %s: %w", user, conv, err)
	}
	return n, nil
}

// ConversationFor implements history.Store, from one snapshot as
// Conversations.
func (s *Store) ConversationFor(ctx context.Context, conv, user string) (*chatv1.Conversation, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	c, _, err := asRead(snap, conv, user)
	if err != nil {
		return nil, err
	}
	return c, countUnread(ctx, snap, c, user)
}

// asRead is conv's summary as user reads it (read position, own flags;
// countUnread adds the unread count), and when that position or those
// flags last changed (the later of the two, Unix nanoseconds).
func asRead(snap *pebble.Snapshot, conv, user string) (*chatv1.Conversation, int64, error) {
	c, err := getConversation(snap, conv)
	if err != nil {
		return nil, 0, err
	}
	read, readChanged, err := getRead(snap, conv, user)
	if err != nil {
		return nil, 0, err
	}
	flags, err := getFlags(snap, user, conv)
	if err != nil {
		return nil, 0, err
	}
	c.ReadSeq = read
	c.Muted, c.Pinned = flags.f.GetMuted(), flags.f.GetPinned()
	return c, max(readChanged, flags.changed), nil
}

// countUnread sets c's unread count for user, who has read to c.ReadSeq.
func countUnread(ctx context.Context, snap *pebble.Snapshot, c *chatv1.Conversation, user string) error {
	if c.GetReadSeq() >= c.GetLastSeq() {
		return nil
	}
	var err error
	c.UnreadCount, err = unread(ctx, snap, c.GetConversationId(), user, c.GetReadSeq())
	return err
}

// Conversations implements history.Store. It reads from one snapshot, so
// a summary and the user's read position in it agree.
func (s *Store) Conversations(ctx context.Context, user string, q history.ListQuery) ([]*chatv1.Conversation, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	prefix := userPrefix(user)
	it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	defer it.Close()
	var since int64
	if !q.ChangedSince.IsZero() {
		since = q.ChangedSince.UnixNano()
	}
	var out []*chatv1.Conversation
	for ok := it.First(); ok; ok = it.Next() {
		conv := string(it.Key()[len(prefix):])
		c, userChanged, err := asRead(snap, conv, user)
		if err != nil {
			return nil, err
		}
		if since != 0 && userChanged < since {
			changed, err := getChanged(snap, conv)
			if err != nil {
				return nil, err
			}
			if changed < since {
				continue
			}
		}
		if err := countUnread(ctx, snap, c, user); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	slices.SortStableFunc(out, history.ListOrder)
	if n := history.ClampLimit(q.Limit); len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// Package pebblestore is the embedded history store used by `make run`:
// CockroachDB's Pebble LSM on local disk.
package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Key layout; 0x00 separates parts because ids never contain it.
//
//	e 0 <conversation> 0 <seq, 8 bytes big endian>  -> chat.v1.Event
//	c 0 <conversation>                               -> chat.v1.Conversation
//	u 0 <user> 0 <conversation>                      -> empty (membership)
const (
	prefixEvent        = 'e'
	prefixConversation = 'c'
	prefixUser         = 'u'
)

// Store is a history.Store on Pebble.
type Store struct {
	db *pebble.DB
}

var _ history.Store = (*Store)(nil)

// Open opens (creating if needed) the store in dir.
func Open(dir string) (*Store, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, fmt.Errorf("open pebble history store at %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func eventKey(conv string, seq uint64) []byte {
	k := make([]byte, 0, 3+len(conv)+8)
	k = append(k, prefixEvent, 0)
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func convKey(conv string) []byte {
	return append([]byte{prefixConversation, 0}, conv...)
}

func userPrefix(user string) []byte {
	k := append([]byte{prefixUser, 0}, user...)
	return append(k, 0)
}

// Apply implements history.Store.
func (s *Store) Apply(ctx context.Context, recs []*logv1.EventRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.db.NewIndexedBatch()
	defer b.Close()
	summaries := map[string]*chatv1.Conversation{}
	for _, rec := range recs {
		ev := rec.GetEvent()
		conv := ev.GetConversationId()
		if conv == "" || ev.GetSeq() == 0 {
			return fmt.Errorf("apply event %q: missing conversation id or seq", ev.GetEventId())
		}
		data, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal event %s/%d: %w", conv, ev.GetSeq(), err)
		}
		if err := b.Set(eventKey(conv, ev.GetSeq()), data, nil); err != nil {
			return fmt.Errorf("write event %s/%d: %w", conv, ev.GetSeq(), err)
		}
		sum, ok := summaries[conv]
		if !ok {
			sum, err = getConversation(b, conv)
			if errors.Is(err, history.ErrNotFound) {
				sum, err = &chatv1.Conversation{}, nil
			}
			if err != nil {
				return err
			}
			summaries[conv] = sum
		}
		joined, _ := history.Summarize(sum, ev)
		for _, u := range joined {
			if err := b.Set(append(userPrefix(u), conv...), nil, nil); err != nil {
				return fmt.Errorf("write membership %s/%s: %w", conv, u, err)
			}
		}
	}
	for conv, sum := range summaries {
		data, err := proto.Marshal(sum)
		if err != nil {
			return fmt.Errorf("marshal conversation %s: %w", conv, err)
		}
		if err := b.Set(convKey(conv), data, nil); err != nil {
			return fmt.Errorf("write conversation %s: %w", conv, err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit %d events: %w", len(recs), err)
	}
	return nil
}

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

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

// History implements history.Store.
func (s *Store) History(ctx context.Context, conv string, q history.Query) (history.Page, error) {
	if _, err := getConversation(s.db, conv); err != nil {
		return history.Page{}, err
	}
	limit := history.ClampLimit(q.Limit)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: eventKey(conv, 1),
		UpperBound: eventKey(conv, ^uint64(0)),
	})
	if err != nil {
		return history.Page{}, fmt.Errorf("read history %s: %w", conv, err)
	}
	defer it.Close()
	var page history.Page
	decode := func() error {
		ev := &chatv1.Event{}
		if err := proto.Unmarshal(it.Value(), ev); err != nil {
			return fmt.Errorf("decode event in %s: %w", conv, err)
		}
		page.Events = append(page.Events, ev)
		return nil
	}
	if q.Forward {
		for ok := it.SeekGE(eventKey(conv, q.AfterSeq+1)); ok; ok = it.Next() {
			if len(page.Events) == limit {
				page.HasMore = true
				break
			}
			if err := decode(); err != nil {
				return history.Page{}, err
			}
		}
	} else {
		var ok bool
		if q.BeforeSeq == 0 {
			ok = it.Last()
		} else {
			ok = it.SeekLT(eventKey(conv, q.BeforeSeq))
		}
		for ; ok; ok = it.Prev() {
			if len(page.Events) == limit {
				page.HasMore = true
				break
			}
			if err := decode(); err != nil {
				return history.Page{}, err
			}
		}
		slices.Reverse(page.Events)
	}
	if err := it.Error(); err != nil {
		return history.Page{}, fmt.Errorf("read history %s: %w", conv, err)
	}
	return page, nil
}

// Conversations implements history.Store.
func (s *Store) Conversations(ctx context.Context, user string, limit int) ([]*chatv1.Conversation, error) {
	prefix := userPrefix(user)
	upper := append(bytes.Clone(prefix[:len(prefix)-1]), 1)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	defer it.Close()
	var out []*chatv1.Conversation
	for ok := it.First(); ok; ok = it.Next() {
		conv := string(it.Key()[len(prefix):])
		c, err := getConversation(s.db, conv)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	slices.SortStableFunc(out, func(a, b *chatv1.Conversation) int {
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

// quietLogger keeps Pebble's info chatter out of the service log.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

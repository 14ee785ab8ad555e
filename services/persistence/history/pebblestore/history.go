package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// getEvent reads an event stored at k, nil when there is none.
func getEvent(r getter, k []byte) (*chatv1.Event, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", k, err)
	}
	defer closer.Close()
	ev := &chatv1.Event{}
	if err := proto.Unmarshal(v, ev); err != nil {
		return nil, fmt.Errorf("decode %q: %w", k, err)
	}
	return ev, nil
}

// states reads the MessageState of each seq (see history.Overlay), seqs
// in ascending order. One iterator per kind of entry walks forward over
// the seqs: a point read per seq and kind cost a fresh descent through
// every level each, most of a history page's CPU.
func (s *Store) states(ctx context.Context, r interface {
	NewIterWithContext(context.Context, *pebble.IterOptions) (*pebble.Iterator, error)
}, conv string, seqs []uint64, viewer string) (map[uint64]*history.MessageState, error) {
	out := make(map[uint64]*history.MessageState, len(seqs))
	if len(seqs) == 0 {
		return out, nil
	}
	var its [3]*pebble.Iterator
	defer func() {
		for _, it := range its {
			if it != nil {
				it.Close()
			}
		}
	}()
	for i, kind := range []byte{prefixEdit, prefixDeleted, prefixReaction} {
		it, err := r.NewIterWithContext(ctx, &pebble.IterOptions{
			LowerBound: seqKey(kind, conv, seqs[0]), UpperBound: seqKey(kind, conv, seqs[len(seqs)-1]+1),
		})
		if err != nil {
			return nil, fmt.Errorf("read message states of %s: %w", conv, err)
		}
		its[i] = it
	}
	edits, deletes, reactions := its[0], its[1], its[2]
	for _, seq := range seqs {
		st := &history.MessageState{}
		if k := seqKey(prefixEdit, conv, seq); edits.SeekGE(k) && bytes.Equal(edits.Key(), k) {
			st.Edit = &chatv1.Event{}
			if err := proto.Unmarshal(edits.Value(), st.Edit); err != nil {
				return nil, fmt.Errorf("decode edit of %s/%d: %w", conv, seq, err)
			}
		}
		if k := seqKey(prefixDeleted, conv, seq); deletes.SeekGE(k) && bytes.Equal(deletes.Key(), k) {
			st.Deleted = true
		}
		if !st.Deleted {
			lo := seqKey(prefixReaction, conv, seq)
			var counts history.Reactions
			for ok := reactions.SeekGE(lo); ok && bytes.HasPrefix(reactions.Key(), lo); ok = reactions.Next() {
				rest := reactions.Key()[len(lo):]
				i := bytes.IndexByte(rest, 0)
				if v := reactions.Value(); i < 0 || len(v) != 9 {
					return nil, fmt.Errorf("read reactions of %s/%d: malformed entry %q", conv, seq, rest)
				} else if v[8] == 1 {
					counts.Add(string(rest[:i]), string(rest[i+1:]), viewer)
				}
			}
			st.Reactions = counts.Counts()
		}
		out[seq] = st
	}
	for _, it := range its {
		if err := it.Error(); err != nil {
			return nil, fmt.Errorf("read message states of %s: %w", conv, err)
		}
	}
	return out, nil
}

// History implements history.Store.
func (s *Store) History(ctx context.Context, conv string, q history.Query) (history.Page, error) {
	// One snapshot, so the messages and what happened to them agree.
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if _, err := getConversation(snap, conv); err != nil {
		return history.Page{}, err
	}
	limit := history.ClampLimit(q.Limit)
	it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{
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
	states, err := s.states(ctx, snap, conv, history.OverlaySeqs(page.Events), q.Viewer)
	if err != nil {
		return history.Page{}, err
	}
	history.Overlay(page.Events, states)
	return page, nil
}

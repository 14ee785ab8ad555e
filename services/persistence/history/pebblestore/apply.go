package pebblestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

type userConv struct{ conv, user string }

// flagsState is a user's flags being folded in an Apply: what the store
// holds (or the newer record to write, moved).
type flagsState struct {
	f     *chatv1.ConversationFlags
	moved bool
}

type device struct{ conv, user, device string }

// position is a seq being folded in an Apply, and whether it moved.
type position struct {
	seq   uint64
	moved bool
}

// applier folds one Apply's records over what the batch (and below it the
// database) already holds.
type applier struct {
	b         *pebble.Batch
	summaries map[string]*chatv1.Conversation
	changed   map[string]bool
	reads     map[userConv]*position
	delivered map[device]*position
	flags     map[userConv]*flagsState
}

// Apply implements history.Store.
func (s *Store) Apply(ctx context.Context, recs []*logv1.EventRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.db.NewIndexedBatch()
	defer b.Close()
	a := &applier{
		b:         b,
		summaries: map[string]*chatv1.Conversation{},
		changed:   map[string]bool{},
		reads:     map[userConv]*position{},
		delivered: map[device]*position{},
		flags:     map[userConv]*flagsState{},
	}
	for _, rec := range recs {
		var err error
		switch ev, r := rec.GetEvent(), rec.GetReceipt(); {
		case rec.GetBlock() != nil && ev == nil && r == nil:
			err = a.block(rec.GetBlock())
		case (rec.GetContact() != nil || rec.GetDeclined() != nil) && ev == nil && r == nil:
			// The sequencer's own records: each user's contact list is
			// folded from the items of their inbox, and nobody is shown
			// a declined invitation but the invitee, in theirs.
		case rec.GetFlags() != nil && ev == nil && r == nil:
			err = a.setFlags(rec.GetFlags())
		case ev != nil && r != nil:
			err = fmt.Errorf("apply record of command %q: holds both an event and a receipt", rec.GetCommandId())
		case ev != nil:
			err = a.event(ev)
		case r != nil:
			err = a.receipt(r)
		default:
			err = fmt.Errorf("apply record of command %q: holds neither an event nor a receipt", rec.GetCommandId())
		}
		if err != nil {
			return err
		}
	}
	for conv, sum := range a.summaries {
		if !a.changed[conv] {
			continue
		}
		data, err := proto.Marshal(sum)
		if err != nil {
			return fmt.Errorf("marshal conversation %s: %w", conv, err)
		}
		if err := b.Set(convKey(conv), data, nil); err != nil {
			return fmt.Errorf("write conversation %s: %w", conv, err)
		}
	}
	for k, p := range a.delivered {
		if !p.moved {
			continue
		}
		if err := b.Set(deliveredKey(k.conv, k.user, k.device), binary.BigEndian.AppendUint64(nil, p.seq), nil); err != nil {
			return fmt.Errorf("write delivered position of %s/%s in %s: %w", k.user, k.device, k.conv, err)
		}
	}
	// The clock is read as late as possible: the change becomes visible
	// when the batch commits.
	stamp := s.now()
	if err := a.stamp(b, stamp); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit %d records: %w", len(recs), err)
	}
	if s.now().Sub(stamp) > history.ChangeLag {
		return s.restamp(a)
	}
	return nil
}

// stamp writes the change times of what this Apply changed, and the read
// positions, which carry theirs.
func (a *applier) stamp(w pebble.Writer, at time.Time) error {
	t := binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano()))
	for conv, ok := range a.changed {
		if !ok {
			continue
		}
		if err := w.Set(changedKey(conv), t, nil); err != nil {
			return fmt.Errorf("write change time of %s: %w", conv, err)
		}
	}
	for k, p := range a.reads {
		if !p.moved {
			continue
		}
		if err := w.Set(readKey(k.conv, k.user), append(binary.BigEndian.AppendUint64(nil, p.seq), t...), nil); err != nil {
			return fmt.Errorf("write read position of %s in %s: %w", k.user, k.conv, err)
		}
	}
	for k, st := range a.flags {
		if !st.moved {
			continue
		}
		v := binary.BigEndian.AppendUint64(nil, st.f.GetVersion())
		v = append(v, boolByte(st.f.GetMuted()), boolByte(st.f.GetPinned()))
		if err := w.Set(flagsKey(k.user, k.conv), append(v, t...), nil); err != nil {
			return fmt.Errorf("write flags of %s in %s: %w", k.user, k.conv, err)
		}
	}
	return nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// restamp moves the change times of a slow Apply to now, which is after
// its changes became visible (see history.ChangeLag).
func (s *Store) restamp(a *applier) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := a.stamp(b, s.now()); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit change times: %w", err)
	}
	return nil
}

package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// A contact entry's value: the inbox seq that set it, the state, and the
// event's time in Unix microseconds.
const contactValueLen = 8 + 1 + 8

// contact folds an inbox's ContactUpdated item into its owner's entry for
// the other user, keeping the item of the highest seq (see
// history.Store.Contacts); the batch is indexed, so a later item of this
// Apply reads what an earlier one wrote.
func (a *applier) contact(ev *chatv1.Event, u *chatv1.ContactUpdated) error {
	owner, peer := u.GetOwnerId(), u.GetUserId()
	if owner == "" || peer == "" {
		return fmt.Errorf("apply contact item %s/%d: missing owner or user id", ev.GetConversationId(), ev.GetSeq())
	}
	k := append(contactPrefix(owner), peer...)
	v, closer, err := a.b.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read contact %s of %s: %w", peer, owner, err)
	default:
		newer := len(v) == contactValueLen && binary.BigEndian.Uint64(v) >= ev.GetSeq()
		closer.Close()
		if newer {
			return nil
		}
	}
	val := binary.BigEndian.AppendUint64(make([]byte, 0, contactValueLen), ev.GetSeq())
	val = append(val, byte(u.GetState()))
	val = binary.BigEndian.AppendUint64(val, uint64(ev.GetTime().AsTime().UnixMicro()))
	if err := a.b.Set(k, val, nil); err != nil {
		return fmt.Errorf("write contact %s of %s: %w", peer, owner, err)
	}
	return nil
}

// Contacts implements history.Store: one range scan of the user's
// entries, which come in user id order.
func (s *Store) Contacts(ctx context.Context, user string) ([]*chatv1.Contact, error) {
	prefix := contactPrefix(user)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read contacts of %s: %w", user, err)
	}
	defer it.Close()
	out := []*chatv1.Contact{}
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		if len(v) != contactValueLen {
			return nil, fmt.Errorf("read contacts of %s: %d bytes for %q, want %d", user, len(v), it.Key()[len(prefix):], contactValueLen)
		}
		st := chatv1.ContactState(v[8])
		if st == chatv1.ContactState_CONTACT_STATE_UNSPECIFIED {
			continue
		}
		out = append(out, &chatv1.Contact{UserId: string(it.Key()[len(prefix):]), State: st, InboxSeq: binary.BigEndian.Uint64(v),
			Since: timestamppb.New(time.UnixMicro(int64(binary.BigEndian.Uint64(v[9:]))))})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read contacts of %s: %w", user, err)
	}
	return out, nil
}

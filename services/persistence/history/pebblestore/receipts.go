package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

func (a *applier) receipt(r *chatv1.Receipt) error {
	conv, user := r.GetConversationId(), r.GetUserId()
	if conv == "" || user == "" {
		return fmt.Errorf("apply receipt of %q/%q in %q: missing conversation or user id", user, r.GetDeviceId(), conv)
	}
	// A conversation this store has not seen yet gets the positions all the
	// same; Receipts shows them once the conversation exists.
	return a.move(conv, user, r.GetDeviceId(), r)
}

// move folds r into the user's read and the device's delivered position
// with history.ApplyReceipt. A position without a device has no delivered
// position to keep.
func (a *applier) move(conv, user, dev string, r *chatv1.Receipt) error {
	rk := userConv{conv, user}
	read, err := a.read(rk)
	if err != nil {
		return err
	}
	pos := &chatv1.Receipt{ReadSeq: read.seq}
	var del *position
	if dev != "" {
		dk := device{conv, user, dev}
		if del, err = a.deliveredPos(dk); err != nil {
			return err
		}
		pos.DeliveredSeq = del.seq
	}
	if !history.ApplyReceipt(pos, r) {
		return nil
	}
	if pos.GetReadSeq() != read.seq {
		read.seq, read.moved = pos.GetReadSeq(), true
	}
	if del != nil && pos.GetDeliveredSeq() != del.seq {
		del.seq, del.moved = pos.GetDeliveredSeq(), true
	}
	return nil
}

func (a *applier) read(k userConv) (*position, error) {
	if p := a.reads[k]; p != nil {
		return p, nil
	}
	seq, _, err := getRead(a.b, k.conv, k.user)
	if err != nil {
		return nil, err
	}
	p := &position{seq: seq}
	a.reads[k] = p
	return p, nil
}

func (a *applier) deliveredPos(k device) (*position, error) {
	if p := a.delivered[k]; p != nil {
		return p, nil
	}
	p := &position{}
	v, closer, err := a.b.Get(deliveredKey(k.conv, k.user, k.device))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("read delivered position of %s/%s in %s: %w", k.user, k.device, k.conv, err)
	default:
		if len(v) != 8 {
			closer.Close()
			return nil, fmt.Errorf("read delivered position of %s/%s in %s: %d bytes, want 8", k.user, k.device, k.conv, len(v))
		}
		p.seq = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	a.delivered[k] = p
	return p, nil
}

// getRead returns a user's read position in a conversation and when it
// last moved (Unix nanoseconds), zeros when there is none.
func getRead(r getter, conv, user string) (seq uint64, changed int64, err error) {
	v, closer, err := r.Get(readKey(conv, user))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read read position of %s in %s: %w", user, conv, err)
	}
	defer closer.Close()
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("read read position of %s in %s: %d bytes, want 16", user, conv, len(v))
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), nil
}

// Receipts implements history.Store: the conversation's read positions
// into a map, then its delivered positions, which are in (user, device)
// order already.
func (s *Store) Receipts(ctx context.Context, conv string) ([]*chatv1.Receipt, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if _, err := getConversation(snap, conv); err != nil {
		return nil, err
	}
	reads := map[string]uint64{}
	prefix := positionPrefix(prefixRead, conv)
	it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read read positions in %s: %w", conv, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Value()) != 16 {
			it.Close()
			return nil, fmt.Errorf("read read positions in %s: %d bytes for %q, want 16", conv, len(it.Value()), it.Key()[len(prefix):])
		}
		reads[string(it.Key()[len(prefix):])] = binary.BigEndian.Uint64(it.Value())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("read read positions in %s: %w", conv, err)
	}

	var out []*chatv1.Receipt
	prefix = positionPrefix(prefixDelivered, conv)
	it, err = snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read delivered positions in %s: %w", conv, err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		rest := it.Key()[len(prefix):]
		i := bytes.IndexByte(rest, 0)
		if i < 0 || len(it.Value()) != 8 {
			return nil, fmt.Errorf("read delivered positions in %s: malformed entry %q", conv, rest)
		}
		user := string(rest[:i])
		out = append(out, &chatv1.Receipt{
			ConversationId: conv,
			UserId:         user,
			DeviceId:       string(rest[i+1:]),
			DeliveredSeq:   binary.BigEndian.Uint64(it.Value()),
			ReadSeq:        reads[user],
		})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read delivered positions in %s: %w", conv, err)
	}
	return out, nil
}

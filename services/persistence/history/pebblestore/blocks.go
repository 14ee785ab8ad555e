package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"

	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// block folds a block record into its pair's entry; the batch is indexed,
// so a later record of the same pair in this Apply reads what an earlier
// one wrote.
func (a *applier) block(bl *logv1.BlockChange) error {
	blocker, blocked := bl.GetBlockerId(), bl.GetBlockedId()
	if blocker == "" || blocked == "" || bl.GetTime() == nil {
		return fmt.Errorf("apply block of %q by %q: missing blocker, blocked user or time", blocked, blocker)
	}
	k := append(blockPrefix(blocker), blocked...)
	var heldStamp int64
	var heldBlocked bool
	v, closer, err := a.b.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read block of %s by %s: %w", blocked, blocker, err)
	default:
		ok := len(v) == 9
		if ok {
			heldStamp, heldBlocked = int64(binary.BigEndian.Uint64(v)), v[8] == 1
		}
		closer.Close()
		if !ok {
			return fmt.Errorf("read block of %s by %s: %d bytes, want 9", blocked, blocker, len(v))
		}
	}
	if !history.NewerBlock(bl, heldStamp, heldBlocked) {
		return nil
	}
	val := append(binary.BigEndian.AppendUint64(nil, uint64(history.BlockStamp(bl))), boolByte(bl.GetBlocked()))
	if err := a.b.Set(k, val, nil); err != nil {
		return fmt.Errorf("write block of %s by %s: %w", blocked, blocker, err)
	}
	return nil
}

// Blocks implements history.Store: one range scan of the blocker's
// entries, which come in blocked-id order.
func (s *Store) Blocks(ctx context.Context, blocker string) ([]string, error) {
	prefix := blockPrefix(blocker)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read blocks of %s: %w", blocker, err)
	}
	defer it.Close()
	out := []string{}
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		if len(v) != 9 {
			return nil, fmt.Errorf("read blocks of %s: %d bytes for %q, want 9", blocker, len(v), it.Key()[len(prefix):])
		}
		if v[8] == 1 {
			out = append(out, string(it.Key()[len(prefix):]))
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read blocks of %s: %w", blocker, err)
	}
	return out, nil
}

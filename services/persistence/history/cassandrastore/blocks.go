package cassandrastore

import (
	"context"
	"fmt"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"golang.org/x/sync/errgroup"

	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// blockWrites are the block records of one Apply call, the newest per
// pair (see history.NewerBlock), by blocker in arrival order.
type blockWrites struct {
	order []string
	by    map[string]map[string]*logv1.BlockChange // blocker -> blocked -> record
}

func (b *blockWrites) add(bl *logv1.BlockChange) {
	if b.by == nil {
		b.by = map[string]map[string]*logv1.BlockChange{}
	}
	pairs := b.by[bl.GetBlockerId()]
	if pairs == nil {
		pairs = map[string]*logv1.BlockChange{}
		b.by[bl.GetBlockerId()] = pairs
		b.order = append(b.order, bl.GetBlockerId())
	}
	held := pairs[bl.GetBlockedId()]
	if held == nil || history.NewerBlock(bl, history.BlockStamp(held), held.GetBlocked()) {
		pairs[bl.GetBlockedId()] = bl
	}
}

// writeBlocks queues one user_blocks batch per blocker (one partition),
// each row USING TIMESTAMP its record's stamp (see
// migrations/0006_blocks.cql).
func (s *Store) writeBlocks(ctx context.Context, g *errgroup.Group, b *blockWrites) {
	for _, blocker := range b.order {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		for blocked, bl := range b.by[blocker] {
			batch.Query(insertBlock, blocker, blocked, bl.GetBlocked(), history.BlockStamp(bl))
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write %d blocks of %s: %w", len(b.by[blocker]), blocker, err)
			}
			return nil
		})
	}
}

const insertBlock = `INSERT INTO user_blocks (blocker_id, blocked_id, blocked) VALUES (?, ?, ?) USING TIMESTAMP ?`

// Blocks implements history.Store: one partition read; rows come in
// blocked-id order, the clustering order.
func (s *Store) Blocks(ctx context.Context, blocker string) ([]string, error) {
	iter := s.sess.Query(`SELECT blocked_id, blocked FROM user_blocks WHERE blocker_id = ?`, blocker).WithContext(ctx).Iter()
	out := []string{}
	var id string
	var blocked bool
	for iter.Scan(&id, &blocked) {
		if blocked {
			out = append(out, id)
		}
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read blocks of %s: %w", blocker, err)
	}
	return out, nil
}

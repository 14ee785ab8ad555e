package cassandrastore

import (
	"context"
	"fmt"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"golang.org/x/sync/errgroup"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// userReads groups the read positions of an Apply by user: a user's
// read_positions rows share a partition and go in one unlogged batch.
func userReads(convs []*convWrites) (users []string, byUser map[string][]*convWrites) {
	byUser = map[string][]*convWrites{}
	for _, w := range convs {
		for u := range w.reads {
			if byUser[u] == nil {
				users = append(users, u)
			}
			byUser[u] = append(byUser[u], w)
		}
	}
	return users, byUser
}

// writeUserReads queues each user's read_positions batch, stamped: what
// the conversation list reads for unread counts and changes.
func (s *Store) writeUserReads(p *pack, convs []*convWrites, stamp int64) {
	users, byUser := userReads(convs)
	for _, u := range users {
		batch := s.sess.NewBatch(gocql.UnloggedBatch)
		for _, w := range byUser[u] {
			seq := int64(w.reads[u])
			batch.Query(updateUser, seq, seq, stamp, u, w.id)
		}
		p.add(batch, fmt.Sprintf("write read positions of %s in %d conversations", u, len(byUser[u])))
	}
}

// Receipts implements history.Store: the conversation's existence, its
// read positions and its device positions, three concurrent
// single-partition reads; device_positions is clustered in the order
// Receipts returns.
func (s *Store) Receipts(ctx context.Context, conv string) ([]*chatv1.Receipt, error) {
	if conv == "" {
		return nil, history.ErrNotFound
	}
	var (
		reads = map[string]uint64{}
		out   []*chatv1.Receipt
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := s.lastSeq(gctx, conv)
		return err
	})
	g.Go(func() error {
		iter := s.sess.Query(`SELECT user_id, read_seq FROM read_positions_by_conversation WHERE conversation_id = ?`, conv).WithContext(gctx).Iter()
		var (
			user string
			seq  *int64
		)
		for iter.Scan(&user, &seq) {
			if seq != nil {
				reads[user] = uint64(*seq)
			}
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read read positions in %s: %w", conv, err)
		}
		return nil
	})
	g.Go(func() error {
		iter := s.sess.Query(`SELECT user_id, device_id, delivered_seq FROM device_positions WHERE conversation_id = ?`, conv).WithContext(gctx).Iter()
		var (
			user, device string
			seq          *int64
		)
		for iter.Scan(&user, &device, &seq) {
			r := &chatv1.Receipt{ConversationId: conv, UserId: user, DeviceId: device}
			if seq != nil {
				r.DeliveredSeq = uint64(*seq)
			}
			out = append(out, r)
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read delivered positions in %s: %w", conv, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, r := range out {
		r.ReadSeq = reads[r.GetUserId()]
	}
	return out, nil
}

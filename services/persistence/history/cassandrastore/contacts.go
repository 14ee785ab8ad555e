package cassandrastore

import (
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// contactWrites are the inbox contact items of one Apply call, the one of
// the highest seq per owner and other user, by owner in arrival order.
type contactWrites struct {
	order []string
	by    map[string]map[string]*chatv1.Event // owner -> other -> item
}

func (c *contactWrites) add(ev *chatv1.Event) {
	u := ev.GetContactUpdated()
	if c.by == nil {
		c.by = map[string]map[string]*chatv1.Event{}
	}
	peers := c.by[u.GetOwnerId()]
	if peers == nil {
		peers = map[string]*chatv1.Event{}
		c.by[u.GetOwnerId()] = peers
		c.order = append(c.order, u.GetOwnerId())
	}
	if held := peers[u.GetUserId()]; held == nil || held.GetSeq() < ev.GetSeq() {
		peers[u.GetUserId()] = ev
	}
}

// writeContacts queues one user_contacts batch per owner (one partition),
// each row USING TIMESTAMP its item's seq (see
// migrations/0007_contacts.cql).
func (s *Store) writeContacts(ctx context.Context, g *errgroup.Group, c *contactWrites) {
	for _, owner := range c.order {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		for peer, ev := range c.by[owner] {
			batch.Query(insertContact, owner, peer, int(ev.GetContactUpdated().GetState()), int64(ev.GetSeq()), ev.GetTime().AsTime(), int64(ev.GetSeq()))
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write %d contacts of %s: %w", len(c.by[owner]), owner, err)
			}
			return nil
		})
	}
}

const insertContact = `INSERT INTO user_contacts (owner_id, user_id, state, inbox_seq, since) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?`

// Contacts implements history.Store: one partition read; rows come in
// user id order, the clustering order.
func (s *Store) Contacts(ctx context.Context, owner string) ([]*chatv1.Contact, error) {
	iter := s.sess.Query(`SELECT user_id, state, inbox_seq, since FROM user_contacts WHERE owner_id = ?`, owner).WithContext(ctx).Iter()
	out := []*chatv1.Contact{}
	var (
		id    string
		state int
		seq   int64
		since time.Time
	)
	for iter.Scan(&id, &state, &seq, &since) {
		if st := chatv1.ContactState(state); st != chatv1.ContactState_CONTACT_STATE_UNSPECIFIED {
			out = append(out, &chatv1.Contact{UserId: id, State: st, InboxSeq: uint64(seq), Since: timestamppb.New(since)})
		}
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read contacts of %s: %w", owner, err)
	}
	return out, nil
}

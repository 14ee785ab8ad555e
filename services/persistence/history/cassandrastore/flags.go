package cassandrastore

import (
	"context"
	"fmt"

	"github.com/gocql/gocql"
	"golang.org/x/sync/errgroup"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// writeFlags queues each user's conversation_flags batch (one partition
// per user), stamped; with again set, only the change times (restamp).
func (s *Store) writeFlags(ctx context.Context, g *errgroup.Group, convs []*convWrites, stamp int64, again bool) {
	var users []string
	byUser := map[string][]*chatv1.ConversationFlags{}
	for _, w := range convs {
		for u, f := range w.flags {
			if byUser[u] == nil {
				users = append(users, u)
			}
			byUser[u] = append(byUser[u], f)
		}
	}
	for _, u := range users {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		for _, f := range byUser[u] {
			v := int64(f.GetVersion())
			if again {
				batch.Query(restampFlags, v, stamp, u, f.GetConversationId())
			} else {
				batch.Query(updateFlags, v, f.GetMuted(), f.GetPinned(), v, stamp, u, f.GetConversationId())
			}
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write flags of %s in %d conversations: %w", u, len(byUser[u]), err)
			}
			return nil
		})
	}
}

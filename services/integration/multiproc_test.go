package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"golang.org/x/sync/errgroup"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// sendRetrying sends until it gets an answer, retrying an UNAVAILABLE with
// the same client message id, as an app would.
func sendRetrying(ctx context.Context, c *sdk.Client, conv, id, text string) (*clientv1.Accepted, error) {
	for {
		acc, err := c.SendWithID(ctx, conv, id, text)
		var we *wire.Error
		if errors.As(err, &we) && we.Code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return acc, err
	}
}

// TestKillPersistenceMidStream runs every service as its own process on
// real Kafka and Cassandra, kills persistence with SIGKILL while 2,000
// messages flow, restarts it, and checks that history holds every accepted
// message exactly once, in seq order, and that live delivery across two
// edges missed nothing.
func TestKillPersistenceMidStream(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	const convs, senders, perSender = 10, 8, 250
	aliceReader := c.dial(0, "alice", "alice-reader")
	bobReader := c.dial(1, "bob", "bob-reader")
	var ids []string
	for i := range convs {
		acc, err := aliceReader.CreateGroup(ctx, fmt.Sprintf("g%d", i), "bob")
		if err != nil {
			t.Fatalf("create group: %v", err)
		}
		ids = append(ids, acc.GetConversationId())
	}

	type sent struct {
		seq  uint64
		text string
	}
	var mu sync.Mutex
	accepted := map[string]map[string]sent{} // conversation -> client id -> answer
	for _, id := range ids {
		accepted[id] = map[string]sent{}
	}
	var count atomic.Int64
	killed := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	for k := range senders {
		user, edge := "alice", 0
		if k%2 == 1 {
			user, edge = "bob", 1
		}
		cl := discardEvents(c.dial(edge, user, fmt.Sprintf("%s-sender-%d", user, k)))
		g.Go(func() error {
			for i := range perSender {
				conv := ids[(k+i)%convs]
				id := fmt.Sprintf("%s-%d-%d", user, k, i)
				text := fmt.Sprintf("message %d from sender %d", i, k)
				acc, err := sendRetrying(gctx, cl, conv, id, text)
				if err != nil {
					return fmt.Errorf("sender %d message %d: %w", k, i, err)
				}
				mu.Lock()
				accepted[conv][id] = sent{acc.GetSeq(), text}
				mu.Unlock()
				if count.Add(1) == 500 {
					close(killed)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		select {
		case <-killed:
		case <-gctx.Done():
			return nil
		}
		p := c.procs["persistence"]
		t.Logf("kill -9 persistence after %d accepted messages", count.Load())
		p.kill9()
		time.Sleep(2 * time.Second)
		p.start()
		t.Logf("persistence restarted at %d accepted messages", count.Load())
		return nil
	})
	start := time.Now()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages accepted in %s", count.Load(), time.Since(start))
	c.procs["persistence"].waitReady(60 * time.Second)

	l := &ledger{byID: map[string]map[string]sentMsg{}}
	for conv, byID := range accepted {
		l.byID[conv] = map[string]sentMsg{}
		for id, a := range byID {
			l.byID[conv][id] = sentMsg{a.seq, a.text}
		}
	}

	// Live delivery on both edges: every event of every conversation, in order.
	for _, r := range []*sdk.Client{aliceReader, bobReader} {
		expectLive(t, r, senders*perSender+convs, 60*time.Second)
	}
	l.verifyHistory(t, ctx, bobReader)
}

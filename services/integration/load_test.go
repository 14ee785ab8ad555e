package integration

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"golang.org/x/sync/errgroup"
)

// createGroups creates n groups of creator's with members, titled
// "<title> <i>", and returns their ids.
func createGroups(t *testing.T, ctx context.Context, creator *sdk.Client, n int, title string, members ...string) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := range n {
		acc, err := creator.CreateGroup(ctx, fmt.Sprintf("%s %d", title, i), members...)
		if err != nil {
			t.Fatalf("create group: %v", err)
		}
		ids = append(ids, acc.GetConversationId())
	}
	return ids
}

// killLoad is a load that a process is killed in the middle of.
type killLoad struct {
	// senders alternate between alice on edge 0 and bob on edge 1; each
	// sends perSender messages with client ids "<user>-<k>-<i>", sender k's
	// i-th into convs[(k*stride+i) % len(convs)].
	senders, perSender, stride int
	// proc is killed with SIGKILL once killAt messages are accepted, and
	// started again after down.
	proc   string
	killAt int64
	down   time.Duration
}

// sendKilling runs the load, recording every answer in l, and returns
// once every message is accepted and the process is started again.
func (c *cluster) sendKilling(t *testing.T, ctx context.Context, l *ledger, convs []string, load killLoad) {
	t.Helper()
	var count atomic.Int64
	kill := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	for k := range load.senders {
		user, edge := "alice", 0
		if k%2 == 1 {
			user, edge = "bob", 1
		}
		cl := discardEvents(c.dial(edge, user, fmt.Sprintf("%s-sender-%d", user, k)))
		g.Go(func() error {
			for i := range load.perSender {
				conv := convs[(k*load.stride+i)%len(convs)]
				id := fmt.Sprintf("%s-%d-%d", user, k, i)
				text := fmt.Sprintf("message %d from sender %d", i, k)
				acc, err := sendRetrying(gctx, cl, conv, id, text)
				if err != nil {
					return fmt.Errorf("sender %d message %d: %w", k, i, err)
				}
				if err := l.record(conv, id, acc.GetSeq(), text); err != nil {
					return err
				}
				if count.Add(1) == load.killAt {
					close(kill)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		select {
		case <-kill:
		case <-gctx.Done():
			return nil
		}
		p := c.procs[load.proc]
		t.Logf("kill -9 %s after %d accepted messages", load.proc, count.Load())
		p.kill9()
		time.Sleep(load.down)
		p.start()
		t.Logf("%s restarted at %d accepted messages", load.proc, count.Load())
		return nil
	})
	start := time.Now()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages accepted in %s", count.Load(), time.Since(start))
}

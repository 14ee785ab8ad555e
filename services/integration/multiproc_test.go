package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"

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
	ids := createGroups(t, ctx, aliceReader, convs, "g", "bob")
	l := newLedger(ids)
	c.sendKilling(t, ctx, l, ids, killLoad{senders: senders, perSender: perSender, stride: 1, proc: "persistence", killAt: 500, down: 2 * time.Second})
	c.procs["persistence"].waitReady(60 * time.Second)

	// Live delivery on both edges: every event of every conversation, in order.
	for _, r := range []*sdk.Client{aliceReader, bobReader} {
		expectLive(t, r, senders*perSender+convs, 60*time.Second)
	}
	l.verifyHistory(t, ctx, bobReader)
}

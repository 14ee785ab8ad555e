package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// stackControl runs deployments/local/stack.sh with args, failing the test
// if it fails.
func stackControl(t *testing.T, args ...string) {
	t.Helper()
	out, err := stackCommand(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("stack.sh %v: %v\n%s", args, err, out)
	}
	t.Logf("stack.sh %v: %s", args, out)
}

// TestCassandraOutage stops the real Cassandra for 30 s while messages
// flow: every message is still accepted and delivered live, history
// answers UNAVAILABLE instead of hanging, and once Cassandra is back
// persistence catches up from the log so history holds every message
// exactly once, in order (guarantees 1 and 6).
//
// It stops the shared Cassandra, so it runs only when the caller says the
// stack is its alone (PARLEY_STACK_CONTROL=1): `make test` runs it after
// every other test.
func TestCassandraOutage(t *testing.T) {
	s := requireStack(t)
	requireStackControl(t, "stops the shared Cassandra")
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const convs = 5
	creator := c.dial(0, "alice", "alice-creator")
	reader := c.dial(1, "bob", "bob-reader")
	ids := createGroups(t, ctx, creator, convs, "outage", "bob")
	l := newLedger(ids)
	sent := 0
	// Alternate senders so both edges submit during the outage.
	send := func() {
		t.Helper()
		cl := creator
		if sent%2 == 1 {
			cl = reader
		}
		conv, id := ids[sent%convs], fmt.Sprintf("m-%d", sent)
		text := fmt.Sprintf("message %d", sent)
		acc, err := sendRetrying(ctx, cl, conv, id, text)
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		if err := l.record(conv, id, acc.GetSeq(), text); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	for range 50 {
		send()
	}

	t.Cleanup(func() {
		// Leave the stack as found even when the test fails midway.
		_ = stackCommand("up", "cassandra").Run()
	})
	stackControl(t, "stop", "cassandra")
	down := time.Now()

	// Reads fail fast and clearly while the store is away.
	hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
	asked := time.Now()
	_, err := reader.History(hctx, &clientv1.GetHistory{ConversationId: ids[0], Limit: 50})
	hcancel()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE {
		t.Fatalf("history with Cassandra down: %v, want an UNAVAILABLE error frame", err)
	}
	t.Logf("history with Cassandra down answered %s in %s", we.Code, time.Since(asked).Round(time.Millisecond))

	// Writes and live delivery carry on for the whole outage.
	for time.Since(down) < 30*time.Second {
		send()
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d messages accepted, %d of them with Cassandra down for %s", sent, sent-50, time.Since(down).Round(time.Second))
	expectLive(t, reader, convs+sent, 60*time.Second)

	start := time.Now()
	stackControl(t, "start", "cassandra")
	t.Logf("Cassandra back after %s (start took %s)", time.Since(down).Round(time.Second), time.Since(start).Round(time.Second))
	caught := time.Now()
	l.verifyHistory(t, ctx, reader)
	t.Logf("history complete %s after Cassandra was back", time.Since(caught).Round(100*time.Millisecond))
}

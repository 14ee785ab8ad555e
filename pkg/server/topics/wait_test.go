package topics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/freeport"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWaitReadyWithin: nothing listening at the seed broker ends the wait
// at the timeout with an error naming the broker and why (the dial); a cluster that
// answers ends it at once; an ended context returns its own error.
func TestWaitReadyWithin(t *testing.T) {
	// A reserved port nobody listens on: connections to it are refused.
	closed, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(ClientOpts([]string{closed})...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	err = WaitReadyWithin(t.Context(), cl, time.Second)
	if took := time.Since(start); took < time.Second || took > 5*time.Second {
		t.Errorf("gave up after %s, want about 1s", took)
	}
	// Why: the dial failed. Usually "connection refused"; on a loaded
	// machine the only dial may itself run out the second ("i/o timeout").
	if err == nil || !strings.Contains(err.Error(), "kafka at "+closed+" not reachable within 1s") || !strings.Contains(err.Error(), "dial") {
		t.Errorf("err = %v, want it to name %s, the timeout and the failed dial", err, closed)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := WaitReadyWithin(ctx, cl, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("with an ended context: %v, want context.Canceled", err)
	}

	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up, err := kgo.NewClient(ClientOpts(c.ListenAddrs())...)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	if err := WaitReadyWithin(t.Context(), up, time.Second); err != nil {
		t.Errorf("with a cluster up: %v", err)
	}
}

package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"
)

// TestCommandsShareProduceRequests: with a command linger, Submits in
// flight at once append their commands in a shared produce request
// rather than one each (ProduceSync would send each at once).
func TestCommandsShareProduceRequests(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var produces atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		produces.Add(1)
		return nil, nil, false
	})
	brokers := c.ListenAddrs()
	cl, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := topics.Ensure(t.Context(), kadm.NewClient(cl), topics.Spec{Partitions: 8, ReplicationFactor: 1, MinInsyncReplicas: 1}); err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Brokers: brokers, GRPCAddr: "127.0.0.1:0", Registry: metrics.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler), CommandLinger: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// One first, so the producer knows the topic; then commands one
	// millisecond apart, well inside the linger.
	warm := postCmd("conv-warm", "alice", "warm", "hi")
	value, _ := proto.Marshal(warm)
	if err := svc.append(ctx, warm, value); err != nil {
		t.Fatal(err)
	}
	produces.Store(0)
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		time.Sleep(time.Millisecond)
		wg.Go(func() {
			cmd := postCmd(fmt.Sprintf("conv-%d", i), "alice", fmt.Sprint(i), "hi")
			value, _ := proto.Marshal(cmd)
			if err := svc.append(ctx, cmd, value); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := produces.Load(); got > 2 {
		t.Fatalf("%d commands appended 1 ms apart took %d produce requests, want them to share one or two", n, got)
	}
	recs := make(map[string]bool)
	rd, err := kgo.NewClient(append(topics.ClientOpts(brokers), kgo.ConsumeTopics(topics.Commands), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	for len(recs) < n+1 && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) { recs[string(r.Key)] = true })
	}
	if len(recs) != n+1 {
		t.Fatalf("the commands topic holds %d of the %d commands", len(recs), n+1)
	}
}

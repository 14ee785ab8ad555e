package ingest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// TestRestartedSequencerAbortsItsCrashedTransaction: a sequencer killed
// inside a transaction leaves it open, and a committed reader of the event
// partition (the restarted sequencer's rebuild among them) cannot pass it
// until it ends. The restarted process has the same transactional id, so
// it must claim it, which aborts the open transaction at once, instead of
// waiting for the transaction to time out. The crashed transaction here
// has a 60 s timeout; the restart must decide a new command well before.
func TestRestartedSequencerAbortsItsCrashedTransaction(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	admin, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := topics.Ensure(ctx, kadm.NewClient(admin), topics.Spec{Partitions: 1, ReplicationFactor: 1, MinInsyncReplicas: 1}); err != nil {
		t.Fatal(err)
	}

	// The crashed incarnation: its transaction holds an event record and
	// never ends (the process is gone; its client is simply abandoned).
	crashed, err := kgo.NewClient(append(topics.ClientOpts(brokers),
		kgo.TransactionalID("parley-sequencer-seq-0"), kgo.TransactionTimeout(60*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer crashed.Close()
	if err := crashed.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := crashed.ProduceSync(ctx, &kgo.Record{Topic: topics.Events, Partition: 0, Value: []byte("half-written")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	seq, err := NewSequencer(topics.ClientOpts(brokers), "seq-0", 10, slog.New(slog.DiscardHandler), newDeadLetters(metrics.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- seq.Run(sctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("sequencer: %v", err)
		}
	}()
	b, _ := proto.Marshal(createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"))
	if err := admin.ProduceSync(ctx, &kgo.Record{Topic: topics.Commands, Key: []byte("g"), Value: b}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Half the crashed transaction's timeout: a restart that waits for
	// the timeout cannot make it, one that claims the id has 30 s of
	// slack on a slow machine.
	deadline := began.Add(30 * time.Second)
	for len(outcomes(t, brokers, 500*time.Millisecond)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no command decided within 30 s of the restart: the sequencer waited for its crashed transaction to time out")
		}
	}
	// The crashed record was aborted, not committed.
	for _, r := range topicstest.Read(t, brokers, topics.Events, 1) {
		if string(r.Value) == "half-written" {
			t.Fatal("the crashed transaction's record reached committed readers")
		}
	}
}

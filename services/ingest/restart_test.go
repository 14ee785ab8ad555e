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
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// restartCluster is a one-broker kfake cluster with Parley's topics of
// one partition, an admin client, and a context bounding the test.
func restartCluster(t *testing.T) (*kfake.Cluster, []string, *kgo.Client, context.Context) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	admin, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := topics.Ensure(ctx, kadm.NewClient(admin), topics.Spec{Partitions: 1, ReplicationFactor: 1, MinInsyncReplicas: 1}); err != nil {
		t.Fatal(err)
	}
	return c, brokers, admin, ctx
}

// restartSequencer starts the restarted incarnation ("seq-0", stopped at
// the test's end) and sends it a command; it returns the restart's time.
func restartSequencer(t *testing.T, ctx context.Context, brokers []string, admin *kgo.Client) time.Time {
	t.Helper()
	began := time.Now()
	seq, err := NewSequencer(topics.ClientOpts(brokers), "seq-0", 10, slog.New(slog.DiscardHandler), newDeadLetters(metrics.NewRegistry()), nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- seq.Run(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("sequencer: %v", err)
		}
	})
	b, _ := proto.Marshal(createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"))
	if err := admin.ProduceSync(ctx, &kgo.Record{Topic: topics.Commands, Key: []byte("g"), Value: b}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return began
}

// TestRestartedSequencerAbortsItsCrashedTransaction: a sequencer killed
// inside a transaction leaves it open, and a committed reader of the event
// partition (the restarted sequencer's rebuild among them) cannot pass it
// until it ends. The restarted process has the same transactional id, so
// it must claim it, which aborts the open transaction at once, instead of
// waiting for the transaction to time out. The crashed transaction here
// has a 60 s timeout; the restart must decide a new command well before.
func TestRestartedSequencerAbortsItsCrashedTransaction(t *testing.T) {
	_, brokers, admin, ctx := restartCluster(t)

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

	began := restartSequencer(t, ctx, brokers, admin)
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

// TestRestartedSequencerClaimsBeforeReadingOffsets: a sequencer killed
// after its transaction sent the group's offsets (TxnOffsetCommit) but
// before it ended leaves those offsets pending, and the group answers a
// committed-offsets read with UNSTABLE_OFFSET_COMMIT until the transaction
// ends (KIP-447). A restart that claimed its producer id only at its first
// batch never got a batch: it waited for the transaction's timeout (10 s
// and up to the broker's 10 s abort check: the 13-20 s restarts of issue
// 20). It must claim before it reads its offsets. The crashed transaction
// here has a 60 s timeout.
func TestRestartedSequencerClaimsBeforeReadingOffsets(t *testing.T) {
	c, brokers, admin, ctx := restartCluster(t)

	// The crashed incarnation, by hand: a producer id under the restarted
	// process's transactional id, the group's offsets added to its
	// transaction and sent, and no end.
	txnID := "parley-sequencer-seq-0"
	initReq := kmsg.NewInitProducerIDRequest()
	initReq.TransactionalID = &txnID
	initReq.TransactionTimeoutMillis = 60_000
	initResp, err := initReq.RequestWith(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(initResp.ErrorCode); err != nil {
		t.Fatalf("init producer id: %v", err)
	}
	addReq := kmsg.NewAddOffsetsToTxnRequest()
	addReq.TransactionalID, addReq.ProducerID, addReq.ProducerEpoch, addReq.Group = txnID, initResp.ProducerID, initResp.ProducerEpoch, SequencerGroup
	addResp, err := addReq.RequestWith(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(addResp.ErrorCode); err != nil {
		t.Fatalf("add offsets to transaction: %v", err)
	}
	commitReq := kmsg.NewTxnOffsetCommitRequest()
	commitReq.TransactionalID, commitReq.Group, commitReq.ProducerID, commitReq.ProducerEpoch, commitReq.Generation = txnID, SequencerGroup, initResp.ProducerID, initResp.ProducerEpoch, -1
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic, rt.TopicID = topics.Commands, c.TopicInfo(topics.Commands).TopicID
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = 0, 0
	rt.Partitions = append(rt.Partitions, rp)
	commitReq.Topics = append(commitReq.Topics, rt)
	commitResp, err := commitReq.RequestWith(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range commitResp.Topics {
		for _, p := range tp.Partitions {
			if p.ErrorCode != 0 {
				t.Fatalf("txn offset commit: %v", kerr.ErrorForCode(p.ErrorCode))
			}
		}
	}

	began := restartSequencer(t, ctx, brokers, admin)
	deadline := began.Add(30 * time.Second)
	for len(outcomes(t, brokers, 500*time.Millisecond)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no command decided within 30 s of the restart: the sequencer waited for its crashed transaction's pending offsets")
		}
	}
	t.Logf("first command decided %v after the restart", time.Since(began).Round(time.Millisecond))
}

package integration

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parleychat/parley/pkg/topics"
)

// BenchmarkTransactionRoundTrip is the floor under the sequencer: one
// transaction of one record, committed, and the next begun at once, as the
// sequencer does per batch. The broker accepts the next transaction's first
// produce only after the last one's markers are written, retrying after
// add.partitions.to.txn.retry.backoff.ms (20 ms by default, 1 ms in the
// local stack), so that setting shows here directly.
func BenchmarkTransactionRoundTrip(b *testing.B) {
	s := requireStack(b)
	ctx := context.Background()
	const topic = "parley.bench.txn"
	brokers := strings.Split(s.brokers, ",")
	admin, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	resp, err := kadm.NewClient(admin).CreateTopic(ctx, 1, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		b.Fatalf("create %s: %v", topic, err)
	}
	cl, err := kgo.NewClient(append(topics.ClientOpts(brokers), kgo.TransactionalID("parley-bench-txn"), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	rec := func() *kgo.Record { return &kgo.Record{Value: []byte("x")} }
	for b.Loop() {
		if err := cl.BeginTransaction(); err != nil {
			b.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, rec()).FirstErr(); err != nil {
			b.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			b.Fatal(err)
		}
	}
}

package integration

import (
	"context"
	"testing"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
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
	admin, err := kgo.NewClient(s.kafka()...)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	retention := "3600000" // an hour: every run appends thousands of records
	if err := topics.CreateIfMissing(ctx, kadm.NewClient(admin), topic, 1, 1, map[string]*string{"retention.ms": &retention}); err != nil {
		b.Fatal(err)
	}
	cl, err := kgo.NewClient(append(s.kafka(), kgo.TransactionalID("parley-bench-txn"), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	for b.Loop() {
		if err := cl.BeginTransaction(); err != nil {
			b.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
			b.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			b.Fatal(err)
		}
	}
}

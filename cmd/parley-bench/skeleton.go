package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parleychat/parley/pkg/server/consumer"
)

// The skeleton pipeline's topics: commands in, events out.
const (
	skeletonIn  = "parley.bench.skeleton.in.v1"
	skeletonOut = "parley.bench.skeleton.out.v1"
)

// runSkeleton measures the Kafka path a Parley message takes with no
// Parley logic and no Cassandra: produced (as ingest produces a command),
// relayed by a transactional read-process-write session that polls,
// gathers and commits each batch with its offsets in one transaction (as
// the sequencer does, with the same batch window), and read committed (as
// fan-out reads events).
func runSkeleton(ctx context.Context, conn []kgo.Opt, window time.Duration, rate float64, dur, grace time.Duration, payloadBytes int, progress *progressLine) (baselineResult, error) {
	relay := func(ctx context.Context, ready chan<- error) {
		id := uuid.NewString()
		assigned := make(chan struct{})
		// Reset to the records made since the relay began: the group is
		// new, and nothing older is this run's.
		since := time.Now().Add(-time.Second)
		sess, err := kgo.NewGroupTransactSession(append(slices.Clip(conn),
			kgo.ConsumerGroup("parley-bench-skeleton-"+id),
			kgo.ConsumeTopics(skeletonIn),
			kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(since.UnixMilli())),
			kgo.TransactionalID("parley-bench-skeleton-"+id),
			kgo.TransactionTimeout(10*time.Second),
			kgo.BlockRebalanceOnPoll(),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
				select {
				case <-assigned:
				default:
					close(assigned)
				}
			}),
		)...)
		if err != nil {
			ready <- err
			return
		}
		defer sess.Close()
		loop := consumer.Loop{Name: "skeleton", Source: sess, MaxRecords: 2000, Gather: window, Log: slog.New(slog.DiscardHandler),
			Handle: func(ctx context.Context, fetches kgo.Fetches) (bool, error) {
				if err := sess.Begin(); err != nil {
					return false, err
				}
				out := make([]*kgo.Record, 0, fetches.NumRecords())
				fetches.EachRecord(func(r *kgo.Record) {
					out = append(out, &kgo.Record{Topic: skeletonOut, Partition: r.Partition, Key: r.Key, Value: r.Value})
				})
				end := kgo.TryCommit
				if err := sess.ProduceSync(ctx, out...).FirstErr(); err != nil {
					end = kgo.TryAbort
				}
				if _, err := sess.End(ctx, end); err != nil {
					return false, fmt.Errorf("end transaction: %w", err)
				}
				return true, nil
			},
		}
		done := make(chan error, 1)
		go func() { done <- loop.Run(ctx) }()
		select {
		case <-assigned:
			ready <- nil
		case err := <-done:
			ready <- fmt.Errorf("relay stopped before it was assigned: %v", err)
			return
		case <-time.After(30 * time.Second):
			ready <- fmt.Errorf("relay not assigned its partitions within 30 s")
		}
		<-done
	}
	return runKafkaPath(ctx, conn, kafkaPath{name: "skeleton", in: skeletonIn, out: skeletonOut, relay: relay}, rate, dur, grace, payloadBytes, progress)
}

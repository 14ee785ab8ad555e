package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/parleychat/parley/pkg/topics"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReplayStats say what Replay read.
type ReplayStats struct {
	// Records were handed to the store (events, receipts, blocks, flags).
	Records int
	// Stale are events the seq guard skipped (a zombie sequencer's copies).
	Stale int
	// Rejected are records the consumer sets aside as dead letters; Replay
	// passes them by, as the consumer did when it first read them.
	Rejected int
}

// Replay reads parley.events.v1 from the start of every partition to its
// end at the time of the call and applies it to store exactly as the
// consumer does: each poll sorted and guarded by topics.SortEvents (the
// core of topics.Triage), then stored by storeBatch. It is how a view is
// rebuilt from the log into an empty store, and how the tests check that
// the log alone reproduces every view. It returns when it has applied
// everything up to those ends, or with the error that stopped it.
func Replay(ctx context.Context, brokers []string, store history.Store, log *slog.Logger) (ReplayStats, error) {
	var st ReplayStats
	if log == nil {
		log = slog.Default()
	}
	adminCl, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		return st, fmt.Errorf("replay: kafka client: %w", err)
	}
	ends, err := kadm.NewClient(adminCl).ListEndOffsets(ctx, topics.Events)
	adminCl.Close()
	if err != nil {
		return st, fmt.Errorf("replay: end offsets of %s: %w", topics.Events, err)
	}
	want := map[int32]int64{}
	start := map[int32]kgo.Offset{}
	var endErr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			endErr = errors.Join(endErr, fmt.Errorf("partition %d: %w", o.Partition, o.Err))
			return
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			start[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if endErr != nil {
		return st, fmt.Errorf("replay: end offsets of %s: %w", topics.Events, endErr)
	}
	if len(want) == 0 {
		return st, nil
	}
	cl, err := kgo.NewClient(append(topics.ClientOpts(brokers),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topics.Events: start}))...)
	if err != nil {
		return st, fmt.Errorf("replay: kafka consumer: %w", err)
	}
	defer cl.Close()
	guard := &topics.SeqGuard{}
	for len(want) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("replay: %w", err)
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) { ferr = errors.Join(ferr, fmt.Errorf("partition %d: %w", p, err)) })
		if ferr != nil {
			return st, fmt.Errorf("replay: fetch %s: %w", topics.Events, ferr)
		}
		var recs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			// Only what was on the log when Replay began.
			if end, ok := want[r.Partition]; ok && r.Offset < end {
				recs = append(recs, r)
			}
		})
		for _, r := range recs {
			if r.Offset+1 >= want[r.Partition] {
				delete(want, r.Partition)
			}
		}
		b := topics.SortEvents(recs, guard)
		st.Stale += b.Stale
		st.Rejected += len(b.Rejected)
		for _, r := range b.Rejected {
			log.Warn("replay: passed by a record the consumer sets aside", "partition", r.Record.Partition, "offset", r.Record.Offset, "err", r.Err)
		}
		if !storeBatch(ctx, store, log, b.Records) {
			return st, fmt.Errorf("replay: store %d records: %w", len(b.Records), ctx.Err())
		}
		st.Records += len(b.Records)
	}
	return st, nil
}

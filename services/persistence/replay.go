package persistence

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
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
// settled end at the time of the call (logread.SettledEnds) and applies it to store exactly as the
// consumer does: each poll sorted and guarded by records.SortEvents (the
// core of records.Triage), then stored by storeBatch. It is how a view is
// rebuilt from the log into an empty store, and how the tests check that
// the log alone reproduces every view. It returns when it has applied
// everything up to those ends, or with the error that stopped it. conn
// reaches the cluster (topics.ClientOpts with the connection's security).
func Replay(ctx context.Context, conn []kgo.Opt, store history.Store, log *slog.Logger) (ReplayStats, error) {
	return ReplayFrom(ctx, conn, store, log, nil)
}

// ReplayFrom is Replay from the offsets in from (a partition missing there
// from its start): what a test replays when the log holds more than it
// made, or an operator when a store only lacks the log's later part.
func ReplayFrom(ctx context.Context, conn []kgo.Opt, store history.Store, log *slog.Logger, from map[int32]int64) (ReplayStats, error) {
	var st ReplayStats
	if log == nil {
		log = slog.Default()
	}
	adminCl, err := kgo.NewClient(conn...)
	if err != nil {
		return st, fmt.Errorf("replay: kafka client: %w", err)
	}
	ends, err := logread.SettledEnds(ctx, kadm.NewClient(adminCl), topics.Events)
	adminCl.Close()
	if err != nil {
		return st, fmt.Errorf("replay: %w", err)
	}
	guard := &records.SeqGuard{}
	_, err = logread.ReadRange(ctx, conn, topics.Events, from, ends, func(recs []*kgo.Record) error {
		b := records.SortEvents(recs, guard)
		st.Stale += b.Stale
		st.Rejected += len(b.Rejected)
		for _, r := range b.Rejected {
			log.Warn("replay: passed by a record the consumer sets aside", "partition", r.Record.Partition, "offset", r.Record.Offset, "err", r.Err)
		}
		if !storeBatch(ctx, store, log, b.Records) {
			return fmt.Errorf("replay: store %d records: %w", len(b.Records), ctx.Err())
		}
		st.Records += len(b.Records)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("replay: %w", err)
	}
	return st, nil
}

// Package consumer is the loop every group consumer of Parley's topics
// runs: poll a batch, handle it, commit, and only then let a rebalance in.
//
// The client must be made with kgo.BlockRebalanceOnPoll: a partition then
// never moves to another member while a batch of it is in hand, so what is
// committed is exactly what was handled. A batch is committed only after
// its handler said it is done; a handler that returns early (the process is
// stopping) leaves it uncommitted, and the next owner handles it again.
// Never skipping a record is the handlers' business: they set aside what
// they cannot use (records.Triage) rather than drop it.
package consumer

import (
	"context"
	"log/slog"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Source is what a Loop polls: a group client, or a transactional session
// (which polls and commits through its own client).
type Source interface {
	PollRecords(ctx context.Context, maxPollRecords int) kgo.Fetches
	AllowRebalance()
}

// Loop polls Source until its context ends.
type Loop struct {
	// Name names the consumer in logs.
	Name   string
	Source Source
	// MaxRecords bounds one poll.
	MaxRecords int
	Log        *slog.Logger
	// Handle handles one poll. done false means it stopped before the end
	// (ctx ended): nothing is committed and Run returns. An error stops
	// Run with it.
	Handle func(ctx context.Context, fetches kgo.Fetches) (done bool, err error)
	// Commit commits the offsets of what Handle handled; nil when Handle
	// commits them itself (the sequencer, inside its transaction). A
	// failed commit is logged: the batch is handled again later, which the
	// handlers' idempotence absorbs.
	Commit func(ctx context.Context) error
	// Lag, when set, is told the position of every poll, as the lag of
	// group Name.
	Lag *metrics.Lag
}

// Run polls, handles and commits until ctx ends (it returns nil) or
// Handle fails (it returns that error).
func (l *Loop) Run(ctx context.Context) error {
	for {
		fetches := l.Source.PollRecords(ctx, l.MaxRecords)
		if ctx.Err() != nil {
			l.Source.AllowRebalance()
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			l.Log.Warn("fetch failed", "consumer", l.Name, "topic", t, "partition", p, "err", err)
		})
		l.Lag.Observe(l.Name, fetches)
		done, err := l.Handle(ctx, fetches)
		if done && err == nil && l.Commit != nil {
			if err := l.Commit(ctx); err != nil && ctx.Err() == nil {
				l.Log.Warn("commit failed; the batch will be handled again", "consumer", l.Name, "err", err)
			}
		}
		l.Source.AllowRebalance()
		switch {
		case err != nil && ctx.Err() == nil:
			return err
		case err != nil, !done:
			return nil
		}
	}
}

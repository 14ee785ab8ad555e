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
	"time"

	"github.com/parleychat/parley/pkg/server/health"
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
	// CommitEvery, when positive, commits at most this often instead of
	// after every batch: a commit is a broker request and a log append,
	// which at low rates every single message paid. What is handled but
	// not yet committed is committed when the period is up (also while
	// idle) and when the loop stops; after a crash or a rebalance the
	// next owner handles up to this much again, which the handlers'
	// idempotence and the seq guards absorb.
	CommitEvery time.Duration
	// Lag, when set, is told the position of every poll, as the lag of
	// group Name.
	Lag *metrics.Lag
	// Live, when set, is the liveness watch of this loop: it checks in at
	// every poll, and marks Handle busy so a handler waiting out an
	// outage does not count as stalled. An idle poll then returns every
	// IdlePoll (5 s if 0) to check in.
	Live     *health.Loop
	IdlePoll time.Duration
	// Gather, when positive, keeps polling for up to this long after a
	// poll that brought records (until MaxRecords), so that one Handle
	// pays its fixed costs (a transaction, a commit, a write) for
	// everything that arrived meanwhile instead of for one record at low
	// rates. The price is up to Gather of added latency per batch; a poll
	// that brings nothing within Quiet ends the batch sooner.
	Gather time.Duration
	// Quiet is how long a gathering poll may bring nothing before the
	// batch ends: if zero, a quarter of Gather, at most MaxQuiet.
	Quiet time.Duration
}

// MaxQuiet is the longest a gather waits for more records before it ends
// its batch. It keeps a long Gather from costing a lone record at a low
// rate more than this: the window only fills while records keep coming.
const MaxQuiet = 4 * time.Millisecond

// DefaultCommitEvery is the commit period of persistence and fan-out
// (their CommitEvery flag's default).
const DefaultCommitEvery = time.Second

// DefaultBatchWindow is the sequencer's Gather (ingest's BatchWindow
// default). Measured on the real stack (docs/BENCHMARKS.md): knee 400,
// 400, 275 msg/s without a window and 500, 500, 700 with 8 ms; later,
// knee searches gave 600, 600, 600, 188, 400, 600 msg/s with 8 ms and
// 600, 800, 700, 700 with 16 ms, whose transactions at 400 msg/s hold
// twice the commands (about 7 against 3.6) for 9% less CPU per
// message. 32 ms (with MaxQuiet, so a lone command still waits 4 ms)
// was measured too: at 400-800 msg/s 7-19% less CPU per message, since
// persistence, Cassandra, fan-out and the edges pay per batch as well,
// but knee searches of 600, 500, 375 and 500 msg/s against 700, 600,
// 500 and 600 with 16 ms: the knee is held by the p99, which the longer
// wait raises, not by the CPU.
const DefaultBatchWindow = 16 * time.Millisecond

// CommitPeriod reads a service's CommitEvery setting: the default if
// zero, after every batch (0) if negative.
func CommitPeriod(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultCommitEvery
	case d < 0:
		return 0
	}
	return d
}

// Stall is how long a watched loop may go without checking in before
// liveness fails: many idle polls, so only a wedged loop meets it.
const Stall = time.Minute

// Run polls, handles and commits until ctx ends (it returns nil) or
// Handle fails (it returns that error).
func (l *Loop) Run(ctx context.Context) error {
	defer l.Live.Done()
	// due is when the handled but uncommitted batches must be committed;
	// zero when there are none. Commit commits every offset polled, so it
	// runs only while everything polled is handled: right after a batch,
	// or after a poll that brought nothing.
	var due time.Time
	commit := func(ctx context.Context) {
		due = time.Time{}
		if err := l.Commit(ctx); err != nil && ctx.Err() == nil {
			l.Log.Warn("commit failed; the batch will be handled again", "consumer", l.Name, "err", err)
		}
	}
	// stop commits what was handled when the loop stops, so the next
	// owner does not handle it again; never records polled and unhandled.
	stop := func() {
		if !due.IsZero() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			commit(cctx)
		}
	}
	for {
		l.Live.Beat()
		fetches, idle := l.poll(ctx, due)
		if fetches.NumRecords() == 0 {
			// Nothing new polled, so everything polled is handled: a
			// commit that is due (or the stop's) is safe now.
			switch {
			case due.IsZero():
			case ctx.Err() != nil:
				stop()
			case !time.Now().Before(due):
				commit(ctx)
			}
			if !idle && ctx.Err() == nil {
				l.logErrors(fetches)
			}
			l.Source.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if ctx.Err() != nil {
			// Records polled and not handled: nothing more is committed.
			l.Source.AllowRebalance()
			return nil
		}
		fetches = l.gather(ctx, fetches)
		if ctx.Err() != nil {
			l.Source.AllowRebalance()
			return nil
		}
		l.logErrors(fetches)
		l.Lag.Observe(l.Name, fetches)
		l.Live.Busy(true)
		done, err := l.Handle(ctx, fetches)
		if done && err == nil && l.Commit != nil {
			if due.IsZero() {
				due = time.Now().Add(l.CommitEvery)
			}
			if !time.Now().Before(due) {
				commit(ctx)
			}
		}
		l.Live.Busy(false)
		l.Source.AllowRebalance()
		switch {
		case err != nil && ctx.Err() == nil:
			return err
		case err != nil, !done:
			return nil
		}
	}
}

// gather adds to fetches what further polls bring within Gather of the
// first, up to MaxRecords in all, while records keep coming: a poll that
// brings nothing within Quiet ends the batch, so a lone command at a low
// rate waits that, not the whole window. The
// client keeps a fetch in flight meanwhile, so a poll returns what the
// broker has sent since.
func (l *Loop) gather(ctx context.Context, fetches kgo.Fetches) kgo.Fetches {
	if l.Gather <= 0 {
		return fetches
	}
	n := fetches.NumRecords()
	deadline := time.Now().Add(l.Gather)
	quiet := l.Quiet
	if quiet <= 0 {
		quiet = min(l.Gather/4, MaxQuiet)
	}
	for n < l.MaxRecords {
		wait := min(time.Until(deadline), quiet)
		if wait <= 0 {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		more := l.Source.PollRecords(pctx, l.MaxRecords-n)
		cancel()
		k := more.NumRecords()
		if ctx.Err() != nil || k == 0 {
			break
		}
		fetches = append(fetches, more...)
		n += k
	}
	return fetches
}

func (l *Loop) logErrors(fetches kgo.Fetches) {
	fetches.EachError(func(t string, p int32, err error) {
		l.Log.Warn("fetch failed", "consumer", l.Name, "topic", t, "partition", p, "err", err)
	})
}

// poll polls once, returning by due at the latest when due is set; idle
// when a watched loop's bounded poll found nothing.
func (l *Loop) poll(ctx context.Context, due time.Time) (kgo.Fetches, bool) {
	if l.Live == nil && due.IsZero() {
		return l.Source.PollRecords(ctx, l.MaxRecords), false
	}
	wait := time.Duration(1<<63 - 1)
	if l.Live != nil {
		wait = l.IdlePoll
		if wait <= 0 {
			wait = 5 * time.Second
		}
	}
	if !due.IsZero() {
		wait = min(wait, time.Until(due))
	}
	if wait <= 0 {
		// A commit is due: see whether records are waiting without
		// waiting for them.
		wait = time.Millisecond
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	fetches := l.Source.PollRecords(pctx, l.MaxRecords)
	// A poll cut short by its own bound returns the context's error as a
	// fetch error; it is no error of the log.
	if pctx.Err() != nil && ctx.Err() == nil && fetches.NumRecords() == 0 {
		return nil, l.Live != nil
	}
	return fetches, false
}

package consumer_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestLoopCommitsOnlyWhatWasHandled runs the loop on kfake: a batch
// handled to its end is committed; one whose handler stopped early (the
// process stopping) is not, and Run returns nil; a handler's error ends
// Run with it, uncommitted.
func TestLoopCommitsOnlyWhatWasHandled(t *testing.T) {
	for _, tc := range []struct {
		name      string
		done      bool
		err       error
		committed bool
		wantErr   bool
	}{
		{name: "handled", done: true, committed: true},
		{name: "stopped early", done: false},
		{name: "failed", done: true, err: errors.New("boom"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers, cl := topicstest.Cluster(t, 1)
			topicstest.Produce(t, cl, topics.Events, "k", []byte("a"), []byte("b"), []byte("c"))
			group := newGroup(t, brokers)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			seen := 0
			loop := consumer.Loop{Name: "g", Source: group, MaxRecords: 10, Log: slog.New(slog.DiscardHandler),
				Handle: func(_ context.Context, f kgo.Fetches) (bool, error) {
					seen += f.NumRecords()
					if seen < 3 {
						return true, nil
					}
					return tc.done, tc.err
				},
				Commit: func(ctx context.Context) error {
					err := group.CommitUncommittedOffsets(ctx)
					if seen == 3 {
						cancel() // all handled and committed: stop
					}
					return err
				},
			}
			err := loop.Run(ctx)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Run: %v, want an error %v", err, tc.wantErr)
			}
			if seen != 3 {
				t.Fatalf("handled %d records, want 3", seen)
			}
			if got := topicstest.CommittedToEnd(cl, "g", topics.Events); got != tc.committed {
				t.Fatalf("committed to the end: %v, want %v", got, tc.committed)
			}
		})
	}
}

// blockingSource polls like a client: nothing to fetch, so it waits for
// ctx, unless wedged, when it ignores ctx until released.
type blockingSource struct {
	wedged  bool
	release chan struct{}
}

func (b *blockingSource) PollRecords(ctx context.Context, _ int) kgo.Fetches {
	if b.wedged {
		<-b.release
		return nil
	}
	<-ctx.Done()
	return kgo.NewErrFetch(ctx.Err())
}

func (b *blockingSource) AllowRebalance() {}

// TestWatchedLoopLiveness: an idle loop keeps checking in between polls
// and stays alive well past its stall bound; a loop wedged in a poll that
// never returns fails liveness; a busy handler does not count as stalled.
func TestWatchedLoopLiveness(t *testing.T) {
	const stall = 300 * time.Millisecond
	waitAlive := func(p *health.Probe, want bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); (p.Alive() == nil) != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("alive %v after 10s, want %v: %v", p.Alive() == nil, want, p.Alive())
			}
		}
	}
	t.Run("idle", func(t *testing.T) {
		var p health.Probe
		ctx, cancel := context.WithCancel(t.Context())
		loop := consumer.Loop{Name: "g", Source: &blockingSource{}, Log: slog.New(slog.DiscardHandler), Live: p.Watch("g", stall), IdlePoll: 20 * time.Millisecond,
			Handle: func(context.Context, kgo.Fetches) (bool, error) { t.Error("handled an idle poll"); return true, nil }}
		done := make(chan error, 1)
		go func() { done <- loop.Run(ctx) }()
		for end := time.Now().Add(3 * stall); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if err := p.Alive(); err != nil {
				t.Fatalf("idle loop: %v", err)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wedged", func(t *testing.T) {
		var p health.Probe
		src := &blockingSource{wedged: true, release: make(chan struct{})}
		loop := consumer.Loop{Name: "g", Source: src, Log: slog.New(slog.DiscardHandler), Live: p.Watch("g", stall), IdlePoll: 20 * time.Millisecond,
			Handle: func(context.Context, kgo.Fetches) (bool, error) { return true, nil }}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- loop.Run(ctx) }()
		waitAlive(&p, false)
		cancel()
		close(src.release)
		<-done
		waitAlive(&p, true) // an ended loop is not watched
	})
	t.Run("busy", func(t *testing.T) {
		brokers, cl := topicstest.Cluster(t, 1)
		topicstest.Produce(t, cl, topics.Events, "k", []byte("a"))
		group := newGroup(t, brokers)
		var p health.Probe
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		loop := consumer.Loop{Name: "g", Source: group, Log: slog.New(slog.DiscardHandler), Live: p.Watch("g", stall), MaxRecords: 10,
			Handle: func(context.Context, kgo.Fetches) (bool, error) {
				// A handler waiting out an outage, far past the bound.
				time.Sleep(3 * stall)
				if err := p.Alive(); err != nil {
					t.Errorf("busy handler counted as stalled: %v", err)
				}
				cancel()
				return false, nil
			}}
		if err := loop.Run(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLoopCommitsOnACadence: with CommitEvery, a stream of small batches
// costs a commit per period, not one per batch; what was handled is
// committed once the period is up even if nothing more comes, and when the
// loop stops; a batch polled but not handled when it stops is not.
func TestLoopCommitsOnACadence(t *testing.T) {
	t.Run("period", func(t *testing.T) {
		brokers, cl := topicstest.Cluster(t, 1)
		g := newGroup(t, brokers)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var batches, commits atomic.Int64
		loop := consumer.Loop{Name: "g", Source: g, MaxRecords: 10, Log: slog.New(slog.DiscardHandler), CommitEvery: 400 * time.Millisecond,
			Handle: func(_ context.Context, f kgo.Fetches) (bool, error) { batches.Add(1); return true, nil },
			Commit: func(ctx context.Context) error { commits.Add(1); return g.CommitUncommittedOffsets(ctx) },
		}
		done := make(chan error, 1)
		go func() { done <- loop.Run(ctx) }()
		for i := range 20 {
			topicstest.Produce(t, cl, topics.Events, "k", []byte{byte(i)})
			time.Sleep(20 * time.Millisecond)
		}
		// Nothing more comes: the last batches are committed by the
		// period's end all the same.
		for deadline := time.Now().Add(5 * time.Second); !topicstest.CommittedToEnd(cl, "g", topics.Events); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not committed to the end 5 s after the last record (%d batches, %d commits)", batches.Load(), commits.Load())
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if b, c := batches.Load(), commits.Load(); c > 4 || b <= c {
			t.Fatalf("%d batches cost %d commits; want one commit per 400 ms period, not one per batch", b, c)
		}
	})
	t.Run("stop", func(t *testing.T) {
		brokers, cl := topicstest.Cluster(t, 1)
		topicstest.Produce(t, cl, topics.Events, "k", []byte("a"), []byte("b"))
		g := newGroup(t, brokers)
		ctx, cancel := context.WithCancel(t.Context())
		loop := consumer.Loop{Name: "g", Source: g, MaxRecords: 10, Log: slog.New(slog.DiscardHandler), CommitEvery: time.Hour,
			Handle: func(_ context.Context, f kgo.Fetches) (bool, error) { cancel(); return true, nil },
			Commit: g.CommitUncommittedOffsets,
		}
		if err := loop.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if !topicstest.CommittedToEnd(cl, "g", topics.Events) {
			t.Fatal("handled batch not committed when the loop stopped")
		}
	})
	t.Run("unhandled", func(t *testing.T) {
		brokers, cl := topicstest.Cluster(t, 1)
		topicstest.Produce(t, cl, topics.Events, "k", []byte("a"))
		g := newGroup(t, brokers)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		seen := 0
		loop := consumer.Loop{Name: "g", Source: g, MaxRecords: 10, Log: slog.New(slog.DiscardHandler), CommitEvery: time.Hour,
			Handle: func(_ context.Context, f kgo.Fetches) (bool, error) {
				seen += f.NumRecords()
				if seen == 1 {
					topicstest.Produce(t, cl, topics.Events, "k", []byte("b"))
					return true, nil
				}
				return false, nil // stopping before b is handled
			},
			Commit: g.CommitUncommittedOffsets,
		}
		if err := loop.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if seen != 2 {
			t.Fatalf("handled %d records, want 2", seen)
		}
		if topicstest.CommittedToEnd(cl, "g", topics.Events) {
			t.Fatal("a record polled but not handled was committed")
		}
	})
}

// producingSource is a group client that, after the first poll brings
// records, produces more: records arriving while a batch gathers.
type producingSource struct {
	*kgo.Client
	t       *testing.T
	cl      *kgo.Client
	polled  int
	arrive  [][]byte
	arrived bool
}

func (p *producingSource) PollRecords(ctx context.Context, n int) kgo.Fetches {
	f := p.Client.PollRecords(ctx, n)
	if f.NumRecords() > 0 && !p.arrived {
		p.arrived = true
		topicstest.Produce(p.t, p.cl, topics.Events, "k", p.arrive...)
	}
	return f
}

// TestLoopGathersABatch: with Gather set, records that arrive within the
// window after a poll are handled in the same batch as it, up to
// MaxRecords; without it, each poll is a batch of its own.
func TestLoopGathersABatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gather  time.Duration
		max     int
		batches []int
	}{
		// Without a window the first record is a batch alone. How the
		// three that arrive after it split into polls depends on the
		// producer's requests and the fetch already in flight (a loaded CI
		// machine saw [1 1 2]), so only the first batch is fixed: nil here.
		{name: "no window", gather: 0, max: 10},
		{name: "window", gather: 2 * time.Second, max: 10, batches: []int{4}},
		{name: "window up to MaxRecords", gather: 2 * time.Second, max: 2, batches: []int{2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers, cl := topicstest.Cluster(t, 1)
			topicstest.Produce(t, cl, topics.Events, "k", []byte("a"))
			group := newGroup(t, brokers)
			src := &producingSource{Client: group, t: t, cl: cl, arrive: [][]byte{[]byte("b"), []byte("c"), []byte("d")}}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			var batches []int
			seen := 0
			// A quiet bound far above what a produce takes to arrive.
			loop := consumer.Loop{Name: "g", Source: src, MaxRecords: tc.max, Gather: tc.gather, Quiet: tc.gather / 4, Log: slog.New(slog.DiscardHandler),
				Handle: func(_ context.Context, f kgo.Fetches) (bool, error) {
					batches = append(batches, f.NumRecords())
					seen += f.NumRecords()
					if seen == 4 {
						cancel()
					}
					return true, nil
				},
			}
			if err := loop.Run(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.batches == nil {
				if len(batches) < 2 || batches[0] != 1 {
					t.Fatalf("batches of %v records, want the first record alone", batches)
				}
				return
			}
			if !slices.Equal(batches, tc.batches) {
				t.Fatalf("batches of %v records, want %v", batches, tc.batches)
			}
		})
	}
}

// TestLoopQuietEndsABatch: a long window does not hold a lone record: the
// batch ends once polls bring nothing for MaxQuiet, long before the
// window (or a quarter of it) has passed.
func TestLoopQuietEndsABatch(t *testing.T) {
	brokers, cl := topicstest.Cluster(t, 1)
	topicstest.Produce(t, cl, topics.Events, "k", []byte("a"))
	group := newGroup(t, brokers)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var polled, handled time.Time
	src := &timedSource{Client: group, first: &polled}
	loop := consumer.Loop{Name: "g", Source: src, MaxRecords: 10, Gather: 4 * time.Second, Log: slog.New(slog.DiscardHandler),
		Handle: func(context.Context, kgo.Fetches) (bool, error) {
			handled = time.Now()
			cancel()
			return true, nil
		},
	}
	if err := loop.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// A quarter of the window is 1 s; MaxQuiet is 4 ms.
	if took := handled.Sub(polled); took > 500*time.Millisecond {
		t.Fatalf("a lone record waited %v after its poll, want about %v", took, consumer.MaxQuiet)
	}
}

// timedSource notes when the first poll that brought records returned.
type timedSource struct {
	*kgo.Client
	first *time.Time
}

func (s *timedSource) PollRecords(ctx context.Context, n int) kgo.Fetches {
	f := s.Client.PollRecords(ctx, n)
	if f.NumRecords() > 0 && s.first.IsZero() {
		*s.first = time.Now()
	}
	return f
}

// newGroup is a client of group "g" on topics.Events, as the services make
// theirs for consumer.Loop, reading from the start; closed with t.
func newGroup(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	g, err := kgo.NewClient(append(topics.ClientOpts(brokers), kgo.ConsumerGroup("g"), kgo.ConsumeTopics(topics.Events),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.BlockRebalanceOnPoll(), kgo.DisableAutoCommit())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

package consumer_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/consumer"
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
			group, err := kgo.NewClient(append(topics.ClientOpts(brokers), kgo.ConsumerGroup("g"), kgo.ConsumeTopics(topics.Events),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.BlockRebalanceOnPoll(), kgo.DisableAutoCommit())...)
			if err != nil {
				t.Fatal(err)
			}
			defer group.Close()
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
			err = loop.Run(ctx)
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

package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/logread"
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
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// TestSequencerSurvivesBrokerCrash kills the embedded broker (its data
// folder copied, as a kill leaves it) while the sequencer is inside a
// batch's transaction, at each point where that transaction can stand,
// then restarts broker and sequencer on the copy the way `parley run`
// does. Whatever the crash point, committed readers must end with every
// command decided exactly once at contiguous seqs, every outcome a reader
// could have seen before the crash must name the seq the command finally
// has, and a retry must be answered as a duplicate of that seq.
//
// The points: records written and no marker (the broker counts the
// transaction as aborted); a torn commit, the marker written on one of the
// two topics only (kfake writes a transaction's markers one partition at
// a time); every marker written but the command offsets not committed.
func TestSequencerSurvivesBrokerCrash(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committed []string
	}{
		{"open transaction", nil},
		{"torn commit, outcomes marked", []string{topics.Outcomes}},
		{"torn commit, events marked", []string{topics.Events}},
		{"marked, offsets not committed", []string{topics.Events, topics.Outcomes}},
	} {
		t.Run(tc.name, func(t *testing.T) { crashInsideTransaction(t, tc.committed) })
	}
}

func crashInsideTransaction(t *testing.T, committed []string) {
	dir, image := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	startKafka := func(dir string) (*kfake.Cluster, *kgo.Client) {
		t.Helper()
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir), kfake.SyncWrites())
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(topics.ClientOpts(c.ListenAddrs())...)
		if err != nil {
			t.Fatal(err)
		}
		return c, cl
	}
	runSequencer := func(brokers []string) (*Sequencer, func()) {
		t.Helper()
		s, err := NewSequencer(topics.ClientOpts(brokers), "seq-0", 10, log, newDeadLetters(metrics.NewRegistry()), nil)
		if err != nil {
			t.Fatal(err)
		}
		sctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(sctx) }()
		return s, func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("sequencer: %v", err)
			}
		}
	}
	send := func(cl *kgo.Client, cmds ...*logv1.Command) {
		t.Helper()
		var recs []*kgo.Record
		for _, cmd := range cmds {
			b, _ := proto.Marshal(cmd)
			recs = append(recs, &kgo.Record{Topic: topics.Commands, Key: []byte(cmd.GetConversationId()), Value: b})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	c, cl := startKafka(dir)
	if err := topics.Ensure(ctx, kadm.NewClient(cl), topics.Spec{Partitions: 1, ReplicationFactor: 1, MinInsyncReplicas: 1}); err != nil {
		t.Fatal(err)
	}
	seq, stop := runSequencer(c.ListenAddrs())
	var batches atomic.Int32
	crashed := make(chan struct{})
	seq.beforeEnd = func() {
		if batches.Add(1) != 2 {
			return
		}
		defer close(crashed)
		// The sequencer's producer, as the coordinator knows it.
		live, err := kadm.NewClient(cl).DescribeProducers(ctx, kadm.TopicsSet{topics.Events: {0: {}}})
		if err != nil {
			t.Error(err)
			return
		}
		var id int64 = -1
		var epoch int16
		live.EachProducer(func(p kadm.DescribedProducer) { id, epoch = p.ProducerID, p.ProducerEpoch })
		if id < 0 {
			t.Error("no transaction open on the events partition")
			return
		}
		for _, topic := range committed {
			if err := commitMarker(ctx, cl, topic, id, epoch); err != nil {
				t.Error(err)
				return
			}
		}
		if err := os.CopyFS(image, os.DirFS(dir)); err != nil {
			t.Error(err)
		}
	}
	send(cl, createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"), postCmd("g", "alice", "m1", "one"))
	topicstest.WaitFor(t, "the first batch committed", func() bool { return len(outcomes(t, c.ListenAddrs(), time.Second)) == 2 })
	send(cl, postCmd("g", "alice", "m2", "two"), postCmd("g", "alice", "m3", "three"), postCmd("g", "alice", "m4", "four"))
	select {
	case <-crashed:
	case <-ctx.Done():
		t.Fatal("the second batch never reached its commit")
	}
	stop()
	cl.Close()
	c.Close()
	if t.Failed() {
		return
	}

	// The restart, as `parley run` does it: seal what the crash left
	// open, then start the services.
	c, cl = startKafka(image)
	defer c.Close()
	defer cl.Close()
	brokers := c.ListenAddrs()
	if err := logread.SealCrashedTransactions(ctx, topics.ClientOpts(brokers), topics.Events, topics.Outcomes, topics.DeadLetter); err != nil {
		t.Fatal(err)
	}
	// What a waiting Submit could have answered before the crash.
	seen := outcomes(t, brokers, time.Second)
	_, stop = runSequencer(brokers)
	defer stop()
	send(cl, postCmd("g", "alice", "m5", "five"))
	topicstest.WaitFor(t, "every command decided", func() bool { return len(outcomes(t, brokers, time.Second)) == 6 })
	// A retry of each message after the restart.
	send(cl, postCmd("g", "alice", "m1", "one"), postCmd("g", "alice", "m3", "three"), postCmd("g", "alice", "m5", "five"))

	texts := map[string]string{"c1": "", "m1": "one", "m2": "two", "m3": "three", "m4": "four", "m5": "five"}
	bySeq := map[uint64]string{}
	seqOf := map[string]uint64{}
	for _, r := range topicstest.Read(t, brokers, topics.Events, len(texts)) {
		rec := &logv1.EventRecord{}
		if err := proto.Unmarshal(r.Value, rec); err != nil {
			t.Fatal(err)
		}
		ev := rec.GetEvent()
		if prev, dup := bySeq[ev.GetSeq()]; dup {
			t.Errorf("seq %d twice: %s and %s", ev.GetSeq(), prev, ev.GetClientMsgId())
		}
		if _, dup := seqOf[ev.GetClientMsgId()]; dup {
			t.Errorf("%s decided twice", ev.GetClientMsgId())
		}
		bySeq[ev.GetSeq()], seqOf[ev.GetClientMsgId()] = ev.GetClientMsgId(), ev.GetSeq()
		if want, ok := texts[ev.GetClientMsgId()]; !ok || ev.GetMessagePosted().GetText() != want {
			t.Errorf("event %s at seq %d says %q", ev.GetClientMsgId(), ev.GetSeq(), ev.GetMessagePosted().GetText())
		}
	}
	for s := uint64(1); s <= uint64(len(texts)); s++ {
		if _, ok := bySeq[s]; !ok {
			t.Errorf("committed events lack seq %d (have %v)", s, bySeq)
		}
	}
	for id, o := range seen {
		if o.GetSeq() != seqOf[id] {
			t.Errorf("before the crash %s was answered seq %d; it ended at seq %d", id, o.GetSeq(), seqOf[id])
		}
	}
	topicstest.WaitFor(t, "the retries answered", func() bool {
		all := outcomesAll(t, brokers, time.Second)
		return len(all) >= 6+3
	})
	for _, o := range outcomesAll(t, brokers, time.Second) {
		if o.GetSeq() != seqOf[o.GetClientMsgId()] || o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			t.Errorf("outcome %s: seq %d error %v, want seq %d", o.GetClientMsgId(), o.GetSeq(), o.GetErrorCode(), seqOf[o.GetClientMsgId()])
		}
	}
}

// outcomes reads the committed outcomes for up to wait and returns the
// first of each client message id.
func outcomes(t *testing.T, brokers []string, wait time.Duration) map[string]*logv1.Outcome {
	t.Helper()
	first := map[string]*logv1.Outcome{}
	for _, o := range outcomesAll(t, brokers, wait) {
		if _, ok := first[o.GetClientMsgId()]; !ok {
			first[o.GetClientMsgId()] = o
		}
	}
	return first
}

// outcomesAll reads every committed outcome there is within wait.
func outcomesAll(t *testing.T, brokers []string, wait time.Duration) []*logv1.Outcome {
	t.Helper()
	cl, err := kgo.NewClient(append(topics.ClientOpts(brokers),
		kgo.ConsumeTopics(topics.Outcomes), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	var out []*logv1.Outcome
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			o := &logv1.Outcome{}
			if proto.Unmarshal(r.Value, o) == nil {
				out = append(out, o)
			}
		})
	}
	return out
}

// commitMarker writes the commit marker of producer id's transaction on
// partition 0 of topic, as a coordinator does one partition at a time.
func commitMarker(ctx context.Context, cl *kgo.Client, topic string, id int64, epoch int16) error {
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed = id, epoch, true
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = topic, []int32{0}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("commit marker on %s: %w", topic, err)
	}
	for _, rm := range resp.Markers {
		for _, rt := range rm.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return fmt.Errorf("commit marker on %s: %w", topic, err)
				}
			}
		}
	}
	return nil
}

package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// readAtLeast reads n records of topic, failing the test without them.
func readAtLeast(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	out := topicstest.Read(t, brokers, topic, n)
	if len(out) < n {
		t.Fatalf("%s holds %d records, want %d", topic, len(out), n)
	}
	return out
}

// TestSequencerSetsAsideBadCommands: a command record that does not decode,
// or lacks its conversation, goes to the dead-letter topic (counted), the
// Submit waiting for the latter gets an error outcome at once, and the
// commands around them are sequenced as usual.
func TestSequencerSetsAsideBadCommands(t *testing.T) {
	brokers, cl := topicstest.Cluster(t, 1)
	deadLetters := newDeadLetters(metrics.NewRegistry())
	seq, err := NewSequencer(topics.ClientOpts(brokers), "", 10, slog.New(slog.DiscardHandler), deadLetters, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- seq.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	value := func(cmd *logv1.Command) []byte {
		b, _ := proto.Marshal(cmd)
		return b
	}
	create := createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob")
	noConv := postCmd("", "alice", "m0", "lost")
	noConv.CommandId = "cmd-noconv"
	post := postCmd("g", "alice", "m1", "hi")
	var recs []*kgo.Record
	for _, v := range [][]byte{value(create), {0xff, 0xff, 0xff}, value(noConv), value(post)} {
		recs = append(recs, &kgo.Record{Topic: topics.Commands, Key: []byte("g"), Value: v})
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	dead := readAtLeast(t, brokers, topics.DeadLetter, 2)
	for i, want := range []string{records.ReasonUndecodable, records.ReasonInvalid} {
		var consumer, reason string
		for _, h := range dead[i].Headers {
			switch h.Key {
			case records.HeaderConsumer:
				consumer = string(h.Value)
			case records.HeaderReason:
				reason = string(h.Value)
			}
		}
		if consumer != SequencerGroup || reason != want || string(dead[i].Value) != string(recs[i+1].Value) {
			t.Fatalf("dead letter %d: consumer %q reason %q, want %s %s and the record unchanged", i, consumer, reason, SequencerGroup, want)
		}
	}
	outcomes := map[string]*logv1.Outcome{}
	for _, r := range readAtLeast(t, brokers, topics.Outcomes, 3) {
		o := &logv1.Outcome{}
		if err := proto.Unmarshal(r.Value, o); err != nil {
			t.Fatal(err)
		}
		outcomes[o.GetCommandId()] = o
	}
	if o := outcomes["cmd-noconv"]; o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("outcome of the command without conversation: %v", o)
	}
	if o := outcomes["cmd-m1"]; o.GetSeq() != 2 || o.GetErrorCode() != 0 {
		t.Fatalf("the post after the bad records: %v, want seq 2", o)
	}
	for reason, want := range map[string]float64{records.ReasonUndecodable: 1, records.ReasonInvalid: 1} {
		if got := testutil.ToFloat64(deadLetters.WithLabelValues(reason)); got != want {
			t.Fatalf("dead letters %s = %v, want %v", reason, got, want)
		}
	}
}

// TestZombieSequencerIsFenced: sequencer A decides a post and produces its
// event, then stalls before committing; B joins, A is expelled once the
// rebalance times out, and B decides the same command. A's late commit
// must fail and its event must never be read: committed readers see every
// seq once, while the raw log shows that A's copy was written (so without
// transactions a reader would have seen two events at seq 2).
//
// In the second case A stays stalled until the broker aborted its
// transaction on timeout and B has committed the post: A's late commit then
// fails outright (its producer epoch is fenced), and A must carry on with a
// new Kafka session rather than exit.
func TestZombieSequencerIsFenced(t *testing.T) {
	t.Run("released while B waits", func(t *testing.T) { zombieSequencer(t, false) })
	t.Run("released after its transaction timed out", func(t *testing.T) { zombieSequencer(t, true) })
}

func zombieSequencer(t *testing.T, pastTimeout bool) {
	brokers, cl := topicstest.Cluster(t, 1)
	fast := []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.RebalanceTimeout(2 * time.Second), kgo.HeartbeatInterval(200 * time.Millisecond)}
	if pastTimeout {
		fast = append(fast, kgo.TransactionTimeout(1500*time.Millisecond))
	}
	// Every command is Submitted in A's process: A answers those it
	// commits itself, B writes outcome records for those it decides.
	var answersMu sync.Mutex
	answers := map[string][]*logv1.Outcome{}
	answered := func(name string) []*logv1.Outcome {
		answersMu.Lock()
		defer answersMu.Unlock()
		return slices.Clone(answers[name])
	}
	start := func(name string) *Sequencer {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		s, err := NewSequencer(topics.ClientOpts(brokers), "", 10, log.With("seq", name), newDeadLetters(metrics.NewRegistry()), nil, fast...)
		if err != nil {
			t.Fatal(err)
		}
		s.self = "proc-" + name
		s.answer = func(outs []*logv1.Outcome) {
			answersMu.Lock()
			defer answersMu.Unlock()
			for _, o := range outs {
				answers[name] = append(answers[name], proto.CloneOf(o))
			}
		}
		return s
	}
	a := start("a")
	stalled, release := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	a.beforeEnd = func() {
		if armed.CompareAndSwap(true, false) {
			close(stalled)
			<-release
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	run := func(s *Sequencer) {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- s.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	run(a)

	send := func(cmd *logv1.Command) {
		cmd.ReplyTo = "proc-a"
		b, _ := proto.Marshal(cmd)
		topicstest.Produce(t, cl, topics.Commands, cmd.GetConversationId(), b)
	}
	send(createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"))
	topicstest.WaitFor(t, "A answering the create itself", func() bool { return len(answered("a")) == 1 })

	armed.Store(true)
	send(postCmd("g", "alice", "m1", "hi"))
	select {
	case <-stalled:
	case <-time.After(15 * time.Second):
		t.Fatal("sequencer A never reached the end of the post's transaction")
	}
	b := start("b")
	run(b)
	// A is expelled when the rebalance it blocks times out; B then owns
	// the partition and waits for A's open transaction to end.
	adm := kadm.NewClient(cl)
	topicstest.WaitFor(t, "A expelled and B the only member", func() bool {
		groups, err := adm.DescribeGroups(context.Background(), SequencerGroup)
		if err != nil {
			return false
		}
		g := groups[SequencerGroup]
		bID, _ := b.sess.Client().GroupMetadata()
		return g.State == "Stable" && len(g.Members) == 1 && g.Members[0].MemberID == bID
	})
	if pastTimeout {
		// B decides the post once the broker aborted A's transaction.
		readAtLeast(t, brokers, topics.Events, 2)
	}
	close(release)
	send(postCmd("g", "alice", "m2", "again"))

	// Committed readers: create, m1 and m2, each seq once and in order.
	var seqs []uint64
	var texts []string
	for _, r := range readAtLeast(t, brokers, topics.Events, 3) {
		rec := &logv1.EventRecord{}
		if err := proto.Unmarshal(r.Value, rec); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, rec.GetEvent().GetSeq())
		texts = append(texts, rec.GetEvent().GetMessagePosted().GetText())
	}
	time.Sleep(500 * time.Millisecond) // anything more would show up now
	all := readAtLeast(t, brokers, topics.Events, 3)
	if len(all) != 3 || !slices.Equal(seqs, []uint64{1, 2, 3}) || texts[1] != "hi" || texts[2] != "again" {
		t.Fatalf("committed events: %d records, seqs %v texts %q; want 3, seqs [1 2 3]", len(all), seqs, texts)
	}
	// The raw log holds A's copy of seq 2 too, aborted. (Under load it
	// may hold more aborted attempts: a produce that fails aborts its
	// batch, which is then decided again.)
	raw, err := kgo.NewClient(append(topics.ClientOpts(brokers), kgo.ConsumeTopics(topics.Events),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadUncommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var rawSeqs []uint64
	twos := 0
	rctx, rcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer rcancel()
	for twos < 2 && rctx.Err() == nil {
		raw.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
			rec := &logv1.EventRecord{}
			if proto.Unmarshal(r.Value, rec) == nil {
				rawSeqs = append(rawSeqs, rec.GetEvent().GetSeq())
				if rec.GetEvent().GetSeq() == 2 {
					twos++
				}
			}
		})
	}
	if twos < 2 {
		t.Fatalf("raw log seqs %v: the zombie's copy of seq 2 should be there, aborted", rawSeqs)
	}
	select {
	case err := <-errs:
		t.Fatalf("a sequencer stopped: %v", err)
	default:
	}

	// Every command answered once, at the seq the committed log gives it:
	// by A from a transaction of its own that committed, or by B with an
	// outcome record for A's process. A answered the create; the post its
	// failed transaction held it answers only if, in the new session it
	// starts after that failure, it owns the partition again and commits
	// the post itself (the log check above shows each seq committed once).
	// B answers nothing itself: those Submits wait in A's process.
	if got := answered("b"); len(got) != 0 {
		t.Fatalf("B answered %v itself; those Submits wait in A's process", got)
	}
	byA := answered("a")
	var replies []string
	for _, o := range byA {
		replies = append(replies, fmt.Sprintf("%s@%d", o.GetCommandId(), o.GetSeq()))
	}
	if len(byA) < 3 {
		for _, r := range readAtLeast(t, brokers, topics.Outcomes, 3-len(byA)) {
			o := &logv1.Outcome{}
			if err := proto.Unmarshal(r.Value, o); err != nil {
				t.Fatal(err)
			}
			replies = append(replies, fmt.Sprintf("%s@%d", o.GetCommandId(), o.GetSeq()))
		}
	}
	slices.Sort(replies)
	if !slices.Equal(replies, []string{"cmd-c1@1", "cmd-m1@2", "cmd-m2@3"}) || len(byA) == 0 || byA[0].GetCommandId() != "cmd-c1" {
		t.Fatalf("answers (A's, then outcome records) %v, A's %d; want the create by A and each post once at its committed seq", replies, len(byA))
	}
}

package ingest

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/kafkaconf"
	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// realKafka reaches the local stack's Kafka (make up; stack.sh env), or
// skips, except where integration tests are required (make test), where
// its absence fails.
func realKafka(t *testing.T) []kgo.Opt {
	t.Helper()
	brokers := os.Getenv("PARLEY_KAFKA_BROKERS")
	if brokers == "" {
		msg := "PARLEY_KAFKA_BROKERS is not set: run `make up` and `eval $(bash deployments/local/stack.sh env)`"
		if os.Getenv("PARLEY_INTEGRATION") == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return topics.ClientOpts(strings.Split(brokers, ","), kafkaconf.MustEnv()...)
}

// hangingTopic reaches the real Kafka (realKafka) with a context bounding
// the test and an admin client, and makes a topic of n partitions for the
// test alone, deleted after it.
func hangingTopic(t *testing.T, prefix string, n int32) (context.Context, []kgo.Opt, *kadm.Client, string) {
	t.Helper()
	conn := realKafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	topic := prefix + uuid.NewString()[:8]
	if _, err := adm.CreateTopic(ctx, n, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopic(context.Background(), topic) })
	return ctx, conn, adm, topic
}

// stableOffsets is each partition's last stable offset: where a
// transaction still open holds every committed reader.
func stableOffsets(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	lso.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// committedCounts is how many records a committed reader reads from each
// of partitions.
func committedCounts(t *testing.T, ctx context.Context, conn []kgo.Opt, adm *kadm.Client, topic string, partitions ...int32) map[int32]int {
	t.Helper()
	ends, err := logread.SettledEnds(ctx, adm, topic, partitions...)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int32]int{}
	if _, err := logread.ReadToEnd(ctx, conn, topic, ends, func(recs []*kgo.Record) error {
		for _, r := range recs {
			got[r.Partition]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestHangingWatchFinishesItsOwnTransactions runs the watch against real
// Kafka. A hanging transaction cannot be made on demand (it takes the
// broker's marker skip during a restart, which TestSequencerAcrossKafkaRestarts
// meets now and then), so the test makes the closest thing: transactions
// left open on their partitions, which ends says ended, as they would be
// after the coordinator skipped their markers. The watch must finish each
// the way ends says; one whose End failed, and one ends does not know, it
// must leave to their coordinator, which here still holds them. A marker
// the coordinator writes later, for a transaction no longer open on the
// partition, must change nothing.
func TestHangingWatchFinishesItsOwnTransactions(t *testing.T) {
	ctx, conn, adm, topic := hangingTopic(t, "parley-test-hanging-", 4)

	// One open transaction per partition, each with one record.
	type txn struct {
		cl *kgo.Client
		pe producerEpoch
		at int64 // its record's offset
	}
	open := func(p int32) txn {
		t.Helper()
		tcl, err := kgo.NewClient(append(conn, kgo.TransactionalID(sequencerTxnPrefix+topic+"-"+string(rune('a'+p))),
			kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tcl.Close)
		if err := tcl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		r, err := tcl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte{byte(p)}}).First()
		if err != nil {
			t.Fatal(err)
		}
		return txn{tcl, producerEpoch{r.ProducerID, r.ProducerEpoch}, r.Offset}
	}
	commit, abort, failed, unknown := open(0), open(1), open(2), open(3)

	ends := newEndings()
	now := time.Now()
	ends.add(commit.pe, endCommit, now)
	ends.add(abort.pe, endAbort, now)
	ends.add(failed.pe, endUnknown, now)
	w := newHangingWatch(adm, conn, ends, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	w.topics, w.every, w.goneAfter = []string{topic}, 300*time.Millisecond, 300*time.Millisecond

	// The first scan sees them open; one is finished only once seen open
	// for w.every after its End.
	if n, err := w.scan(ctx); err != nil || n != 0 {
		t.Fatalf("first scan: finished %d, err %v; want none yet", n, err)
	}
	time.Sleep(w.every)
	if n, err := w.scan(ctx); err != nil || n != 2 {
		t.Fatalf("second scan: finished %d, err %v; want 2", n, err)
	}
	time.Sleep(w.every)
	if n, err := w.scan(ctx); err != nil || n != 0 {
		t.Fatalf("third scan: finished %d, err %v; want none (the coordinator holds the rest)", n, err)
	}

	lso := stableOffsets(t, ctx, adm, topic)
	for p, x := range map[int32]txn{0: commit, 1: abort} {
		if lso[p] <= x.at {
			t.Errorf("partition %d: last stable offset %d, still held by the transaction at %d", p, lso[p], x.at)
		}
	}
	for p, x := range map[int32]txn{2: failed, 3: unknown} {
		if lso[p] != x.at {
			t.Errorf("partition %d: last stable offset %d; the transaction at %d, which its coordinator holds, must be left alone", p, lso[p], x.at)
		}
	}
	want := map[int32]int{0: 1}
	if got := committedCounts(t, ctx, conn, adm, topic, 0, 1); !equalCounts(got, want) {
		t.Fatalf("committed records by partition: %v, want %v", got, want)
	}

	// The coordinator ends them all now, writing its markers after the
	// watch's on partitions 0 and 1 (an abort here, for both).
	for _, x := range []txn{commit, abort, failed, unknown} {
		if err := x.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Fatal(err)
		}
	}
	if got := committedCounts(t, ctx, conn, adm, topic, 0, 1); !equalCounts(got, want) {
		t.Fatalf("after the coordinator's own markers, committed records by partition: %v, want %v", got, want)
	}
}

func equalCounts(a, b map[int32]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestEndingsKeepsTheLast: endings holds the last endingsKept transactions,
// and a producer session of transaction version 1 (one epoch for all its
// transactions) whose ends differ is unknown, never one of the two.
func TestEndingsKeepsTheLast(t *testing.T) {
	e := newEndings()
	now := time.Now()
	for i := range endingsKept + 10 {
		e.add(producerEpoch{int64(i), 0}, endCommit, now)
	}
	for i := range 10 {
		if _, ok := e.get(producerEpoch{int64(i), 0}); ok {
			t.Fatalf("transaction %d is still kept after %d later ones", i, endingsKept)
		}
	}
	if x, ok := e.get(producerEpoch{endingsKept + 9, 0}); !ok || x.how != endCommit {
		t.Fatalf("the last transaction: %+v, %v", x, ok)
	}
	if len(e.m) != endingsKept {
		t.Fatalf("keeps %d, want %d", len(e.m), endingsKept)
	}

	session := producerEpoch{-7, 3}
	e.add(session, endCommit, now)
	e.add(session, endCommit, now.Add(time.Second))
	if x, _ := e.get(session); x.how != endCommit || !x.at.Equal(now.Add(time.Second)) {
		t.Fatalf("two commits: %+v", x)
	}
	e.add(session, endAbort, now.Add(2*time.Second))
	e.add(session, endCommit, now.Add(3*time.Second))
	if x, _ := e.get(session); x.how != endUnknown {
		t.Fatalf("a session that committed and aborted: %v, want unknown", x.how)
	}
}

// TestHangingWatchFinishesOtherSequencersTransactions: transactions open
// on their partitions that the coordinator no longer holds, of sequencers
// this process knows nothing of, are finished as the coordinator decided:
// from its state when that is their own end, else from the marker it
// wrote on another partition, else (no marker anywhere: all of the
// transaction hangs) committed. One the coordinator still holds open is
// left to it, and one of a producer that is not a sequencer is reported.
//
// Made on the real broker the way hanging transactions were made before
// Kafka 3.6 (KAFKA-14402): with its partition verification off, a
// transactional producer's records reach a partition it never added to
// its transaction, so the coordinator never marks them.
func TestHangingWatchFinishesOtherSequencersTransactions(t *testing.T) {
	ctx, conn, adm, topic := hangingTopic(t, "parley-test-gone-", 7)
	run := strings.TrimPrefix(topic, "parley-test-gone-")
	verification := "transaction.partition.verification.enable"
	off := "false"
	if _, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: verification, Value: &off}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = adm.AlterBrokerConfigs(context.Background(), []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: verification}})
	})
	rawCl, err := kgo.NewClient(append(conn, kgo.MaxVersions(kversion.V3_3_0()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer rawCl.Close()
	producer := func(txnID string) (*kgo.Client, producerEpoch) {
		t.Helper()
		tcl, err := kgo.NewClient(append(conn, kgo.TransactionalID(txnID), kgo.TransactionTimeout(time.Minute),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tcl.Close)
		id, epoch, err := tcl.ProducerID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tcl, producerEpoch{id, epoch}
	}
	// hang leaves a record of txnID's transaction open on partition p.
	hang := func(txnID string, p int32) (*kgo.Client, producerEpoch) {
		t.Helper()
		tcl, pe := producer(txnID)
		rawTxnRecord(t, ctx, rawCl, txnID, topic, p, pe)
		return tcl, pe
	}
	// Then ends the same transaction on partition other, through its
	// coordinator, which marks other only.
	endOn := func(tcl *kgo.Client, other int32, how kgo.TransactionEndTry) {
		t.Helper()
		if err := tcl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := tcl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: other, Value: []byte("ended")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tcl.EndTransaction(ctx, how); err != nil {
			t.Fatal(err)
		}
	}
	id := func(s string) string { return sequencerTxnPrefix + "test-" + run + "-" + s }

	// Partition 0: no marker anywhere, its id moved on (Empty): committed.
	hang(id("a"), 0)
	// Partition 1: aborted on partition 4, its id moved on since (a new
	// session): the marker on 4 decides.
	b, _ := hang(id("b"), 1)
	endOn(b, 4, kgo.TryAbort)
	producer(id("b"))
	// Partition 5: committed on partition 6, its id's state that commit.
	c, _ := hang(id("c"), 5)
	endOn(c, 6, kgo.TryCommit)
	// Partition 2: a sequencer's transaction its coordinator holds open.
	ongoing, _ := producer(id("d"))
	if err := ongoing.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := ongoing.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 2, Value: []byte("ongoing")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Partition 3: not a sequencer's.
	_, foreign := hang("parley-test-"+run+"-e", 3)

	w := newHangingWatch(adm, conn, newEndings(), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	w.topics, w.every, w.goneAfter = []string{topic}, 300*time.Millisecond, 300*time.Millisecond
	finished := 0
	for range 3 {
		n, err := w.scan(ctx)
		if err != nil {
			t.Fatal(err)
		}
		finished += n
		time.Sleep(w.every)
	}
	if finished != 3 {
		t.Errorf("finished %d partitions, want 3", finished)
	}

	lso := stableOffsets(t, ctx, adm, topic)
	for p, held := range map[int32]bool{0: false, 1: false, 5: false, 2: true, 3: true} {
		if (lso[p] == 0) != held {
			t.Errorf("partition %d: last stable offset %d; held by its open transaction: %v, want %v", p, lso[p], lso[p] == 0, held)
		}
	}
	want := map[int32]int{0: 1, 5: 1, 6: 1}
	if got := committedCounts(t, ctx, conn, adm, topic, 0, 1, 4, 5, 6); !equalCounts(got, want) {
		t.Fatalf("committed records by partition: %v, want %v", got, want)
	}
	if err := ongoing.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	// The foreign one: the watch must not, so the test does (abort).
	if _, err := adm.WriteTxnMarkers(ctx, kadm.TxnMarkers{ProducerID: foreign.id, ProducerEpoch: foreign.epoch, Topics: kadm.TopicsSet{topic: {3: {}}}}); err != nil {
		t.Fatal(err)
	}
}

// rawTxnRecord writes one record as producer pe's transaction to
// topic/partition with a bare Produce request: no AddPartitionsToTxn, so
// the coordinator knows nothing of it (the broker's verification must be
// off to take it). cl must speak Kafka 3.3's Produce at most (version 9):
// later ones name topics by id, and let produce itself add the partition.
func rawTxnRecord(t *testing.T, ctx context.Context, cl *kgo.Client, txnID, topic string, partition int32, pe producerEpoch) {
	t.Helper()
	rec := kmsg.Record{Value: []byte("hanging")}
	b := rec.AppendTo(nil)
	rec.Length = int32(len(b) - 1) // less the one byte of the zero length
	recBytes := rec.AppendTo(nil)
	now := time.Now().UnixMilli()
	batch := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, Attributes: 0x10, // transactional
		FirstTimestamp: now, MaxTimestamp: now, ProducerID: pe.id, ProducerEpoch: pe.epoch, NumRecords: 1, Records: recBytes}
	raw := batch.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))

	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis, req.TransactionID = -1, 10000, &txnID
	txnTopic := kmsg.NewProduceRequestTopic()
	txnTopic.Topic = topic
	p := kmsg.NewProduceRequestTopicPartition()
	p.Partition, p.Records = partition, raw
	txnTopic.Partitions = append(txnTopic.Partitions, p)
	req.Topics = append(req.Topics, txnTopic)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("raw transactional produce: answered %+v", resp)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode); err != nil {
		t.Fatalf("raw transactional produce to %s/%d: %v", topic, partition, err)
	}
}

// TestCoordinatorOutcome: what a transactional id's state at the
// coordinator says of its transaction of epoch 7 (producer id 1).
func TestCoordinatorOutcome(t *testing.T) {
	for _, c := range []struct {
		state               string
		id                  int64
		epoch               int16
		commit, known, hold bool
	}{
		{"CompleteCommit", 1, 8, true, true, false},    // its own commit (version 2 bumps the epoch at the end)
		{"CompleteAbort", 1, 8, false, true, false},    // its own abort
		{"CompleteCommit", 1, 12, false, false, false}, // a later transaction's
		{"CompleteAbort", 1, 12, false, false, false},
		{"Empty", 1, 9, false, false, false}, // a new session since
		{"Dead", 1, 9, false, false, false},
		{"Ongoing", 1, 7, false, false, true}, // the coordinator still holds it
		{"PrepareCommit", 1, 8, false, false, true},
		{"PrepareAbort", 1, 8, false, false, true},
		{"PrepareEpochFence", 1, 8, false, false, true},
		{"Ongoing", 1, 8, false, false, false},        // the next transaction is going on
		{"CompleteCommit", 2, 8, false, false, false}, // the id has another producer id since
	} {
		commit, known, hold := coordinatorOutcome(kadm.DescribedTransaction{State: c.state, ProducerID: c.id, ProducerEpoch: c.epoch}, producerEpoch{1, 7})
		if known != c.known || hold != c.hold || (known && commit != c.commit) {
			t.Errorf("%s of %d at epoch %d: commit %v, known %v, holds %v; want %v, %v, %v", c.state, c.id, c.epoch, commit, known, hold, c.commit, c.known, c.hold)
		}
	}
	if _, _, hold := coordinatorOutcome(kadm.DescribedTransaction{State: "Ongoing", ProducerID: 1, ProducerEpoch: 32767}, producerEpoch{1, 32767}); !hold {
		t.Error("the last epoch, ongoing: not held")
	}
}

// TestSettleWritesSkippedMarkers: a committed transaction still open on a
// partition (its markers skipped) holds back a batch that writes to that
// partition, not one that writes elsewhere, until its markers are there,
// and the sequencer writes them itself after settleWait. Made as TestHangingWatchFinishesItsOwnTransactions makes
// its transactions.
func TestSettleWritesSkippedMarkers(t *testing.T) {
	ctx, conn, adm, topic := hangingTopic(t, "parley-test-settle-", 2)
	tcl, err := kgo.NewClient(append(conn, kgo.TransactionalID(sequencerTxnPrefix+topic),
		kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer tcl.Close()
	if err := tcl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	r, err := tcl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 1, Value: []byte("acknowledged")}).First()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSequencer(conn, "", 10, slog.New(slog.NewTextHandler(os.Stderr, nil)), newDeadLetters(metrics.NewRegistry()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.sess.Close()
	unsettled := func() []*settling {
		return []*settling{{txn: producerEpoch{r.ProducerID, r.ProducerEpoch}, parts: kadm.TopicsSet{topic: {1: {}}}, at: time.Now()}}
	}
	// A batch that writes elsewhere does not wait.
	s.unsettled = unsettled()
	if err := s.settle(ctx, []*kgo.Record{{Topic: topic, Partition: 0}}); err != nil || len(s.unsettled[0].parts) != 1 {
		t.Fatalf("a batch for partition 0: %v, %v", err, s.unsettled[0].parts)
	}
	start := time.Now()
	if err := s.settle(ctx, []*kgo.Record{{Topic: topic, Partition: 1}}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < settleWait {
		t.Errorf("settled in %s, before the coordinator's markers were given %s", took, settleWait)
	}
	if len(s.unsettled[0].parts) != 0 {
		t.Error("still unsettled")
	}
	if got, want := committedCounts(t, ctx, conn, adm, topic, 1), map[int32]int{1: 1}; !equalCounts(got, want) {
		t.Fatalf("committed records by partition: %v, want %v", got, want)
	}
	// A settled transaction costs one look.
	s.unsettled = unsettled()
	start = time.Now()
	if err := s.settle(ctx, []*kgo.Record{{Topic: topic, Partition: 1}}); err != nil || len(s.unsettled[0].parts) != 0 {
		t.Fatalf("settled again: %v, %v", err, s.unsettled[0].parts)
	}
	if took := time.Since(start); took >= settleWait {
		t.Errorf("a settled transaction took %s to check", took)
	}
	_ = tcl.EndTransaction(ctx, kgo.TryAbort)
}

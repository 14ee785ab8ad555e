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

// TestHangingWatchFinishesItsOwnTransactions runs the watch against real
// Kafka. A hanging transaction cannot be made on demand (it takes the
// broker's marker skip during a restart, which TestSequencerAcrossKafkaRestarts
// meets now and then), so the test makes the closest thing: transactions
// left open on their partitions, which ends says ended, as the coordinator
// would have it after skipping their markers. The watch must finish each
// the way ends says (commit, abort, and commit for an End that failed),
// leave another producer's open transaction alone, and its markers must
// hold when the coordinator later ends the same transactions itself.
func TestHangingWatchFinishesItsOwnTransactions(t *testing.T) {
	conn := realKafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := "parley-test-hanging-" + uuid.NewString()[:8]
	if _, err := adm.CreateTopic(ctx, 4, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopic(context.Background(), topic) })

	// One open transaction per partition, each with one record.
	type txn struct {
		cl *kgo.Client
		pe producerEpoch
		at int64 // its record's offset
	}
	open := func(p int32) txn {
		t.Helper()
		tcl, err := kgo.NewClient(append(conn, kgo.TransactionalID(topic+"-"+string(rune('a'+p))),
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
		id, epoch, err := tcl.ProducerID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return txn{tcl, producerEpoch{id, epoch}, r.Offset}
	}
	commit, abort, failed, foreign := open(0), open(1), open(2), open(3)

	ends := newEndings()
	now := time.Now()
	ends.add(commit.pe, endCommit, now)
	ends.add(abort.pe, endAbort, now)
	ends.add(failed.pe, endUnknown, now)
	w := newHangingWatch(adm, ends, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	w.topics, w.every = []string{topic}, 500*time.Millisecond

	// The first scan sees them open; one is finished only once seen open
	// for w.every after its End.
	if n, err := w.scan(ctx); err != nil || n != 0 {
		t.Fatalf("first scan: finished %d, err %v; want none yet", n, err)
	}
	time.Sleep(w.every)
	if n, err := w.scan(ctx); err != nil || n != 3 {
		t.Fatalf("second scan: finished %d, err %v; want 3", n, err)
	}

	stable := func() map[int32]int64 {
		t.Helper()
		lso, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		out := map[int32]int64{}
		lso.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
		return out
	}
	lso := stable()
	for p, x := range map[int32]txn{0: commit, 1: abort, 2: failed} {
		if lso[p] <= x.at {
			t.Errorf("partition %d: last stable offset %d, still held by the transaction at %d", p, lso[p], x.at)
		}
	}
	if lso[3] != foreign.at {
		t.Errorf("partition 3: last stable offset %d; another producer's open transaction at %d must be left alone", lso[3], foreign.at)
	}

	// What a committed reader sees of partitions 0-2.
	visible := func() map[int32]int {
		t.Helper()
		ends, err := logread.SettledEnds(ctx, adm, topic, 0, 1, 2)
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
	want := map[int32]int{0: 1, 2: 1}
	if got := visible(); !equalCounts(got, want) {
		t.Fatalf("committed records by partition: %v, want %v", got, want)
	}

	// The coordinator still holds the transactions open; ending them now
	// (as it would have) writes its markers after the watch's: they must
	// change nothing.
	for _, x := range []txn{commit, abort, failed, foreign} {
		if err := x.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Fatal(err)
		}
	}
	if got := visible(); !equalCounts(got, want) {
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

// TestHangingWatchFinishesAGoneSequencersTransactions: transactions open on
// their partitions that the coordinator no longer holds, of sequencers that
// are gone (no running process remembers how they ended), are finished as
// the coordinator's state says: committed when it moved past them (see
// goneOutcome), aborted when its last end was their abort. One the
// coordinator still holds open is left to it, and so is one of a producer
// that is not a sequencer.
//
// Made on the real broker the way hanging transactions were made before
// Kafka 3.6 (KAFKA-14402): with its partition verification off, a
// transactional producer's records reach a partition it never added to
// its transaction, so the coordinator never marks them.
func TestHangingWatchFinishesAGoneSequencersTransactions(t *testing.T) {
	conn := realKafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	run := uuid.NewString()[:8]
	topic := "parley-test-gone-" + run
	if _, err := adm.CreateTopic(ctx, 5, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopic(context.Background(), topic) })
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
	// Partition 0: a gone sequencer's, its coordinator moved on (Empty).
	movedID := sequencerTxnPrefix + "test-" + run + "-a"
	_, moved := producer(movedID)
	rawTxnRecord(t, ctx, rawCl, movedID, topic, 0, moved)
	// Partition 1: a gone sequencer's, whose coordinator's last end aborted it.
	abortedID := sequencerTxnPrefix + "test-" + run + "-b"
	abortCl, aborted := producer(abortedID)
	rawTxnRecord(t, ctx, rawCl, abortedID, topic, 1, aborted)
	if err := abortCl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := abortCl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 4, Value: []byte("aborted")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := abortCl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	// Partition 2: a sequencer's transaction its coordinator holds open.
	ongoingCl, _ := producer(sequencerTxnPrefix + "test-" + run + "-c")
	if err := ongoingCl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := ongoingCl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 2, Value: []byte("ongoing")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Partition 3: not a sequencer's.
	foreignID := "parley-test-" + run + "-d"
	_, foreign := producer(foreignID)
	rawTxnRecord(t, ctx, rawCl, foreignID, topic, 3, foreign)

	w := newHangingWatch(adm, newEndings(), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	w.topics, w.every, w.goneAfter = []string{topic}, 300*time.Millisecond, 600*time.Millisecond
	for range 3 {
		if _, err := w.scan(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(w.every)
	}
	n, err := w.scan(ctx)
	if err != nil || n != 0 {
		t.Fatalf("a scan after the finishing one finished %d more, err %v", n, err)
	}

	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p, held := range map[int32]bool{0: false, 1: false, 2: true, 3: true} {
		o, _ := lso.Lookup(topic, p)
		if (o.Offset == 0) != held {
			t.Errorf("partition %d: last stable offset %d; held by its open transaction: %v, want %v", p, o.Offset, o.Offset == 0, held)
		}
	}
	ends, err := logread.SettledEnds(ctx, adm, topic, 0, 1)
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
	if want := map[int32]int{0: 1}; !equalCounts(got, want) {
		t.Fatalf("committed records by partition: %v, want %v (the moved-on one committed, the aborted one not)", got, want)
	}
	if err := ongoingCl.EndTransaction(ctx, kgo.TryAbort); err != nil {
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

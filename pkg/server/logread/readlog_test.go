package logread_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReadRangeSortsTransactionsOut: plain records, a committed and an
// aborted transaction come back as a committed reader sees them, and a
// transaction left without its marker by a crash (kfake restarted on its
// data directory) neither shows nor makes the read wait for ever.
func TestReadRangeSortsTransactionsOut(t *testing.T) {
	dir := t.TempDir()
	start := func() (*kfake.Cluster, []string) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir), kfake.SyncWrites())
		if err != nil {
			t.Fatal(err)
		}
		return c, c.ListenAddrs()
	}
	c, brokers := start()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	plain, err := kgo.NewClient(append(topics.ClientOpts(brokers), kgo.DefaultProduceTopic("t"))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kadm.NewClient(plain).CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	produce := func(cl *kgo.Client, v string) {
		t.Helper()
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	txnal := func(id string) *kgo.Client {
		// A short timeout, so the restarted broker ends the crashed
		// transaction soon.
		cl, err := kgo.NewClient(append(topics.ClientOpts(brokers), kgo.DefaultProduceTopic("t"), kgo.TransactionalID(id),
			kgo.TransactionTimeout(2*time.Second))...)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	tx := txnal("a")
	produce(plain, "p1")
	for _, step := range []struct {
		vals   []string
		commit kgo.TransactionEndTry
	}{{[]string{"c1", "c2"}, kgo.TryCommit}, {[]string{"x1"}, kgo.TryAbort}, {[]string{"c3"}, kgo.TryCommit}} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range step.vals {
			produce(tx, v)
		}
		if err := tx.EndTransaction(ctx, step.commit); err != nil {
			t.Fatal(err)
		}
	}
	produce(plain, "p2")
	// A transaction the crash leaves open, then the broker goes down.
	crashed := txnal("b")
	if err := crashed.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(crashed, "lost")
	tx.Close()
	plain.Close()
	crashed.Close()
	c.Close()

	c, brokers = start()
	defer c.Close()
	// The restarted producer takes its transactional id back, which fences
	// and ends what its predecessor left open (the way a restarted
	// sequencer does).
	again := txnal("b")
	defer again.Close()
	if err := again.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(again, "after")
	if err := again.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	adm, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ends, err := logread.SettledEnds(ctx, kadm.NewClient(adm), "t")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	last, err := logread.ReadToEnd(ctx, topics.ClientOpts(brokers), "t", ends, func(recs []*kgo.Record) error {
		for _, r := range recs {
			got = append(got, string(r.Value))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read: %v (so far %v)", err, got)
	}
	if want := []string{"p1", "c1", "c2", "c3", "p2", "after"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if last[0] < 0 || last[0] >= ends[0] {
		t.Fatalf("last record at %d, end %d", last[0], ends[0])
	}
}

// TestCrashedTransactionStaysAborted: a transaction open when the broker
// dies (kfake killed, not closed: its data folder copied while the
// transaction is open) is aborted for good. After the restart its producer
// commits a new transaction on the same partition; the log read to its end
// and a committed consumer reading from the start must both show the new
// transaction and not the crashed one. Before the crash recovery sealed
// such a transaction with an abort marker, the read released the crashed
// records at the new commit (the sequencer counted a command as decided
// that no reader ever saw) and a committed consumer that fetched both
// transactions at once dropped the committed one.
func TestCrashedTransactionStaysAborted(t *testing.T) {
	dir, image := t.TempDir(), t.TempDir()
	start := func(dir string) (*kfake.Cluster, []string) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir), kfake.SyncWrites())
		if err != nil {
			t.Fatal(err)
		}
		return c, c.ListenAddrs()
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	produce := func(cl *kgo.Client, v string) {
		t.Helper()
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	client := func(brokers []string, opts ...kgo.Opt) *kgo.Client {
		t.Helper()
		cl, err := kgo.NewClient(append(append(topics.ClientOpts(brokers), kgo.DefaultProduceTopic("t")), opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	transact := func(cl *kgo.Client, v string, end kgo.TransactionEndTry) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produce(cl, v)
		if end == kgo.TryCommit || end == kgo.TryAbort {
			if err := cl.EndTransaction(ctx, end); err != nil {
				t.Fatal(err)
			}
		}
	}

	c, brokers := start(dir)
	plain := client(brokers)
	if _, err := kadm.NewClient(plain).CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	produce(plain, "p1")
	seq := client(brokers, kgo.TransactionalID("seq"))
	transact(seq, "c1", kgo.TryCommit)
	transact(seq, "x1", kgo.TryAbort)
	if err := seq.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(seq, "crashed")
	// The crash: what is on disk now is what a restart finds.
	if err := os.CopyFS(image, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	seq.Close()
	plain.Close()
	c.Close()

	c, brokers = start(image)
	defer c.Close()
	if err := logread.SealCrashedTransactions(ctx, topics.ClientOpts(brokers), "t"); err != nil {
		t.Fatal(err)
	}
	seq = client(brokers, kgo.TransactionalID("seq"))
	defer seq.Close()
	transact(seq, "after", kgo.TryCommit)

	want := []string{"p1", "c1", "after"}
	adm := client(brokers)
	defer adm.Close()
	ends, err := logread.SettledEnds(ctx, kadm.NewClient(adm), "t")
	if err != nil {
		t.Fatal(err)
	}
	var read []string
	if _, err := logread.ReadToEnd(ctx, topics.ClientOpts(brokers), "t", ends, func(recs []*kgo.Record) error {
		for _, r := range recs {
			read = append(read, string(r.Value))
		}
		return nil
	}); err != nil {
		t.Fatalf("read: %v (so far %v)", err, read)
	}
	if !slices.Equal(read, want) {
		t.Errorf("read to the end: %v, want %v", read, want)
	}
	// A committed consumer from the start gets every record in one fetch.
	var consumed []string
	for _, r := range topicstest.Read(t, brokers, "t", len(want)) {
		consumed = append(consumed, string(r.Value))
	}
	if !slices.Equal(consumed, want) {
		t.Errorf("committed consumer: %v, want %v", consumed, want)
	}
}

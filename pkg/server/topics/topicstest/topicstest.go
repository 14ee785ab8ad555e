// Package topicstest runs Parley's topics on franz-go's in-process kfake
// cluster for the tests of the services that consume them, and reads
// them back.
package topicstest

import (
	"context"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cluster starts a one-broker kfake cluster holding Parley's topics with
// the given partition count, closed with the test, and returns its
// addresses and a client of it.
func Cluster(t testing.TB, partitions int32) (brokers []string, cl *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers = c.ListenAddrs()
	if cl, err = kgo.NewClient(topics.ClientOpts(brokers)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := topics.Ensure(context.Background(), kadm.NewClient(cl), topics.Spec{Partitions: partitions, ReplicationFactor: 1, MinInsyncReplicas: 1}); err != nil {
		t.Fatal(err)
	}
	return brokers, cl
}

// Produce appends values to topic under one key, so they share a
// partition, and returns the records with their offsets.
func Produce(t testing.TB, cl *kgo.Client, topic, key string, values ...[]byte) []*kgo.Record {
	t.Helper()
	var recs []*kgo.Record
	for _, v := range values {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: v})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// Read reads topic from its start until it has n records or 15 s passed,
// and returns what it read.
func Read(t testing.TB, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(topics.ClientOpts(brokers),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// CommittedToEnd reports whether group has committed every partition of
// topic up to its end.
func CommittedToEnd(cl *kgo.Client, group, topic string) bool {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		return false
	}
	committed, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		return false
	}
	all := true
	ends.Each(func(o kadm.ListedOffset) {
		if c, ok := committed.Lookup(o.Topic, o.Partition); o.Offset > 0 && (!ok || c.At != o.Offset) {
			all = false
		}
	})
	return all
}

// WaitFor polls ok until it holds, failing the test after 15 s.
func WaitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// WaitCommittedPast waits, for at most timeout, until group has committed
// past every record of topic from the offsets in from (nil: the start) to
// the topic's end as it is now. The log ends with transaction markers,
// which consumers never commit past, so the goal is the last record, not
// the end. conn reaches the cluster (topics.ClientOpts).
func WaitCommittedPast(t testing.TB, conn []kgo.Opt, group, topic string, from map[int32]int64, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := logread.SettledEnds(ctx, adm, topic)
	if err != nil {
		t.Fatal(err)
	}
	last, err := logread.ReadRange(ctx, conn, topic, from, ends, func([]*kgo.Record) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		committed, err := adm.FetchOffsets(ctx, group)
		behind := 0
		for p, off := range last {
			if c, ok := committed.Lookup(topic, p); off >= 0 && (!ok || c.At <= off) {
				behind++
			}
		}
		if err == nil && behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not commit past the last record of %s in %v: %d partitions behind (%v)", group, topic, timeout, behind, err)
		}
	}
}

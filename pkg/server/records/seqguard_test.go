package records

import (
	"sync"
	"testing"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestSeqGuardFirstCopyWins(t *testing.T) {
	var g SeqGuard
	p0 := &kgo.Record{Topic: topics.Events, Partition: 0}
	p1 := &kgo.Record{Topic: topics.Events, Partition: 1}
	steps := []struct {
		r     *kgo.Record
		conv  string
		seq   uint64
		fresh bool
	}{
		{p0, "a", 1, true},
		{p0, "a", 2, true},
		{p0, "a", 2, false}, // a zombie's copy
		{p0, "a", 1, false},
		{p0, "b", 1, true}, // conversations are independent
		{p0, "a", 4, true}, // a gap is not the guard's business
		{p0, "a", 3, false},
		{p1, "a", 1, true}, // nor are partitions (a conversation lives in one)
	}
	for i, s := range steps {
		if got := g.Fresh(s.r, ev(s.conv, s.seq)); got != s.fresh {
			t.Fatalf("step %d: %s/%d in partition %d: fresh = %v, want %v", i, s.conv, s.seq, s.r.Partition, got, s.fresh)
		}
	}
	// A revoked partition is forgotten: its next owner may have read on,
	// and when it comes back the committed offset may be behind.
	g.Forget(map[string][]int32{topics.Events: {0}})
	if !g.Fresh(p0, ev("a", 2)) {
		t.Fatal("after Forget, a seq below the old last must be fresh again")
	}
	if g.Fresh(p1, ev("a", 1)) {
		t.Fatal("Forget of partition 0 forgot partition 1 too")
	}
}

func TestSeqGuardForgetsOnAnotherGoroutine(t *testing.T) {
	var g SeqGuard
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 1000 {
			g.Forget(map[string][]int32{topics.Events: {0, 1}})
		}
	}()
	for i := range uint64(1000) {
		g.Fresh(&kgo.Record{Topic: topics.Events, Partition: int32(i % 2)}, ev("a", i+1))
	}
	wg.Wait()
}

package ingest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// TestDecideHeads: a head probe answers a member with the conversation's
// last seq, and a non-member or a missing conversation with 0; it logs
// nothing.
func TestDecideHeads(t *testing.T) {
	group := chatv1.ConversationKind_CONVERSATION_KIND_GROUP
	convs := map[string]*conversation{}
	now := time.Now()
	for _, cmd := range []*logv1.Command{
		createCmd("g", "alice", "c1", group, "alice", "bob"),
		postCmd("g", "bob", "m1", "hi"),
		createCmd("h", "carol", "c2", group, "carol"),
	} {
		if _, out := decide(convs, cmd, 100, now); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			t.Fatalf("%v: %v", cmd, out)
		}
	}
	probe := &logv1.Command{CommandId: "p", ConversationId: "g", UserId: "alice", Body: &logv1.Command_HeadProbe{HeadProbe: &logv1.HeadProbe{Asks: []*logv1.HeadAsk{
		{ConversationId: "g", UserId: "alice"}, {ConversationId: "h", UserId: "alice"}, {ConversationId: "h", UserId: "carol"},
		{ConversationId: "nowhere", UserId: "alice"}, {ConversationId: "g", UserId: "bob"},
	}}}}
	rec, out := decide(convs, probe, 100, now)
	if rec != nil {
		t.Fatalf("a head probe logged %v", rec)
	}
	if want := []uint64{2, 0, 1, 0, 2}; !slices.Equal(out.GetHeads(), want) {
		t.Fatalf("heads %v, want %v", out.GetHeads(), want)
	}
}

// TestHeadBatcherGathers: concurrent asks share probes, each answered
// with its own heads in order, and an ask that comes while its partition's
// probe is in flight waits for the next probe, never the one already sent
// (which could not cover what was sequenced before the ask).
func TestHeadBatcherGathers(t *testing.T) {
	var mu sync.Mutex
	var probes [][]string
	release := make(chan struct{})
	first := true
	probe := func(_ context.Context, asks []*logv1.HeadAsk) ([]uint64, error) {
		mu.Lock()
		var ids []string
		for _, a := range asks {
			ids = append(ids, a.GetConversationId())
		}
		probes = append(probes, ids)
		block := first
		first = false
		mu.Unlock()
		if block {
			<-release
		}
		heads := make([]uint64, len(asks))
		for i, a := range asks {
			fmt.Sscanf(a.GetConversationId(), "c%d", &heads[i])
		}
		return heads, nil
	}
	// Two partitions: even and odd conversation numbers.
	partition := func(conv string) int32 {
		var n int32
		fmt.Sscanf(conv, "c%d", &n)
		return n % 2
	}
	b := newHeadBatcher(partition, probe, 5*time.Second)
	ask := func(ids ...int) ([]uint64, error) {
		var asks []*logv1.HeadAsk
		for _, id := range ids {
			asks = append(asks, &logv1.HeadAsk{ConversationId: fmt.Sprintf("c%d", id), UserId: "u"})
		}
		return b.heads(t.Context(), asks)
	}
	// The first probe (partition 0, c2) is held in flight.
	firstDone := make(chan []uint64, 1)
	go func() { h, _ := ask(2); firstDone <- h }()
	for {
		mu.Lock()
		n := len(probes)
		mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// Meanwhile 20 callers ask about both partitions.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			ids := []int{10 + 2*i, 11 + 2*i, 4}
			h, err := ask(ids...)
			switch {
			case err != nil:
				errs <- err
			case !slices.Equal(h, []uint64{uint64(ids[0]), uint64(ids[1]), 4}):
				errs <- fmt.Errorf("asked %v, got %v", ids, h)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if h := <-firstDone; !slices.Equal(h, []uint64{2}) {
		t.Errorf("first ask got %v", h)
	}
	mu.Lock()
	defer mu.Unlock()
	// The held probe carried c2 alone: nothing asked later joined it.
	if !slices.Equal(probes[0], []string{"c2"}) {
		t.Errorf("the probe in flight was %v, want [c2] alone", probes[0])
	}
	// Every even ask came while c2's probe was held: all 40 of them went
	// in the one probe after it. The odd partition's probes never waited,
	// so its asks went in as many probes as they arrived in bursts; every
	// ask was in exactly one probe.
	evenProbes, total := 0, 0
	for _, p := range probes {
		total += len(p)
		if slices.Contains(p, "c4") {
			evenProbes++
			if len(p) != 40 {
				t.Errorf("the even partition's second probe held %d asks, want 40", len(p))
			}
		}
	}
	if evenProbes != 1 || total != 61 {
		t.Errorf("%d probes held c4 (want 1), %d asks in all (want 61): %v", evenProbes, total, probes)
	}
}

// TestCommandPartitioner: the batcher's idea of a conversation's partition
// is where the ingest producer puts its commands.
func TestCommandPartitioner(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const parts = 8
	if err := topics.Ensure(ctx, kadm.NewClient(cl), topics.Spec{Partitions: parts, ReplicationFactor: 1, MinInsyncReplicas: 1}); err != nil {
		t.Fatal(err)
	}
	partitionOf := commandPartitioner(parts)
	for i := range 200 {
		key := fmt.Sprintf("0199a3c2-7a1e-7b51-9c1e-%012d", i)
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topics.Commands, Key: []byte(key)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range topicstest.Read(t, brokers, topics.Commands, 200) {
		if got := partitionOf(string(r.Key)); got != r.Partition {
			t.Fatalf("key %s: batcher says partition %d, the producer put it in %d", r.Key, got, r.Partition)
		}
	}
}

package records

import (
	"context"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// SeqGuard remembers, per partition this process consumes, the last seq
// it handled of each conversation. The sequencer is deterministic, so a
// sequencer expelled from its group but still running (a zombie) produces
// copies of events its successor produces too: same conversation and seq,
// another event id and time. Skipping every event at or below the last
// seq seen lets the first copy read win, in history and on devices alike.
//
// The memory is per process and per partition: after a restart, or once a
// partition was revoked or lost, every event is new again. That is right
// for consumers that apply idempotently, and forgetting is required
// because the next owner of the partition may have read further.
//
// The zero value is ready; install Opts on the consumer's client.
type SeqGuard struct {
	// mu: the group callbacks run on the client's goroutine, not the
	// poll loop's (BlockRebalanceOnPoll only orders them between polls).
	mu   sync.Mutex
	last map[partitionKey]map[string]uint64
}

type partitionKey struct {
	topic     string
	partition int32
}

// Fresh reports whether ev, read from r, is past the last seq handled of
// its conversation in r's partition, and if it is, records it as handled.
func (g *SeqGuard) Fresh(r *kgo.Record, ev *chatv1.Event) bool {
	fresh, _ := g.Admit(r, ev)
	return fresh
}

// Admit is Fresh, and also reports the first seq ev skips (0 if none):
// when the guard knew the conversation and ev is beyond the next seq, the
// events between are not on the log.
func (g *SeqGuard) Admit(r *kgo.Record, ev *chatv1.Event) (fresh bool, missing uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := partitionKey{r.Topic, r.Partition}
	convs := g.last[k]
	if convs == nil {
		if g.last == nil {
			g.last = map[partitionKey]map[string]uint64{}
		}
		convs = map[string]uint64{}
		g.last[k] = convs
	}
	last, ok := convs[ev.GetConversationId()]
	if ok && ev.GetSeq() <= last {
		return false, 0
	}
	convs[ev.GetConversationId()] = ev.GetSeq()
	if ok && ev.GetSeq() > last+1 {
		return true, last + 1
	}
	return true, 0
}

// Forget drops what is known of the partitions, topic to partitions.
func (g *SeqGuard) Forget(partitions map[string][]int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for t, ps := range partitions {
		for _, p := range ps {
			delete(g.last, partitionKey{t, p})
		}
	}
}

// Opts make the client forget partitions as they are revoked or lost;
// also are told the same partitions (a client has one callback of each
// kind, so whatever else must forget them goes through here).
func (g *SeqGuard) Opts(also ...func(map[string][]int32)) []kgo.Opt {
	forget := func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
		g.Forget(ps)
		for _, f := range also {
			f(ps)
		}
	}
	return []kgo.Opt{kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget)}
}

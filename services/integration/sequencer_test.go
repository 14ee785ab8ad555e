package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// accepted records what the senders were told, per conversation.
type ledger struct {
	mu   sync.Mutex
	byID map[string]map[string]sentMsg // conversation -> client id -> answer
}

type sentMsg struct {
	seq  uint64
	text string
}

func newLedger(convs []string) *ledger {
	l := &ledger{byID: map[string]map[string]sentMsg{}}
	for _, c := range convs {
		l.byID[c] = map[string]sentMsg{}
	}
	return l
}

func (l *ledger) record(conv, id string, seq uint64, text string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, ok := l.byID[conv][id]; ok && prev.seq != seq {
		return fmt.Errorf("client id %s answered seq %d, then %d", id, prev.seq, seq)
	}
	l.byID[conv][id] = sentMsg{seq, text}
	return nil
}

// verifyHistory pages every conversation's history and checks it holds seq
// 1..last, with each accepted message exactly once at the seq it was
// accepted with. Conversations start with one creation event.
func (l *ledger) verifyHistory(t *testing.T, ctx context.Context, reader *sdk.Client) {
	t.Helper()
	for conv, want := range l.byID {
		last := uint64(len(want) + 1)
		var events []*chatv1.Event
		var err error
		deadline := time.Now().Add(90 * time.Second)
		for {
			events, err = readAll(ctx, reader, conv)
			if err != nil && ctx.Err() == nil {
				t.Logf("conversation %s: history: %v", conv, err)
			}
			if uint64(len(events)) >= last || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if uint64(len(events)) != last {
			t.Fatalf("conversation %s: history holds %d events, want %d (last error: %v)", conv, len(events), last, err)
		}
		seen := map[string]bool{}
		for i, ev := range events {
			if ev.GetSeq() != uint64(i+1) {
				t.Fatalf("conversation %s: position %d holds seq %d", conv, i, ev.GetSeq())
			}
			if i == 0 {
				continue
			}
			id := ev.GetClientMsgId()
			a, ok := want[id]
			if !ok || seen[id] {
				t.Fatalf("conversation %s seq %d: client id %q unexpected or repeated", conv, ev.GetSeq(), id)
			}
			seen[id] = true
			if a.seq != ev.GetSeq() || a.text != ev.GetMessagePosted().GetText() {
				t.Fatalf("conversation %s: %s accepted as seq %d %q, stored as seq %d %q", conv, id, a.seq, a.text, ev.GetSeq(), ev.GetMessagePosted().GetText())
			}
		}
	}
}

// readAll pages a conversation forward from the start.
func readAll(ctx context.Context, c *sdk.Client, conv string) ([]*chatv1.Event, error) {
	var events []*chatv1.Event
	after := uint64(0)
	for {
		p, err := c.History(ctx, &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(after), Limit: 200})
		if err != nil {
			return nil, err
		}
		events = append(events, p.GetEvents()...)
		if n := len(p.GetEvents()); n > 0 {
			after = p.GetEvents()[n-1].GetSeq()
		}
		if !p.GetHasMore() {
			return events, nil
		}
	}
}

// expectLive reads n events from a live device and checks that each
// conversation's arrive contiguous and in order.
func expectLive(t *testing.T, r *sdk.Client, n int, timeout time.Duration) map[string]uint64 {
	t.Helper()
	last := map[string]uint64{}
	got := 0
	deadline := time.After(timeout)
	for got < n {
		select {
		case ev, ok := <-r.Events():
			if !ok {
				t.Fatalf("%s: connection closed: %v", r.DeviceID, r.Err())
			}
			if ev.GetSeq() != last[ev.GetConversationId()]+1 {
				t.Fatalf("%s: conversation %s seq %d after %d", r.DeviceID, ev.GetConversationId(), ev.GetSeq(), last[ev.GetConversationId()])
			}
			last[ev.GetConversationId()] = ev.GetSeq()
			got++
		case <-deadline:
			t.Fatalf("%s: %d of %d live events", r.DeviceID, got, n)
		}
	}
	return last
}

// TestKillSequencerMidStream kills the ingest process (Submit and the
// sequencer) with SIGKILL while 5,000 messages flow into 50 conversations,
// restarts it, and checks: no gap, no duplicate, no reordering, every
// retried message answered with its original seq.
func TestKillSequencerMidStream(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const convs, senders, perSender = 50, 10, 500
	creator := c.dial(0, "alice", "alice-creator")
	// The reader reads its events only after the load and the resends.
	reader := c.dialBuffered(1, "bob", "bob-reader", 2*(senders*perSender+convs))
	ids := createGroups(t, ctx, creator, convs, "g", "bob")
	l := newLedger(ids)
	c.sendKilling(t, ctx, l, ids, killLoad{senders: senders, perSender: perSender, stride: 7, proc: "ingest", killAt: 300, down: time.Second})

	// A resend of every 10th message after the restart, by its sender from
	// another device on the other edge, still gets its original seq and
	// creates nothing. (Client message ids are scoped to their sender.)
	resenders := map[string]*sdk.Client{
		"alice": discardEvents(c.dial(1, "alice", "alice-resender")),
		"bob":   discardEvents(c.dial(0, "bob", "bob-resender")),
	}
	resent := 0
	for conv, byID := range l.byID {
		n := 0
		for id, m := range byID {
			if n++; n%10 != 0 {
				continue
			}
			acc, err := sendRetrying(ctx, resenders[strings.SplitN(id, "-", 2)[0]], conv, id, m.text)
			if err != nil || !acc.GetDuplicate() || acc.GetSeq() != m.seq {
				t.Fatalf("resend of %s: %v %v, want duplicate of seq %d", id, acc, err, m.seq)
			}
			resent++
		}
	}
	if resent < senders*perSender/20 {
		t.Fatalf("only %d messages resent", resent)
	}
	t.Logf("%d resends after the restart answered with their original seq", resent)
	// Live first: the reader's SDK stops reading answers while its pushed
	// events wait unread.
	expectLive(t, reader, senders*perSender+convs, 90*time.Second)
	l.verifyHistory(t, ctx, reader)
}

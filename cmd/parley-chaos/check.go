package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// historyFinding is what one conversation's history shows against the
// ledger.
type historyFinding struct {
	// lost: acknowledged messages not in history at their acknowledged
	// seq.
	lost []*message
	// duplicates, unknown, mismatched, holes: evidence, one line each.
	duplicates, unknown, mismatched, holes []string
}

// checkHistory holds a conversation's history (every event, from seq 1)
// to the ledger: seqs contiguous from 1, the creation first, every other
// event a message someone sent, each once, with its text, and every
// acknowledged message at the seq its sender was told.
func checkHistory(cv *conv, evs []*chatv1.Event, sent []*message, lookup func(id string) *message) historyFinding {
	var f historyFinding
	at := map[uint64]*chatv1.Event{}
	seen := map[string]uint64{}
	for i, ev := range evs {
		seq := ev.GetSeq()
		at[seq] = ev
		if seq != uint64(i+1) && len(f.holes) == 0 {
			f.holes = append(f.holes, fmt.Sprintf("conversation %s: history position %d holds seq %d", cv.id, i+1, seq))
		}
		if seq == 1 {
			if ev.GetConversationCreated() == nil {
				f.mismatched = append(f.mismatched, fmt.Sprintf("conversation %s: seq 1 is not its creation", cv.id))
			}
			continue
		}
		id := ev.GetClientMsgId()
		if ev.GetMessagePosted() == nil {
			f.unknown = append(f.unknown, fmt.Sprintf("conversation %s seq %d: an event nobody sent (%T)", cv.id, seq, ev.GetBody()))
			continue
		}
		if other, ok := seen[id]; ok {
			f.duplicates = append(f.duplicates, fmt.Sprintf("conversation %s: client id %s stored at seq %d and seq %d", cv.id, id, other, seq))
			continue
		}
		seen[id] = seq
		m := lookup(id)
		switch {
		case m == nil:
			f.unknown = append(f.unknown, fmt.Sprintf("conversation %s seq %d: client id %q was never sent", cv.id, seq, id))
		case m.conv != cv || m.text != ev.GetMessagePosted().GetText() || m.from.user.id != ev.GetSenderId():
			f.mismatched = append(f.mismatched, fmt.Sprintf("conversation %s seq %d: %q from %s, sent %q from %s to %s",
				cv.id, seq, ev.GetMessagePosted().GetText(), ev.GetSenderId(), m.text, m.from.user.id, m.conv.id))
		}
	}
	for _, m := range sent {
		st := m.state()
		if !st.acked {
			continue
		}
		if ev := at[st.seq]; ev == nil || ev.GetClientMsgId() != m.id {
			f.lost = append(f.lost, m)
		}
	}
	return f
}

// deviceFinding is how one device's view of a conversation differs from
// its history.
type deviceFinding struct {
	missing []seqRange
	// wrong: seqs the device holds with another event than history.
	wrong []uint64
	// beyond: seqs the device holds past history's last.
	beyond []uint64
}

func (f deviceFinding) converged() bool {
	return len(f.missing) == 0 && len(f.wrong) == 0 && len(f.beyond) == 0
}

// compareView holds a device's view to the conversation's history: it
// must hold exactly history's seqs, each the same event.
func compareView(v *view, evs []*chatv1.Event) deviceFinding {
	var f deviceFinding
	if v == nil {
		v = newView()
	}
	head := uint64(0)
	if n := len(evs); n > 0 {
		head = evs[n-1].GetSeq()
	}
	f.missing = v.missingIn(seqRange{1, head})
	for _, ev := range evs {
		h, ok := v.events[ev.GetSeq()]
		if ok && (h.eventID != ev.GetEventId() || h.clientID != ev.GetClientMsgId() || h.text != ev.GetMessagePosted().GetText()) {
			f.wrong = append(f.wrong, ev.GetSeq())
		}
	}
	for seq := range v.events {
		if seq > head {
			f.beyond = append(f.beyond, seq)
		}
	}
	slices.Sort(f.beyond)
	return f
}

// outcome is what the recovery measurement needs of one message.
type outcome struct {
	first time.Time
	// done is when it was both acknowledged and delivered to a device
	// other than the sender's; zero if it never was.
	done      time.Time
	partition int32
}

func outcomeOf(m *message) outcome {
	st := m.state()
	o := outcome{first: m.first, partition: m.conv.partition}
	if st.acked && !st.firstOther.IsZero() {
		o.done = st.ackAt
		if st.firstOther.After(o.done) {
			o.done = st.firstOther
		}
	}
	return o
}

// recovery measures a fault at t from the messages first sent at or
// after t: first is the time to the first of them acknowledged and
// delivered; all is the time until that held in every partition they
// went to, nil if some partition never got there (listed in
// unrecovered). A partition a fault stalls (its sequencer's open
// transaction, a consumer restarting) shows in all, not in first.
func recovery(t time.Time, outs []outcome) (first, all *float64, unrecovered []int32) {
	perPartition := map[int32]time.Time{}
	var best time.Time
	for _, o := range outs {
		if o.first.Before(t) {
			continue
		}
		if _, ok := perPartition[o.partition]; !ok {
			perPartition[o.partition] = time.Time{}
		}
		if o.done.IsZero() {
			continue
		}
		if p := perPartition[o.partition]; p.IsZero() || o.done.Before(p) {
			perPartition[o.partition] = o.done
		}
		if best.IsZero() || o.done.Before(best) {
			best = o.done
		}
	}
	ms := func(at time.Time) *float64 {
		v := round1(float64(at.Sub(t)) / float64(time.Millisecond))
		return &v
	}
	if best.IsZero() {
		return nil, nil, nil
	}
	var last time.Time
	for p, at := range perPartition {
		if at.IsZero() {
			unrecovered = append(unrecovered, p)
		} else if at.After(last) {
			last = at
		}
	}
	slices.Sort(unrecovered)
	if len(unrecovered) > 0 {
		return ms(best), nil, unrecovered
	}
	return ms(best), ms(last), nil
}

// historySource reads a conversation's history from one persistence
// instance, as a member.
type historySource struct {
	name string
	c    persistencev1.PersistenceServiceClient
}

func (h historySource) read(ctx context.Context, cv *conv) ([]*chatv1.Event, error) {
	return readHistory(ctx, func(ctx context.Context, after uint64) ([]*chatv1.Event, bool, error) {
		resp, err := h.c.History(ctx, &persistencev1.HistoryRequest{UserId: cv.members[0].id, ConversationId: cv.id,
			AfterSeq: proto.Uint64(after), Limit: historyPage})
		return resp.GetEvents(), resp.GetHasMore(), err
	}, 0, 0)
}

// sameEvents reports whether two reads of a history hold the same events.
func sameEvents(a, b []*chatv1.Event) bool {
	return slices.EqualFunc(a, b, func(x, y *chatv1.Event) bool { return proto.Equal(x, y) })
}

package main

import (
	"fmt"
	"sync"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// message is one message a device sent, or is still trying to: what the
// checker holds the platform to.
type message struct {
	id    string // client message id, the same on every retry
	conv  *conv
	from  *device
	text  string
	first time.Time // first attempt

	// mu guards the fields below.
	mu sync.Mutex
	// acked: an accepted answer came (fresh or duplicate); seq is its seq.
	acked bool
	ackAt time.Time
	seq   uint64
	// duplicateAnswers counts answers that said duplicate (a retry of a
	// send whose first answer was lost).
	duplicateAnswers int
	attempts         int
	// rejected is a refusal no retry can change (the run fails).
	rejected error
	// firstOther is the first live delivery to a device other than the
	// sending one: with ackAt, what recovery after a fault is measured by.
	firstOther time.Time
}

// ack records an accepted answer. An answer naming another seq than an
// earlier one breaks exactly-once (guarantee 3).
func (m *message) ack(a *clientv1.Accepted, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.GetDuplicate() {
		m.duplicateAnswers++
	}
	if m.acked && a.GetSeq() != m.seq {
		return fmt.Errorf("client id %s answered seq %d, then seq %d", m.id, m.seq, a.GetSeq())
	}
	if !m.acked {
		m.acked, m.ackAt, m.seq = true, at, a.GetSeq()
	}
	return nil
}

func (m *message) delivered(to *device, at time.Time) {
	if to == m.from {
		return
	}
	m.mu.Lock()
	if m.firstOther.IsZero() || at.Before(m.firstOther) {
		m.firstOther = at
	}
	m.mu.Unlock()
}

// state is a consistent copy of what the message went through.
type msgState struct {
	acked            bool
	seq              uint64
	ackAt            time.Time
	firstOther       time.Time
	attempts         int
	duplicateAnswers int
	rejected         error
}

func (m *message) state() msgState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return msgState{acked: m.acked, seq: m.seq, ackAt: m.ackAt, firstOther: m.firstOther, attempts: m.attempts,
		duplicateAnswers: m.duplicateAnswers, rejected: m.rejected}
}

// ledger holds every message of the run by client id.
type ledger struct {
	mu   sync.Mutex
	byID map[string]*message
	all  []*message
}

func newLedger() *ledger { return &ledger{byID: map[string]*message{}} }

func (l *ledger) add(m *message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byID[m.id] = m
	l.all = append(l.all, m)
}

func (l *ledger) get(id string) *message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byID[id]
}

func (l *ledger) messages() []*message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*message(nil), l.all...)
}

// held is what a device holds at one seq of a conversation.
type held struct {
	eventID, clientID, sender, text string
	// filled: read from history by the device after the SDK delivered a
	// later event with a gap before it, rather than delivered on Events().
	filled bool
}

func heldOf(ev *chatv1.Event, filled bool) held {
	return held{eventID: ev.GetEventId(), clientID: ev.GetClientMsgId(), sender: ev.GetSenderId(),
		text: ev.GetMessagePosted().GetText(), filled: filled}
}

// seqRange is an inclusive range of seqs.
type seqRange struct{ from, to uint64 }

func (r seqRange) String() string {
	if r.from == r.to {
		return fmt.Sprint(r.from)
	}
	return fmt.Sprintf("%d-%d", r.from, r.to)
}

// view is one conversation as one device holds it.
type view struct {
	// last is the highest seq delivered on Events().
	last   uint64
	events map[uint64]held
	// byClient finds a client message id held at two seqs.
	byClient map[string]uint64
	// gaps are seqs the SDK skipped (it reports them on Errors() when
	// history could not supply them) that the device has not yet read
	// from history itself.
	gaps []seqRange
}

func newView() *view { return &view{events: map[uint64]held{}, byClient: map[string]uint64{}} }

// arrival classifies one event delivered on Events().
type arrival int

const (
	// inOrder: the next seq.
	inOrder arrival = iota
	// afterGap: a later seq than the next; the seqs between are a gap.
	afterGap
	// repeated: a seq the device already held (delivered twice).
	repeated
	// late: a seq below the last delivered that the device did not hold:
	// delivered out of order.
	late
)

// observe takes one event delivered on Events(). It returns how it
// arrived, the gap it opened (afterGap) and, when its client message id
// is already held at another seq, that seq (the message exists twice).
func (v *view) observe(ev *chatv1.Event) (arrival, seqRange, uint64) {
	seq := ev.GetSeq()
	var kind arrival
	var gap seqRange
	switch _, had := v.events[seq]; {
	case had:
		return repeated, gap, 0
	case seq == v.last+1:
		kind = inOrder
	case seq > v.last+1:
		kind, gap = afterGap, seqRange{v.last + 1, seq - 1}
		v.gaps = append(v.gaps, gap)
	default:
		kind = late
	}
	v.last = max(v.last, seq)
	other := v.hold(ev, false)
	if kind == late {
		v.pruneGaps()
	}
	return kind, gap, other
}

// hold stores an event and returns the other seq its client message id
// is held at, if any.
func (v *view) hold(ev *chatv1.Event, filled bool) uint64 {
	h := heldOf(ev, filled)
	v.events[ev.GetSeq()] = h
	if h.clientID == "" {
		return 0
	}
	if other, ok := v.byClient[h.clientID]; ok && other != ev.GetSeq() {
		return other
	}
	v.byClient[h.clientID] = ev.GetSeq()
	return 0
}

// fill stores events the device read from history to close its gaps and
// returns how many it did not hold yet, and any client id held twice.
func (v *view) fill(evs []*chatv1.Event) (int, []uint64) {
	n := 0
	var twice []uint64
	for _, ev := range evs {
		if _, had := v.events[ev.GetSeq()]; had || ev.GetSeq() > v.last {
			continue
		}
		n++
		if other := v.hold(ev, true); other != 0 {
			twice = append(twice, ev.GetSeq())
		}
	}
	v.pruneGaps()
	return n, twice
}

// pruneGaps drops the gaps the view now holds entirely.
func (v *view) pruneGaps() {
	var open []seqRange
	for _, g := range v.gaps {
		if len(v.missingIn(g)) > 0 {
			open = append(open, g)
		}
	}
	v.gaps = open
}

// missingIn lists the seqs of r the view does not hold, as ranges.
func (v *view) missingIn(r seqRange) []seqRange {
	var out []seqRange
	for s := r.from; s <= r.to; s++ {
		if _, ok := v.events[s]; ok {
			continue
		}
		if n := len(out); n > 0 && out[n-1].to == s-1 {
			out[n-1].to = s
		} else {
			out = append(out, seqRange{s, s})
		}
	}
	return out
}

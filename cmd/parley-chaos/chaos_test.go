package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// fixture is one conversation with two users and a message per seq from
// 2 on (seq 1 is the creation), each sent by alice's first device.
type fixture struct {
	cv   *conv
	msgs map[uint64]*message
	byID map[string]*message
}

func newFixture(n int) *fixture {
	alice, bob := &user{id: "alice"}, &user{id: "bob"}
	for _, u := range []*user{alice, bob} {
		u.devices = []*device{{name: u.id + "/d0", user: u}, {name: u.id + "/d1", user: u}}
	}
	f := &fixture{cv: &conv{id: "c1", members: []*user{alice, bob}}, msgs: map[uint64]*message{}, byID: map[string]*message{}}
	for seq := uint64(2); seq <= uint64(n); seq++ {
		m := &message{id: fmt.Sprintf("m%d", seq), conv: f.cv, from: alice.devices[0], text: fmt.Sprintf("text %d", seq)}
		f.msgs[seq], f.byID[m.id] = m, m
	}
	return f
}

// ack acknowledges the message sent for seq.
func (f *fixture) ack(seq uint64) *message {
	m := f.msgs[seq]
	if err := m.ack(&clientv1.Accepted{Seq: seq}, time.Now()); err != nil {
		panic(err)
	}
	return m
}

func (f *fixture) event(seq uint64) *chatv1.Event {
	if seq == 1 {
		return &chatv1.Event{ConversationId: f.cv.id, Seq: 1, EventId: "e1", Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{}}}
	}
	m := f.msgs[seq]
	return post(f.cv.id, seq, m.id, m.text, m.from.user.id)
}

func post(conv string, seq uint64, id, text, sender string) *chatv1.Event {
	return &chatv1.Event{ConversationId: conv, Seq: seq, EventId: fmt.Sprintf("e%d", seq), ClientMsgId: id, SenderId: sender,
		Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: text}}}
}

func (f *fixture) events(seqs ...uint64) []*chatv1.Event {
	var out []*chatv1.Event
	for _, s := range seqs {
		out = append(out, f.event(s))
	}
	return out
}

func TestViewObserve(t *testing.T) {
	f := newFixture(10)
	for _, tc := range []struct {
		name  string
		seqs  []uint64
		want  []arrival
		gaps  []seqRange
		last  uint64
		twice bool
	}{
		{"in order", []uint64{1, 2, 3}, []arrival{inOrder, inOrder, inOrder}, nil, 3, false},
		{"a gap", []uint64{1, 2, 5}, []arrival{inOrder, inOrder, afterGap}, []seqRange{{3, 4}}, 5, false},
		{"delivered twice", []uint64{1, 2, 2}, []arrival{inOrder, inOrder, repeated}, nil, 2, false},
		{"late fills its gap", []uint64{1, 3, 2}, []arrival{inOrder, afterGap, late}, nil, 3, false},
		{"one message at two seqs", []uint64{1, 2, 3}, []arrival{inOrder, inOrder, inOrder}, nil, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newView()
			var got []arrival
			twice := false
			for i, seq := range tc.seqs {
				ev := f.event(seq)
				if tc.twice && i == 2 {
					ev = post(f.cv.id, seq, f.msgs[2].id, f.msgs[2].text, "alice")
				}
				kind, _, other := v.observe(ev)
				got = append(got, kind)
				twice = twice || other != 0
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(v.gaps, tc.gaps) || v.last != tc.last || twice != tc.twice {
				t.Fatalf("arrivals %v gaps %v last %d twice %v; want %v %v %d %v", got, v.gaps, v.last, twice, tc.want, tc.gaps, tc.last, tc.twice)
			}
		})
	}
}

func TestViewFill(t *testing.T) {
	f := newFixture(10)
	v := newView()
	for _, seq := range []uint64{1, 2, 6, 7} {
		v.observe(f.event(seq))
	}
	// History pages may overlap what the device holds and run past it.
	if n, twice := v.fill(f.events(2, 3, 4)); n != 2 || twice != nil {
		t.Fatalf("first fill took %d (twice %v), want 2", n, twice)
	}
	if !slices.Equal(v.gaps, []seqRange{{3, 5}}) || !slices.Equal(v.missingIn(seqRange{1, 7}), []seqRange{{5, 5}}) {
		t.Fatalf("after a partial fill: gaps %v, missing %v", v.gaps, v.missingIn(seqRange{1, 7}))
	}
	if n, _ := v.fill(f.events(5, 6, 7, 8)); n != 1 || len(v.gaps) != 0 {
		t.Fatalf("second fill took %d, gaps %v; want 1 and none (8 is beyond what was delivered)", n, v.gaps)
	}
	if h := v.events[5]; !h.filled || v.events[6].filled {
		t.Fatal("filled seqs must say so, delivered ones not")
	}
}

func TestCheckHistory(t *testing.T) {
	for _, tc := range []struct {
		name string
		// acked are the seqs acknowledged; history is built from seqs,
		// then edit changes it.
		acked []uint64
		seqs  []uint64
		edit  func(f *fixture, evs []*chatv1.Event) []*chatv1.Event
		// want counts lost, duplicates, unknown, mismatched, holes.
		want [5]int
	}{
		{name: "complete", acked: []uint64{2, 3, 4}, seqs: []uint64{1, 2, 3, 4}},
		{name: "an unanswered message stored", acked: []uint64{2, 3}, seqs: []uint64{1, 2, 3, 4}},
		{name: "acknowledged, not stored", acked: []uint64{2, 3, 4}, seqs: []uint64{1, 2, 3}, want: [5]int{1, 0, 0, 0, 0}},
		{name: "a hole", acked: []uint64{2, 3, 4}, seqs: []uint64{1, 2, 4}, want: [5]int{1, 0, 0, 0, 1}},
		{name: "stored twice", acked: []uint64{2, 3}, seqs: []uint64{1, 2, 3},
			edit: func(f *fixture, evs []*chatv1.Event) []*chatv1.Event {
				return append(evs, post("c1", 4, "m2", "text 2", "alice"))
			}, want: [5]int{0, 1, 0, 0, 0}},
		{name: "another message at an acknowledged seq", acked: []uint64{2, 3}, seqs: []uint64{1, 2, 3},
			edit: func(f *fixture, evs []*chatv1.Event) []*chatv1.Event {
				evs[2] = post("c1", 3, "m4", "text 4", "alice")
				return evs
			}, want: [5]int{1, 0, 0, 0, 0}},
		{name: "nobody sent it", acked: []uint64{2}, seqs: []uint64{1, 2},
			edit: func(f *fixture, evs []*chatv1.Event) []*chatv1.Event {
				return append(evs, post("c1", 3, "stranger", "hi", "mallory"))
			}, want: [5]int{0, 0, 1, 0, 0}},
		{name: "other text", acked: []uint64{2}, seqs: []uint64{1, 2},
			edit: func(f *fixture, evs []*chatv1.Event) []*chatv1.Event {
				evs[1].GetMessagePosted().Text = "changed"
				return evs
			}, want: [5]int{0, 0, 0, 1, 0}},
		{name: "no creation first", acked: []uint64{2}, seqs: []uint64{2},
			edit: func(f *fixture, evs []*chatv1.Event) []*chatv1.Event {
				evs[0].Seq = 1
				return append(evs, f.event(2))
			}, want: [5]int{0, 0, 0, 1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(10)
			var sent []*message
			for seq := uint64(2); seq <= 10; seq++ {
				sent = append(sent, f.msgs[seq])
			}
			for _, seq := range tc.acked {
				f.ack(seq)
			}
			evs := f.events(tc.seqs...)
			if tc.edit != nil {
				evs = tc.edit(f, evs)
			}
			got := checkHistory(f.cv, evs, sent, func(id string) *message { return f.byID[id] })
			counts := [5]int{len(got.lost), len(got.duplicates), len(got.unknown), len(got.mismatched), len(got.holes)}
			if counts != tc.want {
				t.Fatalf("lost, duplicates, unknown, mismatched, holes = %v, want %v\n%+v", counts, tc.want, got)
			}
		})
	}
}

func TestCompareView(t *testing.T) {
	f := newFixture(10)
	history := f.events(1, 2, 3, 4, 5)
	for _, tc := range []struct {
		name   string
		held   []*chatv1.Event
		want   deviceFinding
		agrees bool
	}{
		{name: "the same", held: f.events(1, 2, 3, 4, 5), agrees: true},
		{name: "the tail missing", held: f.events(1, 2, 3), want: deviceFinding{missing: []seqRange{{4, 5}}}},
		{name: "nothing", want: deviceFinding{missing: []seqRange{{1, 5}}}},
		{name: "another event at a seq", held: append(f.events(1, 2), post("c1", 3, "m3", "text 3", "alice"), f.event(4), f.event(5)),
			want: deviceFinding{}, agrees: true},
		{name: "beyond history", held: f.events(1, 2, 3, 4, 5, 6), want: deviceFinding{beyond: []uint64{6}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v *view
			if tc.held != nil {
				v = newView()
				for _, ev := range tc.held {
					v.observe(ev)
				}
			}
			got := compareView(v, history)
			if got.converged() != tc.agrees || !slices.Equal(got.missing, tc.want.missing) || !slices.Equal(got.beyond, tc.want.beyond) {
				t.Fatalf("got %+v (converged %v), want %+v", got, got.converged(), tc.want)
			}
		})
	}
	// The same client id and text with another event id is another event.
	v := newView()
	for _, ev := range f.events(1, 2) {
		v.observe(ev)
	}
	other := f.event(3)
	other.EventId = "zombie"
	v.observe(other)
	if got := compareView(v, f.events(1, 2, 3)); !slices.Equal(got.wrong, []uint64{3}) {
		t.Fatalf("another event id at seq 3: %+v", got)
	}
}

func TestRecovery(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ms := func(p *float64) string {
		if p == nil {
			return "nil"
		}
		return fmt.Sprint(*p)
	}
	for _, tc := range []struct {
		name             string
		outs             []outcome
		first, all       string
		unrecoveredParts []int32
	}{
		{name: "nothing sent after", outs: []outcome{{first: at(-1), done: at(0.1)}}, first: "nil", all: "nil"},
		{name: "one partition", outs: []outcome{{first: at(0.5), done: at(0.6)}, {first: at(0.2), done: at(0.9)}}, first: "600", all: "600"},
		{name: "a stalled partition", outs: []outcome{
			{first: at(0.1), done: at(0.2), partition: 1},
			{first: at(0.3), done: at(10.5), partition: 2},
			{first: at(4), done: at(10.6), partition: 2},
		}, first: "200", all: "10500"},
		{name: "a partition that never recovered", outs: []outcome{
			{first: at(0.1), done: at(0.2), partition: 1},
			{first: at(0.3), partition: 2},
		}, first: "200", all: "nil", unrecoveredParts: []int32{2}},
		{name: "messages before the fault do not count", outs: []outcome{
			{first: at(-5), done: at(0.01), partition: 1},
			{first: at(1), done: at(3), partition: 1},
		}, first: "3000", all: "3000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, all, unrec := recovery(t0, tc.outs)
			if ms(first) != tc.first || ms(all) != tc.all || !slices.Equal(unrec, tc.unrecoveredParts) {
				t.Fatalf("recovery %s, all partitions %s, unrecovered %v; want %s, %s, %v", ms(first), ms(all), unrec, tc.first, tc.all, tc.unrecoveredParts)
			}
		})
	}
}

func TestAckAnswers(t *testing.T) {
	f := newFixture(3)
	m := f.msgs[2]
	if err := m.ack(&clientv1.Accepted{Seq: 2}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.ack(&clientv1.Accepted{Seq: 2, Duplicate: true}, time.Now()); err != nil {
		t.Fatalf("a duplicate answer with the same seq: %v", err)
	}
	if err := m.ack(&clientv1.Accepted{Seq: 3, Duplicate: true}, time.Now()); err == nil {
		t.Fatal("an answer with another seq must be refused")
	}
	if st := m.state(); st.seq != 2 || st.duplicateAnswers != 2 {
		t.Fatalf("state %+v, want seq 2 and 2 duplicate answers", st)
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&wire.Error{Code: chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE}, true},
		{&wire.Error{Code: chatv1.ErrorCode_ERROR_CODE_INTERNAL}, true},
		{fmt.Errorf("send: %w", sdk.ErrConnectionLost), true},
		{context.DeadlineExceeded, true},
		{&wire.Error{Code: chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER}, false},
		{&wire.Error{Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT}, false},
		{fmt.Errorf("%w: %w", sdk.ErrClosed, errors.New("gone")), false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-short", "-devices", "40"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != time.Minute || o.devices != 40 || o.rate != 20 || o.converge != 45*time.Second || o.killEvery != 5*time.Second {
		t.Fatalf("-short -devices 40: %+v", o)
	}
	if o, err = parseOptions(nil); err != nil || o.duration != 5*time.Minute || o.devices != 200 {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-devices", "19"}, {"-devices", "10"}, {"-rate", "0"}, {"-duration", "30s"}, {"-kill-every", "0s"}, {"-seed", "x"},
	} {
		if _, err := parseOptions(args); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}

func TestCauseOf(t *testing.T) {
	got := causeOf(`dial tcp 127.0.0.1:24208: connect: connection refused`)
	if want := "dial tcp #.#.#.#:#: connect: connection refused"; got != want {
		t.Fatalf("causeOf = %q, want %q", got, want)
	}
	if n := len(causeOf(strings.Repeat("x", 500))); n != 120 {
		t.Fatalf("a long cause kept %d bytes, want 120", n)
	}
}

func TestClientsBack(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := &device{conns: []connection{{at: t0.Add(-time.Minute), edge: 0}, {at: t0.Add(700 * time.Millisecond), edge: 1}}}
	b := &device{conns: []connection{{at: t0.Add(6 * time.Second), edge: 0}}}
	f := &fault{At: t0, edge: 0, devices: []*device{a, b}}
	clientsBack(f)
	if f.ClientsToOtherEdge != 1 || f.ClientsToRestarted != 1 || f.ClientsNotBack != 0 || f.ClientsReconnectedMS == nil || *f.ClientsReconnectedMS != 6000 {
		t.Fatalf("%+v", f)
	}
	c := &device{}
	f = &fault{At: t0, devices: []*device{a, c}}
	if clientsBack(f); f.ClientsNotBack != 1 || f.ClientsReconnectedMS != nil {
		t.Fatalf("a client never back: %+v", f)
	}
}

func TestSlowestDeliveries(t *testing.T) {
	tl := newTally()
	for i, ms := range []float64{5, 50, 1, 70, 20, 9, 30, 2, 60, 40, 10, 80, 3} {
		tl.latency(delivery{msgRef: msgRef{Seq: uint64(i)}, LatencyMS: ms})
	}
	var got []float64
	for _, d := range tl.slowest {
		got = append(got, d.LatencyMS)
	}
	if want := []float64{80, 70, 60, 50, 40, 30, 20, 10, 9, 5}; !slices.Equal(got, want) {
		t.Fatalf("slowest %v, want %v", got, want)
	}
	if len(tl.latencies) != 13 {
		t.Fatalf("%d latencies kept, want all 13", len(tl.latencies))
	}
}

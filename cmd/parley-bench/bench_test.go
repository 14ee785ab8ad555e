package main

import (
	"testing"
	"time"

	"github.com/parleychat/parley/cmd/internal/stats"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// TestObserve: a delivery counts once per recipient device; the sender's
// own copy, a repeat and a late gap-filler are told apart.
func TestObserve(t *testing.T) {
	w := &workload{}
	alice, bob := &user{id: "alice"}, &user{id: "bob"}
	a := &device{user: alice, convs: map[string]*seen{}}
	b := &device{user: bob, convs: map[string]*seen{}}
	alice.devices, bob.devices = []*device{a}, []*device{b}
	cv := &conv{id: "c", members: []*user{alice, bob}, devices: 2}
	r := newLoadRun("test", 1, time.Second)
	sent := time.Now()
	post := func(seq uint64, id string) *chatv1.Event {
		return &chatv1.Event{ConversationId: "c", Seq: seq, ClientMsgId: id,
			Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: "x"}}}
	}
	for _, id := range []string{"m2", "m3", "m4"} {
		m := &message{run: r, conv: cv, from: a, expected: 1, sentAt: sent}
		m.state.Store(1)
		r.msgs = append(r.msgs, m)
		w.msgs.Store(id, m)
	}
	now := sent.Add(5 * time.Millisecond)
	w.observe(a, &chatv1.Event{ConversationId: "c", Seq: 1}, now) // creation
	w.observe(a, post(2, "m2"), now)                              // the sender's echo
	w.observe(b, &chatv1.Event{ConversationId: "c", Seq: 1}, now)
	w.observe(b, post(2, "m2"), now)
	w.observe(b, post(2, "m2"), now) // duplicate
	w.observe(b, post(4, "m4"), now) // skips 3
	w.observe(b, post(3, "m3"), now) // late, fills the gap
	res := r.result(0)
	if res.Delivered != 3 || res.Expected != 3 || res.Lost != 0 || res.Duplicates != 1 || res.OutOfOrder != 1 || res.Echoes != 1 {
		t.Fatalf("result = %+v", res)
	}
	if res.Latency.N != 3 || res.Latency.Max != 5 {
		t.Fatalf("latency = %+v", res.Latency)
	}
	// A message that never arrives is lost; one that failed is not expected.
	m := &message{run: r, conv: cv, from: a, expected: 1, sentAt: sent}
	m.state.Store(1)
	failed := &message{run: r, conv: cv, from: a, expected: 1, sentAt: sent}
	failed.state.Store(2)
	r.msgs = append(r.msgs, m, failed)
	if res := r.result(0); res.Lost != 1 || res.Expected != 4 {
		t.Fatalf("after a missing delivery: lost %d of %d", res.Lost, res.Expected)
	}
}

func TestHeld(t *testing.T) {
	ok := loadResult{RateTarget: 100, AcceptedPerS: 99, Latency: stats.Percentiles{N: 10, P99: 80}}
	if !held(ok, 100) {
		t.Fatal("a clean run under the limit must hold")
	}
	for name, mutate := range map[string]func(*loadResult){
		"slow":        func(r *loadResult) { r.Latency.P99 = 101 },
		"lost":        func(r *loadResult) { r.Lost = 1 },
		"errors":      func(r *loadResult) { r.Errors = 1 },
		"disconnects": func(r *loadResult) { r.Disconnects = 1 },
		"under rate":  func(r *loadResult) { r.AcceptedPerS = 90 },
		"no samples":  func(r *loadResult) { r.Latency.N = 0 },
	} {
		r := ok
		mutate(&r)
		if held(r, 100) {
			t.Errorf("%s: held", name)
		}
	}
}

// TestStormTally: an owed event that never came counts as missing, one
// that came twice as a duplicate, and a device without Resumed as failed.
func TestStormTally(t *testing.T) {
	start := time.Now()
	cv := &stormConv{id: "c", cursor: 1, last: 5}
	ok := &stormDevice{convs: []*stormConv{cv}, seen: map[string][]uint64{"c": {2, 3, 3, 5, 4}},
		dialAt: start, authAt: start.Add(10 * time.Millisecond), doneAt: start.Add(30 * time.Millisecond)}
	stuck := &stormDevice{convs: []*stormConv{cv}, seen: map[string][]uint64{"c": {2}},
		dialAt: start, authAt: start.Add(20 * time.Millisecond)}
	var res stormResult
	res.tally([]*stormDevice{ok, stuck}, start)
	if res.Expected != 8 || res.Missing != 3 || res.Duplicates != 1 || res.OutOfOrder != 1 {
		t.Errorf("expected/missing/duplicates/out of order %d/%d/%d/%d, want 8/3/1/1", res.Expected, res.Missing, res.Duplicates, res.OutOfOrder)
	}
	if res.Resumed != 1 || res.Failed != 1 || res.Resume.P50 != 20 || res.AllAuthenticatedS != 0.02 {
		t.Errorf("resumed %d failed %d resume p50 %v all authenticated %v s, want 1, 1, 20, 0.02", res.Resumed, res.Failed, res.Resume.P50, res.AllAuthenticatedS)
	}
}

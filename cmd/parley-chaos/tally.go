package main

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/pkg/wire"
)

// maxListed bounds each list of evidence the report carries; the counts
// are always complete.
const maxListed = 100

// tally counts what the devices and senders saw as it happens.
type tally struct {
	// deliveries: events of sent messages delivered on Events(), first
	// copies, every member device (the sender's own included).
	deliveries atomic.Int64
	// duplicates: a seq delivered twice to a device, a client message id
	// at two seqs, or one client message id answered with two seqs.
	duplicates atomic.Int64
	// reordered: a seq delivered after a later one of its conversation.
	reordered atomic.Int64
	// gaps: the SDK delivered an event past a gap it could not fill from
	// history in time; gapSeqs is how many seqs they spanned; filled is
	// how many of those the devices read from history themselves.
	gaps, gapSeqs, filled atomic.Int64
	// mismatched: a delivered event whose text, sender or conversation is
	// not what was sent under its client message id.
	mismatched atomic.Int64
	// unknown: a message nobody sent.
	unknown atomic.Int64
	// rejected: a send refused for good.
	rejected atomic.Int64
	// movedHome: devices cut off to move them back to their home edge.
	movedHome atomic.Int64

	// mu guards the fields below.
	mu           sync.Mutex
	latencies    []float64 // ms, first attempt → delivered to another device
	ackLatencies []float64 // ms, first attempt → accepted
	sendErrors   map[string]int
	sdkErrors    map[string]int
	sdkSample    []string
	dropCauses   map[string]int
	problems     []string
	problemCount int
	gapList      []gapRecord
	// slowest are the slowest deliveries, slowest first.
	slowest []delivery
}

// msgRef names a sent message in the report's evidence.
type msgRef struct {
	Conv         string    `json:"conversation"`
	Seq          uint64    `json:"seq"`
	FirstAttempt time.Time `json:"first_attempt"`
	// AckedAt tells sequencing delay from delivery delay (set when the
	// report is made: the answer may come after a delivery).
	AckedAt *time.Time `json:"acked_at,omitempty"`
}

// delivery is one event delivered to a device other than the sender's.
type delivery struct {
	msgRef
	Device    string    `json:"device"`
	Delivered time.Time `json:"delivered"`
	LatencyMS float64   `json:"latency_ms"`
	msg       *message
}

// slowestKept is how many of the slowest deliveries the report lists.
const slowestKept = 10

type gapRecord struct {
	At     time.Time `json:"at"`
	Device string    `json:"device"`
	Conv   string    `json:"conversation"`
	Seqs   string    `json:"seqs"`
}

func newTally() *tally {
	return &tally{sendErrors: map[string]int{}, sdkErrors: map[string]int{}, dropCauses: map[string]int{}}
}

// problem records evidence of a broken guarantee.
func (t *tally) problem(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.problemCount++
	if len(t.problems) < maxListed {
		t.problems = append(t.problems, time.Now().UTC().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
}

func (t *tally) gap(at time.Time, device, conv string, r seqRange) {
	t.gaps.Add(1)
	t.gapSeqs.Add(int64(r.to - r.from + 1))
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.gapList) < maxListed {
		t.gapList = append(t.gapList, gapRecord{At: at.UTC(), Device: device, Conv: conv, Seqs: r.String()})
	}
}

func (t *tally) latency(d delivery) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.latencies = append(t.latencies, d.LatencyMS)
	i := len(t.slowest)
	for i > 0 && t.slowest[i-1].LatencyMS < d.LatencyMS {
		i--
	}
	if i < slowestKept {
		t.slowest = slices.Insert(t.slowest, i, d)[:min(len(t.slowest)+1, slowestKept)]
	}
}

func (t *tally) ackLatency(d time.Duration) {
	t.mu.Lock()
	t.ackLatencies = append(t.ackLatencies, float64(d)/float64(time.Millisecond))
	t.mu.Unlock()
}

func (t *tally) sendError(name string) {
	t.mu.Lock()
	t.sendErrors[name]++
	t.mu.Unlock()
}

func (t *tally) sdkError(device string, e *wire.Error) {
	t.mu.Lock()
	t.sdkErrors[e.Code.String()]++
	if len(t.sdkSample) < 20 {
		t.sdkSample = append(t.sdkSample, time.Now().UTC().Format("15:04:05.000 ")+device+": "+e.Error())
	}
	t.mu.Unlock()
}

func (t *tally) problemCountNow() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.problemCount
}

// drop counts why a device's connection dropped or a redial failed, by
// the error's first words (addresses and ports vary, the cause does not).
func (t *tally) drop(err error) {
	cause := "unknown"
	if err != nil {
		cause = causeOf(err.Error())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.dropCauses[cause]; !ok && len(t.dropCauses) >= 50 {
		cause = "other"
	}
	t.dropCauses[cause]++
}

// causeOf keeps an error's text without the numbers in it, at most 120
// bytes of it.
func causeOf(s string) string {
	var b []byte
	digits := false
	for i := 0; i < len(s) && len(b) < 120; i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			if !digits {
				b = append(b, '#')
			}
			digits = true
			continue
		}
		digits = false
		b = append(b, c)
	}
	return string(b)
}

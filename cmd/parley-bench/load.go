package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/pkg/wire"
	"golang.org/x/sync/errgroup"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// workload is the benchmark's population: users with one or more devices
// (SDK connections spread over the edges), the direct and group
// conversations they are in, and every message sent so far, so that a
// delivery can be matched to its send whichever phase it arrives in.
type workload struct {
	users   []*user
	devices []*device
	directs []*conv
	groups  []*conv
	text    string
	// msgs maps a client message id to its *message.
	msgs sync.Map
	// setupDuplicates counts duplicates of events the load did not send
	// (conversation creation, history seeding).
	setupDuplicates atomic.Int64
	disconnects     atomic.Int64
	closing         atomic.Bool
}

type user struct {
	id      string
	devices []*device
	// convs is how many conversations the user is in.
	convs int
}

type device struct {
	user *user
	cl   *sdk.Client
	// convs is the receive goroutine's own state: what it has seen of each
	// conversation. Nothing else touches it.
	convs map[string]*seen
	// convsSeen counts the conversations the device has had an event of,
	// for the warm-up wait.
	convsSeen atomic.Int32
	done      chan struct{}
}

// seen tracks one conversation on one device. Events arrive in seq order,
// so anything at or below last is a duplicate unless it fills a gap.
type seen struct {
	last uint64
	gaps map[uint64]bool
}

type conv struct {
	id      string
	direct  bool
	members []*user
	// devices is how many devices its members have.
	devices int
}

// message is one send of a load run.
type message struct {
	run    *loadRun
	conv   *conv
	from   *device
	sentAt time.Time
	// expected deliveries: every device of every member but the sending
	// one.
	expected int
	received atomic.Int32
	// state: 0 in flight, 1 accepted, 2 failed.
	state atomic.Int32
}

// loadRun is one fixed-rate phase: the main run or a knee step.
type loadRun struct {
	name  string
	rate  float64
	dur   time.Duration
	start time.Time

	sent, accepted, failed, inFlight atomic.Int64
	duplicates, outOfOrder, echoes   atomic.Int64
	deliveredNow                     atomic.Int64
	maxLagNanos                      atomic.Int64
	mu                               sync.Mutex // guards the fields below
	msgs                             []*message
	latencies, acceptLatencies       []float64 // milliseconds
	arrivals                         []float32 // seconds since start, one per latency
	errors                           map[string]int
	lastDelivery                     time.Time
}

const sendTimeout = 15 * time.Second

// setupWorkload connects the devices, creates the conversations and waits
// until every device has seen every conversation it is in, so that the
// measured phases start on a warm pipeline.
func setupWorkload(ctx context.Context, o *options, c *cluster.Cluster, minter *auth.HS256, runID string) (*workload, error) {
	w := &workload{text: payload(o.payload)}
	for i := range o.users {
		u := &user{id: fmt.Sprintf("b%s-u%04d", runID, i)}
		w.users = append(w.users, u)
		for range o.devices {
			dev := &device{user: u, convs: map[string]*seen{}, done: make(chan struct{})}
			u.devices = append(u.devices, dev)
			w.devices = append(w.devices, dev)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i, u := range w.users {
		for d, dev := range u.devices {
			// A user's devices sit on different edges, so delivery to the
			// sender's other device crosses nodes.
			url := c.WSURL(i + d)
			g.Go(func() error {
				tok, err := minter.Mint(u.id, 24*time.Hour)
				if err != nil {
					return err
				}
				dctx, cancel := context.WithTimeout(gctx, 30*time.Second)
				defer cancel()
				cl, err := sdk.Dial(dctx, sdk.Options{URL: url, Token: tok, DeviceID: fmt.Sprintf("dev%d", d), EventBuffer: 1 << 14})
				if err != nil {
					return fmt.Errorf("connect %s: %w", u.id, err)
				}
				dev.cl = cl
				go w.receive(dev)
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		w.close()
		return nil, err
	}

	// Groups of G consecutive users; direct conversations between
	// neighbours (0-1, 2-3, ...). A user is in at most one of each.
	for i := 0; i+o.groupSize <= len(w.users) && o.groupSize >= 2; i += o.groupSize {
		w.groups = append(w.groups, &conv{members: w.users[i : i+o.groupSize]})
	}
	for i := 0; i+1 < len(w.users) && o.directShare > 0; i += 2 {
		w.directs = append(w.directs, &conv{members: w.users[i : i+2], direct: true})
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, cv := range w.all() {
		for _, m := range cv.members {
			cv.devices += len(m.devices)
			m.convs++
		}
		creator := cv.members[0].devices[0].cl
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(gctx, sendTimeout)
			defer cancel()
			var err error
			var id string
			if cv.direct {
				a, e := creator.OpenDirect(cctx, cv.members[1].id)
				id, err = a.GetConversationId(), e
			} else {
				// A creation names at most MaxCreateMembers; a bigger
				// group gets the rest added.
				first := min(len(cv.members), membership.MaxCreateMembers)
				others := make([]string, 0, first-1)
				for _, m := range cv.members[1:first] {
					others = append(others, m.id)
				}
				a, e := creator.CreateGroup(cctx, "bench", others...)
				id, err = a.GetConversationId(), e
				if err == nil && first < len(cv.members) {
					err = addMembers(gctx, creator, id, cv.members[first:])
				}
			}
			if err != nil {
				return fmt.Errorf("create conversation: %w", err)
			}
			cv.id = id
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		w.close()
		return nil, err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		missing := 0
		for _, d := range w.devices {
			if int(d.convsSeen.Load()) < d.user.convs {
				missing++
			}
		}
		if missing == 0 {
			return w, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			w.close()
			return nil, fmt.Errorf("warm-up: %d of %d devices did not see all their conversations created within 90s", missing, len(w.devices))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// addMembers adds users to conversation id, a few at a time.
func addMembers(ctx context.Context, cl *sdk.Client, id string, users []*user) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, u := range users {
		g.Go(func() error {
			actx, cancel := context.WithTimeout(gctx, sendTimeout)
			defer cancel()
			if _, err := cl.AddMember(actx, id, u.id); err != nil {
				return fmt.Errorf("add %s: %w", u.id, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func (w *workload) all() []*conv { return append(slices.Clone(w.groups), w.directs...) }

// payload is the message text: n bytes of readable filler.
func payload(n int) string {
	const filler = "the quick brown fox jumps over the lazy dog; "
	return strings.Repeat(filler, n/len(filler)+1)[:n]
}

// receive drains one device's events until its connection ends.
func (w *workload) receive(d *device) {
	defer close(d.done)
	for ev := range d.cl.Events() {
		w.observe(d, ev, time.Now())
	}
	if !w.closing.Load() {
		w.disconnects.Add(1)
	}
}

func (w *workload) observe(d *device, ev *chatv1.Event, now time.Time) {
	s := d.convs[ev.GetConversationId()]
	if s == nil {
		s = &seen{}
		d.convs[ev.GetConversationId()] = s
		d.convsSeen.Add(1)
	}
	seq := ev.GetSeq()
	first, reordered := true, false
	switch {
	case seq > s.last:
		// Remember skipped seqs (bounded), so a late one is told apart
		// from a duplicate.
		for missing := s.last + 1; missing < seq && missing < s.last+10_000; missing++ {
			if s.gaps == nil {
				s.gaps = map[uint64]bool{}
			}
			s.gaps[missing] = true
		}
		s.last = seq
	case s.gaps[seq]:
		delete(s.gaps, seq)
		reordered = true
	default:
		first = false
	}
	var m *message
	if ev.GetMessagePosted() != nil {
		if v, ok := w.msgs.Load(ev.GetClientMsgId()); ok {
			m = v.(*message)
		}
	}
	if m == nil {
		if !first {
			w.setupDuplicates.Add(1)
		}
		return
	}
	r := m.run
	switch {
	case !first:
		r.duplicates.Add(1)
		return
	case reordered:
		r.outOfOrder.Add(1)
	}
	if m.from == d {
		r.echoes.Add(1)
		return
	}
	m.received.Add(1)
	r.deliveredNow.Add(1)
	lat := now.Sub(m.sentAt)
	r.mu.Lock()
	r.latencies = append(r.latencies, float64(lat)/float64(time.Millisecond))
	r.arrivals = append(r.arrivals, float32(now.Sub(r.start).Seconds()))
	if now.After(r.lastDelivery) {
		r.lastDelivery = now
	}
	r.mu.Unlock()
}

func newLoadRun(name string, rate float64, dur time.Duration) *loadRun {
	return &loadRun{name: name, rate: rate, dur: dur, errors: map[string]int{}, start: time.Now()}
}

// runLoad sends at r's rate for r's duration, spread over the
// conversations (directShare of the messages to direct ones), then waits
// up to grace for the deliveries still due. Sends are open-loop: the
// schedule does not wait for answers (up to maxInFlight outstanding), so a
// slow platform shows up as latency rather than as a lower offered rate.

func (w *workload) runLoad(ctx context.Context, r *loadRun, grace time.Duration, directShare float64) {
	rate, dur := r.rate, r.dur
	const maxInFlight = 8192
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	r.start = time.Now()
	end := r.start.Add(dur)
	var sent int64
	for now := r.start; now.Before(end) && ctx.Err() == nil; now = <-tick.C {
		due := int64(float64(now.Sub(r.start)) / float64(time.Second) * rate)
		for ; sent < due; sent++ {
			cv := w.pick(rng, directShare)
			member := cv.members[rng.IntN(len(cv.members))]
			from := member.devices[rng.IntN(len(member.devices))]
			sem <- struct{}{}
			// How late this send leaves against its schedule: the tick's
			// granularity, or the in-flight bound when the platform stalls.
			if lag := time.Since(r.start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))); int64(lag) > r.maxLagNanos.Load() {
				r.maxLagNanos.Store(int64(lag))
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				w.send(ctx, r, cv, from)
			}()
		}
	}
	wg.Wait()
	deadline := time.Now().Add(grace)
	for r.pending() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *workload) pick(rng *rand.Rand, directShare float64) *conv {
	if len(w.groups) == 0 || (len(w.directs) > 0 && rng.Float64() < directShare) {
		return w.directs[rng.IntN(len(w.directs))]
	}
	return w.groups[rng.IntN(len(w.groups))]
}

func (w *workload) send(ctx context.Context, r *loadRun, cv *conv, from *device) {
	id := sdk.NewClientMsgID()
	m := &message{run: r, conv: cv, from: from, expected: cv.devices - 1, sentAt: time.Now()}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	w.msgs.Store(id, m)
	r.sent.Add(1)
	r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	_, err := from.cl.SendWithID(sctx, cv.id, id, w.text)
	now := time.Now()
	if err != nil {
		m.state.Store(2)
		r.failed.Add(1)
		r.mu.Lock()
		r.errors[errorName(err)]++
		r.mu.Unlock()
		return
	}
	m.state.Store(1)
	r.accepted.Add(1)
	r.mu.Lock()
	r.acceptLatencies = append(r.acceptLatencies, float64(now.Sub(m.sentAt))/float64(time.Millisecond))
	r.mu.Unlock()
}

func errorName(err error) string {
	if code := wire.CodeOf(err); code != chatv1.ErrorCode_ERROR_CODE_INTERNAL {
		return code.String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "TIMEOUT"
	}
	return "CONNECTION"
}

// pending is how many deliveries of accepted (or still unanswered)
// messages have not arrived yet.
func (r *loadRun) pending() int {
	r.mu.Lock()
	msgs := r.msgs
	r.mu.Unlock()
	n := 0
	for _, m := range msgs {
		if m.state.Load() != 2 {
			n += m.expected - int(m.received.Load())
		}
	}
	return n
}

// loadResult is what a load run measured.
type loadResult struct {
	RateTarget          float64           `json:"rate_target_msgs_per_s"`
	DurationS           float64           `json:"duration_s"`
	Sent                int64             `json:"sent"`
	Accepted            int64             `json:"accepted"`
	Errors              int64             `json:"errors"`
	ErrorsByCode        map[string]int    `json:"errors_by_code,omitempty"`
	Expected            int64             `json:"expected_deliveries"`
	Delivered           int64             `json:"delivered"`
	Lost                int64             `json:"lost"`
	Duplicates          int64             `json:"duplicates"`
	OutOfOrder          int64             `json:"out_of_order"`
	Echoes              int64             `json:"echoes_to_sender"`
	DeliveredUnaccepted int64             `json:"delivered_unaccepted"`
	Disconnects         int64             `json:"disconnects"`
	AcceptedPerS        float64           `json:"accepted_msgs_per_s"`
	Throughput          float64           `json:"throughput_msgs_per_s"`
	DeliveriesPerS      float64           `json:"deliveries_per_s"`
	MaxSendLagMS        float64           `json:"max_send_lag_ms"`
	Latency             stats.Percentiles `json:"latency_ms"`
	AcceptLatency       stats.Percentiles `json:"accept_latency_ms"`
	// Timeline has the deliveries of each second of the run, to tell a
	// steady tail from a few bad seconds.
	Timeline  []second `json:"timeline,omitempty"`
	latencies []float64
}

// result closes the run's books. Throughput counts the messages whose
// every expected delivery arrived, over the time from the first send to
// the last delivery.
func (r *loadRun) result(disconnects int64) loadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := loadResult{
		RateTarget: r.rate, DurationS: r.dur.Seconds(),
		Sent: r.sent.Load(), Accepted: r.accepted.Load(), Errors: r.failed.Load(),
		Duplicates: r.duplicates.Load(), OutOfOrder: r.outOfOrder.Load(), Echoes: r.echoes.Load(),
		Disconnects:  disconnects,
		MaxSendLagMS: float64(r.maxLagNanos.Load()) / 1e6,
		latencies:    slices.Clone(r.latencies),
	}
	if len(r.errors) > 0 {
		res.ErrorsByCode = map[string]int{}
		for k, v := range r.errors {
			res.ErrorsByCode[k] = v
		}
	}
	complete := 0
	for _, m := range r.msgs {
		got := int64(m.received.Load())
		if m.state.Load() != 1 {
			res.DeliveredUnaccepted += got
			continue
		}
		res.Expected += int64(m.expected)
		res.Delivered += got
		res.Lost += int64(m.expected) - got
		if int(got) == m.expected {
			complete++
		}
	}
	res.AcceptedPerS = float64(res.Accepted) / r.dur.Seconds()
	if span := r.lastDelivery.Sub(r.start).Seconds(); span > 0 {
		res.Throughput = float64(complete) / span
		res.DeliveriesPerS = float64(res.Delivered) / span
	}
	res.Timeline = timeline(r.latencies, r.arrivals)
	res.Latency = stats.Of(res.latencies)
	res.AcceptLatency = stats.Of(r.acceptLatencies)
	return res
}

// progress is the one-line summary while the run goes.
func (r *loadRun) progress() string {
	el := time.Since(r.start).Truncate(time.Second)
	return fmt.Sprintf("%s %s/%s @%.0f msg/s: sent %d accepted %d errors %d in-flight %d delivered %d",
		r.name, min(el, r.dur), r.dur, r.rate, r.sent.Load(), r.accepted.Load(), r.failed.Load(), r.inFlight.Load(), r.deliveredNow.Load())
}

// close ends every connection and waits for the receive goroutines.
func (w *workload) close() {
	w.closing.Store(true)
	for _, d := range w.devices {
		if d.cl != nil {
			_ = d.cl.Close()
			<-d.done
		}
	}
}

// second is one second of a run's deliveries.
type second struct {
	T          int     `json:"t"`
	Deliveries int     `json:"deliveries"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
}

func timeline(latencies []float64, arrivals []float32) []second {
	var buckets [][]float64
	for i, at := range arrivals {
		b := max(0, int(at))
		for len(buckets) <= b {
			buckets = append(buckets, nil)
		}
		buckets[b] = append(buckets[b], latencies[i])
	}
	out := make([]second, len(buckets))
	for i, b := range buckets {
		p := stats.Of(b)
		out[i] = second{T: i, Deliveries: p.N, P50: p.P50, P99: p.P99, Max: p.Max}
	}
	return out
}

// worstSecond is the second with the highest p99.
func (r loadResult) worstSecond() (second, bool) {
	var worst second
	for _, s := range r.Timeline {
		if s.Deliveries > 0 && s.P99 >= worst.P99 {
			worst = s
		}
	}
	return worst, len(r.Timeline) > 0
}

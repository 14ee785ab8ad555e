package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

const (
	// sendTimeout bounds one attempt: ingest's Submit waits up to 10 s
	// for the sequencer's outcome, the edge adds its own hops.
	sendTimeout = 15 * time.Second
	// groupSize is the members of each group conversation.
	groupSize = 5
	// historyPage is the page size the devices and the checker read.
	historyPage = 200
)

// workload is the run's population: users with two devices each (SDK
// clients that reconnect and resume by themselves, one on each edge), a
// direct and a group conversation per user, and everything sent.
type workload struct {
	o       *options
	runID   string
	edges   []string // edge HTTP addresses; a restarted edge keeps its own
	minter  *auth.HS256
	users   []*user
	devices []*device
	convs   []*conv
	ledger  *ledger
	tally   *tally
	// edgeUp says whether edge i serves (its process is ready).
	edgeUp func(i int) bool
	// stopNew, once closed, stops the senders from starting messages; the
	// ones in flight are still retried until answered.
	stopNew chan struct{}
	sending sync.WaitGroup
	// bg runs the devices' state, error and repair loops.
	bg sync.WaitGroup
}

type user struct {
	id      string
	devices []*device
	convs   []*conv
}

type conv struct {
	id        string
	direct    bool
	members   []*user
	partition int32
}

// device is one SDK client and what it received.
type device struct {
	name string
	user *user
	// home is the edge the device dials first; it falls back to the
	// other when home refuses (killed).
	home int
	cl   *sdk.Client
	// dialed is the edge of the latest successful TCP dial.
	dialed atomic.Int32
	repair chan struct{}
	// tcp is the latest connection dialed; closing it cuts the device off.
	tcp atomic.Pointer[net.Conn]

	// mu guards the fields below.
	mu    sync.Mutex
	views map[string]*view
	// conns lists every connection that authenticated: when, on which edge.
	conns     []connection
	connected bool
	edge      int
	drops     int
	// ended is why the client finished for good (never, in a good run).
	ended error
}

type connection struct {
	at   time.Time
	edge int
}

func newWorkload(o *options, runID string, edges []string, minter *auth.HS256) *workload {
	w := &workload{o: o, runID: runID, edges: edges, minter: minter, ledger: newLedger(), tally: newTally(), stopNew: make(chan struct{})}
	nUsers := o.devices / 2
	for i := range nUsers {
		u := &user{id: fmt.Sprintf("chaos%s-u%03d", runID, i)}
		w.users = append(w.users, u)
		for d := range 2 {
			// A user's devices sit on different edges, so every delivery
			// to both crosses nodes, and killing an edge cuts half of them.
			dev := &device{name: fmt.Sprintf("%s/d%d", u.id, d), user: u, home: (i + d) % len(edges),
				views: map[string]*view{}, repair: make(chan struct{}, 1)}
			u.devices = append(u.devices, dev)
			w.devices = append(w.devices, dev)
		}
	}
	// Direct conversations between neighbours (0-1, 2-3, ...); groups of
	// groupSize shifted by one user, so they cut across the pairs.
	for i := 0; i+1 < nUsers; i += 2 {
		w.addConv(true, w.users[i], w.users[i+1])
	}
	for g := 0; (g+1)*groupSize <= nUsers; g++ {
		var members []*user
		for j := range groupSize {
			members = append(members, w.users[(1+g*groupSize+j)%nUsers])
		}
		w.addConv(false, members...)
	}
	return w
}

func (w *workload) addConv(direct bool, members ...*user) {
	cv := &conv{direct: direct, members: members}
	w.convs = append(w.convs, cv)
	for _, m := range members {
		m.convs = append(m.convs, cv)
	}
}

// partitionOf is the partition of parley.commands.v1 (and so of
// parley.events.v1) a conversation's records go to: ingest produces them
// keyed by conversation id with franz-go's default partitioner, which
// hashes keys with Kafka's murmur2 as this one does.
func partitionOf(convID string, partitions int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic(topics.Commands).Partition(&kgo.Record{Key: []byte(convID)}, partitions))
}

// httpClient dials the device's home edge, or the next one that accepts
// when home refuses: a killed edge's clients reconnect to the other, and
// to the restarted one once it is back.
func (w *workload) httpClient(d *device) *http.Client {
	nd := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var errs []error
			for k := range w.edges {
				i := (d.home + k) % len(w.edges)
				c, err := nd.DialContext(ctx, network, w.edges[i])
				if err == nil {
					d.dialed.Store(int32(i))
					d.tcp.Store(&c)
					return c, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
	}}
}

// connect dials every device and starts its loops; they run until ctx
// ends (state, errors, gap repair) or the client closes (events).
func (w *workload) connect(ctx, loops context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, d := range w.devices {
		g.Go(func() error {
			tok, err := w.minter.Mint(d.user.id, 24*time.Hour)
			if err != nil {
				return err
			}
			dctx, cancel := context.WithTimeout(gctx, 30*time.Second)
			defer cancel()
			cl, err := sdk.Dial(dctx, sdk.Options{
				URL: "ws://" + w.edges[d.home] + "/ws", Token: tok, DeviceID: d.name, HTTPClient: w.httpClient(d),
				EventBuffer: 1 << 14,
				// Back within seconds of a fault, and a dead link noticed
				// within seconds, so recovery is the platform's, not the
				// client's backoff.
				Reconnect: &sdk.ReconnectPolicy{MinDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second,
					KeepAlive: 5 * time.Second, AttemptTimeout: 10 * time.Second},
			})
			if err != nil {
				return fmt.Errorf("connect %s: %w", d.name, err)
			}
			// watchStates records this first connection too: the SDK
			// reports it on States().
			d.cl = cl
			w.bg.Add(5)
			go func() { defer w.bg.Done(); w.homecoming(loops, d) }()
			go func() { defer w.bg.Done(); w.receive(d) }()
			go func() { defer w.bg.Done(); w.watchStates(loops, d) }()
			go func() { defer w.bg.Done(); w.watchErrors(loops, d) }()
			go func() { defer w.bg.Done(); w.repairLoop(loops, d) }()
			return nil
		})
	}
	return g.Wait()
}

// createConversations opens the direct conversations and creates the
// groups (before any fault: a retried CreateGroup would make another
// group).
func (w *workload) createConversations(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, cv := range w.convs {
		creator := cv.members[0].devices[0].cl
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(gctx, sendTimeout)
			defer cancel()
			var a *clientv1.Accepted
			var err error
			if cv.direct {
				a, err = creator.OpenDirect(cctx, cv.members[1].id)
			} else {
				others := make([]string, 0, len(cv.members)-1)
				for _, m := range cv.members[1:] {
					others = append(others, m.id)
				}
				a, err = creator.CreateGroup(cctx, "chaos", others...)
			}
			if err != nil {
				return fmt.Errorf("create conversation: %w", err)
			}
			cv.id = a.GetConversationId()
			cv.partition = partitionOf(cv.id, int(topics.LocalSpec.Partitions))
			return nil
		})
	}
	return g.Wait()
}

// waitCreated waits until every device holds the creation event of each
// of its conversations, so the SDK resumes them all after a drop.
func (w *workload) waitCreated(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, d := range w.devices {
			d.mu.Lock()
			for _, cv := range d.user.convs {
				if v := d.views[cv.id]; v == nil || v.last < 1 {
					missing++
				}
			}
			d.mu.Unlock()
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d device conversations without their creation event after %s", missing, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startSenders starts one sender per device; each sends its next message
// once the last was answered, after a random pause that makes the total
// the configured rate.
func (w *workload) startSenders(ctx context.Context, seed uint64) {
	mean := time.Duration(float64(len(w.devices)) / w.o.rate * float64(time.Second))
	for i, d := range w.devices {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		w.sending.Add(1)
		go func() {
			defer w.sending.Done()
			for n := 0; ; n++ {
				t := time.NewTimer(time.Duration(rng.ExpFloat64() * float64(mean)))
				select {
				case <-w.stopNew:
					t.Stop()
					return
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				cv := d.user.convs[rng.IntN(len(d.user.convs))]
				m := &message{id: sdk.NewClientMsgID(), conv: cv, from: d, text: fmt.Sprintf("%s #%d to %s", d.name, n, cv.id), first: time.Now()}
				w.ledger.add(m)
				w.send(ctx, m)
			}
		}()
	}
}

// send sends m until it is answered, retrying with the same client
// message id whatever went wrong, as an app must: the platform answers a
// repeat with the original seq.
func (w *workload) send(ctx context.Context, m *message) {
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, sendTimeout)
		a, err := m.from.cl.SendWithID(actx, m.conv.id, m.id, m.text)
		cancel()
		now := time.Now()
		m.mu.Lock()
		m.attempts++
		m.mu.Unlock()
		if err == nil {
			if err := m.ack(a, now); err != nil {
				w.tally.duplicates.Add(1)
				w.tally.problem("duplicate: %s: conversation %s: %v", m.from.name, m.conv.id, err)
			}
			w.tally.ackLatency(now.Sub(m.first))
			return
		}
		w.tally.sendError(errorName(err))
		if !retryable(err) {
			m.mu.Lock()
			m.rejected = err
			m.mu.Unlock()
			w.tally.rejected.Add(1)
			w.tally.problem("rejected: %s: conversation %s client id %s: %v", m.from.name, m.conv.id, m.id, err)
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// retryable: what a send may meet while the platform recovers. Anything
// else is a refusal the workload never provokes.
func retryable(err error) bool {
	var we *wire.Error
	if !errors.As(err, &we) {
		return !errors.Is(err, sdk.ErrClosed) && !errors.Is(err, sdk.ErrAuthRejected)
	}
	switch we.Code {
	case chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, chatv1.ErrorCode_ERROR_CODE_INTERNAL,
		chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED, chatv1.ErrorCode_ERROR_CODE_RESYNC:
		return true
	}
	return false
}

func errorName(err error) string {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		return we.Code.String()
	case errors.Is(err, context.DeadlineExceeded):
		return "TIMEOUT"
	case errors.Is(err, sdk.ErrConnectionLost):
		return "CONNECTION_LOST"
	}
	return "CONNECTION"
}

// receive takes every event the device's SDK delivers until it closes.
func (w *workload) receive(d *device) {
	for ev := range d.cl.Events() {
		w.observe(d, ev, time.Now())
	}
}

// observe checks one delivered event against the device's view and the
// ledger.
func (w *workload) observe(d *device, ev *chatv1.Event, now time.Time) {
	conv, seq := ev.GetConversationId(), ev.GetSeq()
	d.mu.Lock()
	v := d.views[conv]
	if v == nil {
		v = newView()
		d.views[conv] = v
	}
	kind, gap, twice := v.observe(ev)
	d.mu.Unlock()
	t := w.tally
	switch kind {
	case repeated:
		t.duplicates.Add(1)
		t.problem("duplicate: %s: conversation %s seq %d delivered twice", d.name, conv, seq)
		return
	case late:
		t.reordered.Add(1)
		t.problem("reordered: %s: conversation %s seq %d delivered after a later seq", d.name, conv, seq)
	case afterGap:
		t.gap(now, d.name, conv, gap)
		select {
		case d.repair <- struct{}{}:
		default:
		}
	}
	if twice != 0 {
		t.duplicates.Add(1)
		t.problem("duplicate: %s: conversation %s: client id %s at seq %d and seq %d", d.name, conv, ev.GetClientMsgId(), twice, seq)
	}
	if ev.GetMessagePosted() == nil {
		return
	}
	m := w.ledger.get(ev.GetClientMsgId())
	if m == nil {
		t.unknown.Add(1)
		t.problem("unknown: %s: conversation %s seq %d: client id %q was never sent", d.name, conv, seq, ev.GetClientMsgId())
		return
	}
	if m.conv.id != conv || m.text != ev.GetMessagePosted().GetText() || m.from.user.id != ev.GetSenderId() {
		t.mismatched.Add(1)
		t.problem("mismatched: %s: conversation %s seq %d: %q from %s, sent %q from %s to %s", d.name, conv, seq,
			ev.GetMessagePosted().GetText(), ev.GetSenderId(), m.text, m.from.user.id, m.conv.id)
	}
	t.deliveries.Add(1)
	if d != m.from {
		t.latency(delivery{msgRef: msgRef{Conv: conv, Seq: seq, FirstAttempt: m.first.UTC()}, Device: d.name, Delivered: now.UTC(),
			LatencyMS: round1(float64(now.Sub(m.first)) / float64(time.Millisecond)), msg: m})
		m.delivered(d, now)
	}
}

// homecoming moves a device that failed over back to its home edge once
// that serves again, by cutting its TCP connection (as a phone changing
// networks would): a client stays on the edge it reconnected to for as
// long as the connection lasts, so after a few edge kills every client
// would sit on one edge and no delivery would cross edges. It checks
// every 10-20 s while the senders run.
func (w *workload) homecoming(ctx context.Context, d *device) {
	for {
		t := time.NewTimer(10*time.Second + rand.N(10*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.stopNew:
			t.Stop()
			return
		case <-t.C:
		}
		d.mu.Lock()
		away := d.connected && d.edge != d.home
		d.mu.Unlock()
		if c := d.tcp.Load(); away && c != nil && w.edgeUp(d.home) {
			(*c).Close()
			w.tally.movedHome.Add(1)
		}
	}
}

// watchStates keeps the device's connection history.
func (w *workload) watchStates(ctx context.Context, d *device) {
	for {
		var s sdk.StateChange
		select {
		case <-ctx.Done():
			return
		case s = <-d.cl.States():
		}
		now := time.Now()
		d.mu.Lock()
		switch s.State {
		case sdk.StateConnected:
			d.connected, d.edge = true, int(d.dialed.Load())
			d.conns = append(d.conns, connection{at: now, edge: d.edge})
		case sdk.StateReconnecting:
			if d.connected {
				d.drops++
			}
			d.connected = false
			w.tally.drop(s.Err)
		case sdk.StateClosed:
			d.connected, d.ended = false, s.Err
		}
		d.mu.Unlock()
		if s.State == sdk.StateClosed {
			return
		}
	}
}

// watchErrors counts what the SDK reports outside any request: failed
// resumes and gaps history could not fill.
func (w *workload) watchErrors(ctx context.Context, d *device) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-d.cl.Errors():
			w.tally.sdkError(d.name, e)
		}
	}
}

// repairLoop reads from history the gaps the SDK left (it delivers a
// later event after a gap history could not fill in time, and reports
// it), as its documentation asks of the app.
func (w *workload) repairLoop(ctx context.Context, d *device) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.repair:
		case <-t.C:
		}
		type todo struct {
			conv string
			gap  seqRange
		}
		var work []todo
		d.mu.Lock()
		for conv, v := range d.views {
			for _, g := range v.gaps {
				work = append(work, todo{conv, g})
			}
		}
		d.mu.Unlock()
		for _, j := range work {
			evs, err := readHistory(ctx, func(ctx context.Context, after uint64) ([]*chatv1.Event, bool, error) {
				p, err := d.cl.History(ctx, &clientv1.GetHistory{ConversationId: j.conv, AfterSeq: proto.Uint64(after), Limit: historyPage})
				return p.GetEvents(), p.GetHasMore(), err
			}, j.gap.from-1, j.gap.to)
			if err != nil {
				continue
			}
			d.mu.Lock()
			n, twice := d.views[j.conv].fill(evs)
			d.mu.Unlock()
			w.tally.filled.Add(int64(n))
			for _, seq := range twice {
				w.tally.duplicates.Add(1)
				w.tally.problem("duplicate: %s: conversation %s: history's seq %d holds a client id the device holds at another seq", d.name, j.conv, seq)
			}
		}
	}
}

// pageFunc reads one page of a conversation's history after a seq.
type pageFunc func(ctx context.Context, after uint64) (events []*chatv1.Event, hasMore bool, err error)

// readHistory pages forward from after up to seq to (0: to the end),
// each page within 10 s.
func readHistory(ctx context.Context, page pageFunc, after, to uint64) ([]*chatv1.Event, error) {
	var out []*chatv1.Event
	for to == 0 || after < to {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		evs, more, err := page(pctx, after)
		cancel()
		if err != nil {
			return out, err
		}
		for _, ev := range evs {
			if to != 0 && ev.GetSeq() > to {
				return out, nil
			}
			out = append(out, ev)
			after = ev.GetSeq()
		}
		if !more || len(evs) == 0 {
			break
		}
	}
	return out, nil
}

// close ends every client.
func (w *workload) close() {
	for _, d := range w.devices {
		if d.cl != nil {
			_ = d.cl.Close()
		}
	}
}

// connectedTo lists the devices connected to edge i now.
func (w *workload) connectedTo(i int) []*device {
	var out []*device
	for _, d := range w.devices {
		d.mu.Lock()
		if d.connected && d.edge == i {
			out = append(out, d)
		}
		d.mu.Unlock()
	}
	return out
}

// connectedAfter is when the device next authenticated after t, and on
// which edge; ok is false if it did not.
func (d *device) connectedAfter(t time.Time) (connection, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		if c.at.After(t) {
			return c, true
		}
	}
	return connection{}, false
}

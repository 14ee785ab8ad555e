package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

const (
	// inFlight is how many sends each user keeps outstanding: with three
	// users, 24 commands in the sequencer's batches at any moment, so a
	// kill nearly always lands inside an open transaction.
	inFlight = 8
	// settleWait bounds how long history and devices may take to catch
	// up after the retries; a correct server needs well under a second.
	settleWait = 30 * time.Second
	// answerWait bounds the retries of one unanswered message.
	answerWait = 90 * time.Second
)

// world is the crash loop's clients and what they know: three users, each
// with a phone that sends and receives and a laptop that only receives,
// in two groups of all three and a direct conversation with each other
// user; and the ledger of every message sent.
type world struct {
	t      *testing.T
	users  []*user
	convs  []*conv
	ledger ledger
	// rng picks which acknowledged messages are resent.
	rng *rand.Rand
}

type user struct {
	id            string
	phone, laptop *device
	convs         []*conv
}

type conv struct {
	id, name string
	members  []*user
}

// newWorld creates the conversations with short-lived clients, then dials
// every device with a resume cursor at 0 in each conversation of its
// user, so each device has every event from seq 1 whether or not presence
// knew it when the first ones were pushed.
func newWorld(ctx context.Context, t *testing.T, url string, seed uint64) (*world, error) {
	w := &world{t: t, rng: rand.New(rand.NewPCG(seed, ^seed))}
	run := uuid.NewString()[:8]
	byName := map[string]*user{}
	for _, name := range []string{"alice", "bob", "carol"} {
		u := &user{id: name + "-" + run}
		w.users = append(w.users, u)
		byName[name] = u
	}
	setup := map[*user]*sdk.Client{}
	defer func() {
		for _, c := range setup {
			c.Close()
		}
	}()
	for _, u := range w.users {
		c, err := dialDevice(ctx, url, u.id, "setup", false, nil)
		if err != nil {
			return nil, err
		}
		setup[u] = c
	}
	for _, spec := range []struct {
		name    string
		creator string
		others  []string
		direct  bool
	}{
		{"group-1", "alice", []string{"bob", "carol"}, false},
		{"group-2", "bob", []string{"carol", "alice"}, false},
		{"alice-bob", "alice", []string{"bob"}, true},
		{"bob-carol", "bob", []string{"carol"}, true},
		{"carol-alice", "carol", []string{"alice"}, true},
	} {
		creator := byName[spec.creator]
		cv := &conv{name: spec.name, members: []*user{creator}}
		var ids []string
		for _, o := range spec.others {
			cv.members = append(cv.members, byName[o])
			ids = append(ids, byName[o].id)
		}
		var a *clientv1.Accepted
		var err error
		if spec.direct {
			a, err = setup[creator].OpenDirect(ctx, ids[0])
		} else {
			a, err = setup[creator].CreateGroup(ctx, spec.name, ids...)
		}
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", spec.name, err)
		}
		cv.id = a.GetConversationId()
		w.convs = append(w.convs, cv)
		for _, m := range cv.members {
			m.convs = append(m.convs, cv)
		}
	}
	names := map[string]string{}
	for _, cv := range w.convs {
		names[cv.id] = cv.name
	}
	for _, u := range w.users {
		var cursors []*clientv1.Cursor
		for _, cv := range u.convs {
			cursors = append(cursors, &clientv1.Cursor{ConversationId: cv.id, LastSeq: 0})
		}
		var err error
		if u.phone, err = newDevice(ctx, t, url, u.id, "phone", false, cursors, names); err != nil {
			return nil, err
		}
		// The laptop speaks protojson, so both subprotocols live through
		// the kills.
		if u.laptop, err = newDevice(ctx, t, url, u.id, "laptop", true, cursors, names); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func dialDevice(ctx context.Context, url, userID, deviceID string, json bool, resume []*clientv1.Cursor) (*sdk.Client, error) {
	tok, err := mint(userID, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	o := sdk.Options{URL: url, Token: tok, DeviceID: deviceID, JSON: json, Resume: resume}
	if resume != nil {
		// Redial quickly: the server is back within a second or two of a
		// kill, and every moment away is a moment not tested.
		o.Reconnect = &sdk.ReconnectPolicy{MinDelay: 50 * time.Millisecond, MaxDelay: 500 * time.Millisecond, AttemptTimeout: 10 * time.Second}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := sdk.Dial(dctx, o)
	if err != nil {
		return nil, fmt.Errorf("connect %s/%s: %w", userID, deviceID, err)
	}
	return c, nil
}

// device is a client connected across every restart, reconnecting and
// resuming by itself, and what it received.
type device struct {
	name string
	c    *sdk.Client
	// convNames names conversations in failure messages.
	convNames map[string]string
	mu        sync.Mutex
	// got is every event received, per conversation, in arrival order.
	got map[string][]*chatv1.Event
	// problems are broken guarantees seen live: an event that is not the
	// next seq of its conversation, an error frame about a gap, the
	// client ending.
	problems []string
	// notes are error frames that do not say anything was lost (a resume
	// that timed out and that the SDK repaired from history).
	notes []string
	// moved has a token after every event.
	moved chan struct{}
	// states are the connection's latest state changes, for a failure
	// message: whether the device was connected, and since when.
	states []string
}

func newDevice(ctx context.Context, t *testing.T, url, userID, deviceID string, json bool, resume []*clientv1.Cursor, convNames map[string]string) (*device, error) {
	c, err := dialDevice(ctx, url, userID, deviceID, json, resume)
	if err != nil {
		return nil, err
	}
	d := &device{name: userID + "/" + deviceID, c: c, convNames: convNames, got: map[string][]*chatv1.Event{}, moved: make(chan struct{}, 1)}
	t.Cleanup(func() { c.Close() })
	go func() {
		for ev := range c.Events() {
			d.add(ev)
		}
		if err := c.Err(); !errors.Is(err, sdk.ErrClosed) {
			d.problem("client ended: %v", err)
		}
	}()
	go func() {
		for {
			select {
			case e := <-c.Errors():
				d.errorFrame(e)
			case s := <-c.States():
				d.state(s)
			case <-c.Done():
				return
			}
		}
	}()
	return d, nil
}

func (d *device) add(ev *chatv1.Event) {
	d.mu.Lock()
	conv := ev.GetConversationId()
	evs := d.got[conv]
	last := uint64(0)
	if len(evs) > 0 {
		last = evs[len(evs)-1].GetSeq()
	}
	if ev.GetSeq() != last+1 {
		d.problems = append(d.problems, fmt.Sprintf("%s: %s delivered seq %d after %d (a gap, a duplicate or out of order)",
			d.name, d.convNames[conv], ev.GetSeq(), last))
	}
	d.got[conv] = append(evs, ev)
	d.mu.Unlock()
	select {
	case d.moved <- struct{}{}:
	default:
	}
}

// errorFrame files an error that answers no request. Only UNAVAILABLE
// may be transient (a resume that timed out while the restarted server
// warmed up, repaired by the SDK from history), unless it names a hole:
// the edge's "history of … gave seq N after M" is issue 13's signature,
// and the SDK's "… missing and not in history" a gap it could not fill.
// Any other code (EVENTS_MISSING, INTERNAL) says something was lost.
func (d *device) errorFrame(e *wire.Error) {
	msg := fmt.Sprintf("%s: error frame %v: %s", d.name, e.Code, e.Message)
	for id, name := range d.convNames {
		msg = strings.ReplaceAll(msg, id, name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE && !strings.Contains(e.Message, "gave seq") && !strings.Contains(e.Message, "not in history") {
		d.notes = append(d.notes, msg)
		return
	}
	d.problems = append(d.problems, msg)
}

// state keeps the last few state changes of the connection.
func (d *device) state(s sdk.StateChange) {
	line := fmt.Sprintf("%s %v", time.Now().Format("15:04:05.000"), s.State)
	switch {
	case s.Err != nil:
		// The cause's tail says it: "connection refused", "EOF".
		msg := s.Err.Error()
		line += fmt.Sprintf(" (…%s)", msg[max(0, len(msg)-40):])
	case s.Resumed != nil:
		line += fmt.Sprintf(" (caught up %d, failed %d)", len(s.Resumed.GetCaughtUp()), len(s.Resumed.GetFailed()))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states = append(d.states[max(0, len(d.states)-5):], line)
}

// lastStates says what the connection went through lately.
func (d *device) lastStates() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.states, "; ")
}

func (d *device) problem(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.problems = append(d.problems, d.name+": "+fmt.Sprintf(format, args...))
}

// take returns and clears the problems and notes filed so far.
func (d *device) take() (problems, notes []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	problems, notes = d.problems, d.notes
	d.problems, d.notes = nil, nil
	return problems, notes
}

// events returns a copy of what conv delivered so far.
func (d *device) events(conv string) []*chatv1.Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got[conv])
}

// waitFor waits until conv delivered at least n events, or until the
// deadline.
func (d *device) waitFor(ctx context.Context, conv string, n int, deadline time.Time) bool {
	for {
		if len(d.events(conv)) >= n {
			return true
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-d.moved:
			t.Stop()
		case <-t.C:
			return len(d.events(conv)) >= n
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

// message is one message sent, and its fate.
type message struct {
	conv   *conv
	sender *user
	id     string
	text   string
	// round is the round it was first sent in.
	round int
	// seq is the acknowledged seq, 0 while unanswered.
	seq uint64
	// how says which answer acknowledged it, for the failure message.
	how string
}

func (m *message) String() string {
	return fmt.Sprintf("%s's message %q (client_msg_id %s) in %s", m.sender.id, m.text, m.id, m.conv.name)
}

// ledger is every message the test sent.
type ledger struct {
	mu  sync.Mutex
	all []*message
}

func (l *ledger) add(cv *conv, u *user, text string, round int) *message {
	m := &message{conv: cv, sender: u, id: sdk.NewClientMsgID(), text: text, round: round}
	l.mu.Lock()
	l.all = append(l.all, m)
	l.mu.Unlock()
	return m
}

// answered records an Accepted for m. A message already acknowledged must
// get its seq again, as a duplicate; a fresh one may not be a duplicate
// unless it was sent before (a retry).
func (l *ledger) answered(m *message, a *clientv1.Accepted, retry bool, how string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case a.GetConversationId() != m.conv.id || a.GetSeq() == 0:
		return fmt.Errorf("%v: answered %v", m, a)
	case m.seq != 0 && (!a.GetDuplicate() || a.GetSeq() != m.seq):
		return fmt.Errorf("%v, acknowledged at seq %d (%s), resent: answered seq %d duplicate=%v, want seq %d duplicate",
			m, m.seq, m.how, a.GetSeq(), a.GetDuplicate(), m.seq)
	case m.seq == 0 && !retry && a.GetDuplicate():
		return fmt.Errorf("%v: its first send was answered as a duplicate of seq %d", m, a.GetSeq())
	case m.seq == 0:
		m.seq, m.how = a.GetSeq(), how
		if a.GetDuplicate() {
			m.how += " (a duplicate: decided before the kill)"
		}
	}
	return nil
}

// unanswered returns the messages still without an answer.
func (l *ledger) unanswered() []*message {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*message
	for _, m := range l.all {
		if m.seq == 0 {
			out = append(out, m)
		}
	}
	return out
}

// acknowledged returns the acknowledged messages of cv, and the highest
// seq among them.
func (l *ledger) acknowledged(cv *conv) ([]*message, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*message
	var head uint64
	for _, m := range l.all {
		if m.conv == cv && m.seq != 0 {
			out = append(out, m)
			head = max(head, m.seq)
		}
	}
	return out, head
}

// sample picks acknowledged messages to resend: each user's last two of
// the previous round (acknowledged just before the kill, the likeliest to
// be in a transaction the kill cut) and one older one.
func (l *ledger) sample(rng *rand.Rand, round int) []*message {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*message
	per := map[*user][]*message{}
	for _, m := range l.all {
		if m.seq != 0 {
			per[m.sender] = append(per[m.sender], m)
		}
	}
	for _, ms := range per {
		var last []*message
		for _, m := range ms {
			if m.round == round-1 {
				last = append(last, m)
			}
		}
		out = append(out, last[max(0, len(last)-2):]...)
		out = append(out, ms[rng.IntN(len(ms))])
	}
	return out
}

// count returns how many messages were sent and how many acknowledged.
func (l *ledger) count() (sent, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.all {
		if m.seq != 0 {
			acked++
		}
	}
	return len(l.all), acked
}

// transient says whether a send failed for a reason a retry with the same
// client message id is for: the connection went with the server, the
// server had not come back yet, or it answered UNAVAILABLE.
func transient(err error) bool {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE
	}
	return errors.Is(err, sdk.ErrConnectionLost) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// trafficUntil has every user send continuously, inFlight at a time, into
// each of its conversations in turn, until kill returns; then it stops
// the senders. Messages cut off stay unanswered in the ledger for the
// next round's retries.
func (w *world) trafficUntil(ctx context.Context, round int, kill func() error) (string, error) {
	sent0, acked0 := w.ledger.count()
	tctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, len(w.users)*inFlight)
	for _, u := range w.users {
		for k := range inFlight {
			wg.Go(func() {
				for i := 0; tctx.Err() == nil; i++ {
					cv := u.convs[(k+i)%len(u.convs)]
					m := w.ledger.add(cv, u, fmt.Sprintf("%s r%d w%d #%d", u.id, round, k, i), round)
					a, err := u.phone.c.SendWithID(tctx, cv.id, m.id, m.text)
					if err != nil {
						if tctx.Err() != nil || transient(err) {
							time.Sleep(10 * time.Millisecond)
							continue
						}
						errs <- fmt.Errorf("%v: %w", m, err)
						return
					}
					if err := w.ledger.answered(m, a, false, fmt.Sprintf("sent in round %d", round)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	kerr := kill()
	// The server is gone: every request in flight has failed or is waiting
	// for a connection, so stopping now cuts off no answer that came.
	stop()
	wg.Wait()
	close(errs)
	err := errors.Join(kerr, <-errs)
	sent, acked := w.ledger.count()
	return fmt.Sprintf("%d sent, %d acknowledged this round, %d unanswered in all", sent-sent0, acked-acked0, sent-acked), err
}

// report is the outcome of one round's checks.
type report struct {
	summary  string
	problems []string
	notes    []string
}

// check runs a round's checks: retries, history, devices.
func (w *world) check(ctx context.Context, round int) report {
	var rep report
	began := time.Now()
	retried, dups, resent, problems := w.resend(ctx, round)
	rep.problems = append(rep.problems, problems...)
	answeredIn := time.Since(began)

	began = time.Now()
	hist := map[*conv][]*chatv1.Event{}
	events := 0
	for _, cv := range w.convs {
		evs, problems := w.checkHistory(ctx, cv)
		rep.problems = append(rep.problems, problems...)
		hist[cv] = evs
		events += len(evs)
	}
	historyIn := time.Since(began)

	began = time.Now()
	problems, notes := w.checkDevices(ctx, hist)
	rep.problems = append(rep.problems, problems...)
	rep.notes = append(rep.notes, notes...)
	devicesIn := time.Since(began)
	for _, u := range w.users {
		for _, d := range []*device{u.phone, u.laptop} {
			problems, notes := d.take()
			rep.problems = append(rep.problems, problems...)
			rep.notes = append(rep.notes, notes...)
		}
	}
	sent, acked := w.ledger.count()
	rep.summary = fmt.Sprintf("retried %d unanswered (%d were duplicates) and resent %d acknowledged in %v; history (%d events, %d messages acknowledged of %d sent) checked in %v; %d devices checked in %v",
		retried, dups, resent, answeredIn.Round(time.Millisecond), events, acked, sent, historyIn.Round(time.Millisecond),
		2*len(w.users), devicesIn.Round(time.Millisecond))
	return rep
}

// resend retries every unanswered message with its client message id
// until it is answered, and resends a sample of acknowledged ones.
func (w *world) resend(ctx context.Context, round int) (retried, dups, resent int, problems []string) {
	todo := w.ledger.unanswered()
	retried = len(todo)
	sample := w.ledger.sample(w.rng, round)
	resent = len(sample)
	todo = append(todo, sample...)
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, inFlight*len(w.users))
	for _, m := range todo {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			wasAcked := m.seq != 0
			a, err := w.answer(ctx, m)
			if err == nil {
				err = w.ledger.answered(m, a, true, fmt.Sprintf("retried after round %d's kill", round-1))
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				problems = append(problems, err.Error())
			} else if !wasAcked && a.GetDuplicate() {
				dups++
			}
		})
	}
	wg.Wait()
	return retried, dups, resent, problems
}

// answer sends m with its client message id until an answer comes.
func (w *world) answer(ctx context.Context, m *message) (*clientv1.Accepted, error) {
	deadline := time.Now().Add(answerWait)
	for {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		a, err := m.sender.phone.c.SendWithID(actx, m.conv.id, m.id, m.text)
		cancel()
		if err == nil {
			return a, nil
		}
		if !transient(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("%v, retried: %w", m, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%v: no answer after %v of retries: %w", m, answerWait, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readHistory pages cv's history from the start through the API.
func readHistory(ctx context.Context, c *sdk.Client, cv *conv) ([]*chatv1.Event, error) {
	var out []*chatv1.Event
	var after uint64
	for {
		p, err := c.History(ctx, &clientv1.GetHistory{ConversationId: cv.id, AfterSeq: proto.Uint64(after), Limit: 200})
		if err != nil {
			return out, fmt.Errorf("history of %s after seq %d: %w", cv.name, after, err)
		}
		out = append(out, p.GetEvents()...)
		if !p.GetHasMore() || len(p.GetEvents()) == 0 {
			return out, nil
		}
		after = p.GetEvents()[len(p.GetEvents())-1].GetSeq()
	}
}

// complete says whether evs is 1..head exactly.
func complete(evs []*chatv1.Event, head uint64) bool {
	if uint64(len(evs)) != head {
		return false
	}
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) {
			return false
		}
	}
	return true
}

// checkHistory waits for cv's history to hold every acknowledged seq, then
// checks it (guarantees 2 and 3). It returns history as read.
func (w *world) checkHistory(ctx context.Context, cv *conv) ([]*chatv1.Event, []string) {
	acked, head := w.ledger.acknowledged(cv)
	head = max(head, 1) // the conversation's creation
	reader := cv.members[0].phone.c
	var evs []*chatv1.Event
	var err error
	for deadline := time.Now().Add(settleWait); ; {
		evs, err = readHistory(ctx, reader, cv)
		if err == nil && complete(evs, head) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return evs, []string{err.Error()}
	}
	var problems []string
	bySeq := map[uint64]*chatv1.Event{}
	type key struct{ sender, id string }
	byKey := map[key]uint64{}
	sent := map[key]*message{}
	for _, m := range acked {
		sent[key{m.sender.id, m.id}] = m
	}
	last := uint64(0)
	for _, ev := range evs {
		s := ev.GetSeq()
		if bySeq[s] != nil {
			problems = append(problems, fmt.Sprintf("%s: history holds seq %d twice", cv.name, s))
		}
		bySeq[s] = ev
		last = max(last, s)
		if s == 1 {
			if ev.GetConversationCreated() == nil {
				problems = append(problems, fmt.Sprintf("%s: seq 1 is not the conversation's creation: %v", cv.name, ev))
			}
			continue
		}
		k := key{ev.GetSenderId(), ev.GetClientMsgId()}
		if ev.GetMessagePosted() == nil {
			problems = append(problems, fmt.Sprintf("%s: seq %d is not a message: %v", cv.name, s, ev))
			continue
		}
		if other, ok := byKey[k]; ok {
			problems = append(problems, fmt.Sprintf("%s: %s's client_msg_id %s holds seqs %d and %d (a retry made a second event)",
				cv.name, k.sender, k.id, other, s))
		}
		byKey[k] = s
		if sent[k] == nil {
			problems = append(problems, fmt.Sprintf("%s: seq %d holds %s's %q (client_msg_id %s), which no acknowledgement names",
				cv.name, s, k.sender, ev.GetMessagePosted().GetText(), k.id))
		}
	}
	if !complete(evs, head) {
		problems = append(problems, fmt.Sprintf("%s: history holds seqs %s, want 1..%d (the highest acknowledged), %v after the retries",
			cv.name, ranges(evs), head, settleWait))
	}
	if last > head {
		problems = append(problems, fmt.Sprintf("%s: history reaches seq %d, past the highest acknowledged, %d", cv.name, last, head))
	}
	for _, m := range acked {
		ev := bySeq[m.seq]
		switch {
		case ev == nil:
			problems = append(problems, fmt.Sprintf("%v: acknowledged at seq %d (%s), which history lacks (it holds %s)",
				m, m.seq, m.how, ranges(evs)))
		case ev.GetSenderId() != m.sender.id || ev.GetClientMsgId() != m.id || ev.GetMessagePosted().GetText() != m.text:
			problems = append(problems, fmt.Sprintf("%v: acknowledged at seq %d (%s), where history holds %s's %q (client_msg_id %s)",
				m, m.seq, m.how, ev.GetSenderId(), ev.GetMessagePosted().GetText(), ev.GetClientMsgId()))
		}
	}
	return evs, problems
}

// checkDevices waits for every device to have each of its conversations
// up to history's head, and compares (guarantee 4).
func (w *world) checkDevices(ctx context.Context, hist map[*conv][]*chatv1.Event) (problems, notes []string) {
	deadline := time.Now().Add(settleWait)
	for _, u := range w.users {
		for _, d := range []*device{u.phone, u.laptop} {
			short := false
			for _, cv := range u.convs {
				want := hist[cv]
				had, began := len(d.events(cv.id)), time.Now()
				d.waitFor(ctx, cv.id, len(want), deadline)
				got := d.events(cv.id)
				if waited := time.Since(began); waited > time.Second {
					notes = append(notes, fmt.Sprintf("%s, %s: had %d of %d events, waited %v for the rest (connection lately: %s)",
						d.name, cv.name, had, len(want), waited.Round(time.Millisecond), d.lastStates()))
				}
				if p := compareEvents(got, want); p != "" {
					problems = append(problems, fmt.Sprintf("%s, %s: %s", d.name, cv.name, p))
					short = true
				}
			}
			if short {
				problems = append(problems, fmt.Sprintf("%s: connection lately: %s", d.name, d.lastStates()))
			}
		}
	}
	return problems, notes
}

// compareEvents says how what a device received differs from history, or
// "" when it is the same.
func compareEvents(got, want []*chatv1.Event) string {
	for i := range min(len(got), len(want)) {
		if !proto.Equal(got[i], want[i]) {
			return fmt.Sprintf("event %d received is seq %d (id %s), history's is seq %d (id %s); received %s, history %s",
				i+1, got[i].GetSeq(), got[i].GetEventId(), want[i].GetSeq(), want[i].GetEventId(), ranges(got), ranges(want))
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("received %d events (seqs %s), history holds %d (seqs %s)", len(got), ranges(got), len(want), ranges(want))
	}
	return ""
}

// ranges renders the seqs of evs as runs: "1..202, 204..210".
func ranges(evs []*chatv1.Event) string {
	if len(evs) == 0 {
		return "none"
	}
	var parts []string
	from, to := evs[0].GetSeq(), evs[0].GetSeq()
	flush := func() {
		if from == to {
			parts = append(parts, fmt.Sprint(from))
		} else {
			parts = append(parts, fmt.Sprintf("%d..%d", from, to))
		}
	}
	for _, ev := range evs[1:] {
		if s := ev.GetSeq(); s == to+1 {
			to = s
			continue
		}
		flush()
		from, to = ev.GetSeq(), ev.GetSeq()
	}
	flush()
	return strings.Join(parts, ", ")
}

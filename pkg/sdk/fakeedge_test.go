package sdk

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// fakeEdge speaks just enough of the edge's protocol to drive the SDK
// through reconnects deterministically: a log per conversation, resume
// from cursors, pings, sends and history pages, and hooks to cut, stall
// or refuse connections.
//
// Tokens are "ok:USER" (accepted as USER) or "expired"; anything else is
// invalid.
type fakeEdge struct {
	t   *testing.T
	srv *httptest.Server

	// mu guards everything below and serialises writes of pushes, so a
	// resume's catch-up and live events cannot interleave.
	mu       sync.Mutex
	log      map[string][]*chatv1.Event
	sent     map[string]uint64 // client msg id → seq
	conns    map[*fakeConn]bool
	badConvs map[string]bool // history of these answers UNAVAILABLE
	revoked  map[string]bool // tokens refused from now on
	// failResume: a resume of these reports them failed (history behind,
	// say), sending nothing.
	failResume map[string]bool
	onRequest  func(fc *fakeConn, f *clientv1.ClientFrame) bool
	// tooMany refuses that many authenticates as the edge refuses a user
	// with too many connections: RATE_LIMITED with retryAfter, close 4029.
	tooMany    int
	retryAfter time.Duration
	// gate, when set, holds every new WebSocket handshake until closed.
	gate chan struct{}
	// busy refuses that many upgrades as an edge taking a storm in turn
	// does: 503 with Retry-After busyAfter (whole seconds).
	busy      int
	busyAfter string

	// accepted gets every authenticated connection.
	accepted chan *fakeConn
	dials    atomic.Int32
	// dialed gets the dial count at every handshake that arrives.
	dialed chan int32
}

type fakeConn struct {
	e      *fakeEdge
	ws     *websocket.Conn
	format wire.Format
	auth   *clientv1.Authenticate
	gone   chan struct{}
}

func newFakeEdge(t *testing.T) *fakeEdge {
	e := &fakeEdge{
		t: t, log: map[string][]*chatv1.Event{}, sent: map[string]uint64{}, conns: map[*fakeConn]bool{},
		badConvs: map[string]bool{}, revoked: map[string]bool{}, failResume: map[string]bool{}, accepted: make(chan *fakeConn, 64), dialed: make(chan int32, 64),
	}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeEdge) url() string { return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/ws" }

func (e *fakeEdge) serve(w http.ResponseWriter, r *http.Request) {
	select {
	case e.dialed <- e.dials.Add(1):
	default: // nobody is counting
	}
	e.mu.Lock()
	gate := e.gate
	busy := e.busy > 0
	if busy {
		e.busy--
	}
	e.mu.Unlock()
	if busy {
		w.Header().Set("Retry-After", e.busyAfter)
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolProto, wire.SubprotocolJSON}})
	if err != nil {
		return
	}
	format, _ := wire.FormatFor(ws.Subprotocol())
	fc := &fakeConn{e: e, ws: ws, format: format, gone: make(chan struct{})}
	defer close(fc.gone)
	defer ws.CloseNow()
	ctx := context.Background()
	_, data, err := ws.Read(ctx)
	if err != nil {
		return
	}
	f, derr := wire.DecodeClient(format, data)
	if derr != nil || f.GetAuthenticate() == nil {
		return
	}
	fc.auth = f.GetAuthenticate()
	user, code := "", chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED
	e.mu.Lock()
	revoked := e.revoked[fc.auth.GetToken()]
	full := e.tooMany > 0
	if full {
		e.tooMany--
	}
	e.mu.Unlock()
	if full {
		fc.write(&clientv1.ServerFrame{RequestId: f.GetRequestId(), Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
			Code: chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED, Message: "too many connections", RetryAfterMs: uint32(e.retryAfter.Milliseconds()),
		}}})
		ws.Close(4029, "too many connections")
		return
	}
	switch tok := fc.auth.GetToken(); {
	case revoked:
	case strings.HasPrefix(tok, "ok:"):
		user, code = strings.TrimPrefix(tok, "ok:"), 0
	case tok == "expired":
		code = chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED
	}
	if code != 0 {
		fc.write(wire.ErrorFrame(f.GetRequestId(), wire.Errorf(code, "no")))
		ws.Close(4001, code.String())
		return
	}
	device := fc.auth.GetDeviceId()
	if device == "" {
		device = "server-chosen-device"
	}
	e.mu.Lock()
	fc.write(&clientv1.ServerFrame{RequestId: f.GetRequestId(), Frame: &clientv1.ServerFrame_Authenticated{
		Authenticated: &clientv1.Authenticated{UserId: user, DeviceId: device, SessionId: "s" + time.Now().Format("150405.000000000")},
	}})
	if cursors := fc.auth.GetResume(); len(cursors) > 0 {
		done := &clientv1.Resumed{}
		for _, cur := range cursors {
			if e.failResume[cur.GetConversationId()] {
				fc.write(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
					Code: chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, Message: "resume: history behind", ConversationId: cur.GetConversationId(),
				}}})
				done.Failed = append(done.Failed, cur)
				continue
			}
			log := e.log[cur.GetConversationId()]
			if from := cur.GetLastSeq(); from < uint64(len(log)) {
				fc.write(eventsFrame(log[from:]...))
			}
			done.CaughtUp = append(done.CaughtUp, &clientv1.Cursor{ConversationId: cur.GetConversationId(), LastSeq: uint64(len(log))})
		}
		fc.write(&clientv1.ServerFrame{RequestId: f.GetRequestId(), Frame: &clientv1.ServerFrame_Resumed{Resumed: done}})
	}
	e.conns[fc] = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.conns, fc)
		e.mu.Unlock()
	}()
	select {
	case e.accepted <- fc:
	case <-time.After(5 * time.Second):
		e.t.Errorf("fake edge: nobody takes connection %d", e.dials.Load())
		return
	}
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		f, derr := wire.DecodeClient(format, data)
		if derr != nil {
			fc.write(wire.ErrorFrame("", derr))
			continue
		}
		e.mu.Lock()
		hook := e.onRequest
		e.mu.Unlock()
		if hook != nil && hook(fc, f) {
			continue
		}
		if out := e.answer(user, f); out != nil {
			out.RequestId = f.GetRequestId()
			e.mu.Lock()
			fc.write(out)
			e.mu.Unlock()
		}
	}
}

func (e *fakeEdge) answer(user string, f *clientv1.ClientFrame) *clientv1.ServerFrame {
	switch b := f.GetFrame().(type) {
	case *clientv1.ClientFrame_Ping:
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Pong{Pong: &clientv1.Pong{}}}
	case *clientv1.ClientFrame_GetHistory:
		return e.history(b.GetHistory)
	case *clientv1.ClientFrame_SendMessage:
		acc := e.send(user, b.SendMessage)
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Accepted{Accepted: acc}}
	}
	return wire.ErrorFrame("", wire.Errorf(chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, "fake edge"))
}

// send sequences a message once per client msg id and pushes it live.
func (e *fakeEdge) send(user string, m *clientv1.SendMessage) *clientv1.Accepted {
	e.mu.Lock()
	defer e.mu.Unlock()
	conv := m.GetConversationId()
	if seq, ok := e.sent[m.GetClientMsgId()]; ok {
		return &clientv1.Accepted{ClientMsgId: m.GetClientMsgId(), ConversationId: conv, Seq: seq, Duplicate: true}
	}
	ev := e.appendLocked(conv, user, m.GetText())
	ev.ClientMsgId = m.GetClientMsgId()
	e.sent[m.GetClientMsgId()] = ev.GetSeq()
	e.pushLocked(ev)
	return &clientv1.Accepted{ClientMsgId: m.GetClientMsgId(), ConversationId: conv, Seq: ev.GetSeq()}
}

func (e *fakeEdge) history(q *clientv1.GetHistory) *clientv1.ServerFrame {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.badConvs[q.GetConversationId()] {
		return wire.ErrorFrame("", wire.Errorf(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "history down"))
	}
	log := e.log[q.GetConversationId()]
	from := min(q.GetAfterSeq(), uint64(len(log)))
	to := min(from+uint64(max(q.GetLimit(), 1)), uint64(len(log)))
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_History{History: &clientv1.HistoryPage{
		ConversationId: q.GetConversationId(), Events: log[from:to], HasMore: to < uint64(len(log)),
	}}}
}

func (e *fakeEdge) appendLocked(conv, sender, text string) *chatv1.Event {
	ev := &chatv1.Event{ConversationId: conv, Seq: uint64(len(e.log[conv]) + 1), SenderId: sender,
		Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: text}}}
	e.log[conv] = append(e.log[conv], ev)
	return ev
}

func (e *fakeEdge) pushLocked(evs ...*chatv1.Event) {
	for fc := range e.conns {
		fc.write(eventsFrame(evs...))
	}
}

// publish appends n messages to conv and pushes them, one frame each, to
// every connection; it returns them.
func (e *fakeEdge) publish(conv string, n int) []*chatv1.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*chatv1.Event
	for range n {
		ev := e.appendLocked(conv, "bob", "hi")
		e.pushLocked(ev)
		out = append(out, ev)
	}
	return out
}

// record appends n messages to conv without pushing them: they happened
// while nobody was connected.
func (e *fakeEdge) record(conv string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for range n {
		e.appendLocked(conv, "bob", "hi")
	}
}

// repush pushes events of conv's log again (as a fan-out replay would) to
// every connection.
func (e *fakeEdge) repush(conv string, seqs ...uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var evs []*chatv1.Event
	for _, s := range seqs {
		evs = append(evs, e.log[conv][s-1])
	}
	e.pushLocked(evs...)
}

func (e *fakeEdge) setHook(h func(fc *fakeConn, f *clientv1.ClientFrame) bool) {
	e.mu.Lock()
	e.onRequest = h
	e.mu.Unlock()
}

// write sends a frame; callers hold e.mu for pushes. A client that stops
// reading fails the write after a while instead of hanging the test.
func (fc *fakeConn) write(f *clientv1.ServerFrame) {
	data, err := wire.Encode(fc.format, f)
	if err != nil {
		fc.e.t.Errorf("fake edge: encode: %v", err)
		return
	}
	typ := websocket.MessageBinary
	if fc.format == wire.JSON {
		typ = websocket.MessageText
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = fc.ws.Write(ctx, typ, data)
}

func eventsFrame(evs ...*chatv1.Event) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Events{Events: &clientv1.EventBatch{Events: evs}}}
}

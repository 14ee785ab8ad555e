package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// pair returns a server-side conn (no read loop), accepted as serveWS
// accepts (with the small hijack buffers), and the client socket.
func pair(t testing.TB, queueLimit int) (*conn, *websocket.Conn) {
	t.Helper()
	lim := DefaultLimits()
	lim.defaults()
	svc := &Service{cfg: Config{QueueLimit: queueLimit, WriteTimeout: 5 * time.Second}, log: slog.New(slog.DiscardHandler), stats: newStats(metrics.NewRegistry()),
		lim: newLimiter(lim, metrics.NewRegistry()), tracer: tracing.Tracer(nil)}
	type accept struct {
		ws   *websocket.Conn
		gate *gate
	}
	accepted := make(chan accept, 1)
	heard := new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &smallHijacker{ResponseWriter: w, heard: heard, writeTimeout: svc.cfg.WriteTimeout}
		ws, err := websocket.Accept(hj, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolProto}})
		if err != nil {
			t.Error(err)
			return
		}
		accepted <- accept{ws, hj.gate}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolProto}})
	if err != nil {
		t.Fatal(err)
	}
	client.SetReadLimit(1 << 24)
	t.Cleanup(func() { client.CloseNow() })
	a := <-accepted
	c := &conn{svc: svc, ws: a.ws, gate: a.gate, format: wire.Binary, user: "u", session: "s", lim: connLimits{heard: heard}}
	return c, client
}

// nextFrame reads and decodes the next frame the client gets.
func nextFrame(ctx context.Context, t testing.TB, client *websocket.Conn) *clientv1.ServerFrame {
	t.Helper()
	_, data, err := client.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.DecodeServer(wire.Binary, data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestWriterCoalesces: events queued while a write is in flight leave in
// one frame.
func TestWriterCoalesces(t *testing.T) {
	c, client := pair(t, 10_000)
	c.mu.Lock()
	c.writing = true // as if a write were in flight
	c.mu.Unlock()
	const n = 500
	for i := range n {
		if !c.push(&chatv1.Event{ConversationId: "c", Seq: uint64(i + 1)}) {
			t.Fatal("push refused")
		}
	}
	go c.writeLoop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs := nextFrame(ctx, t, client).GetEvents().GetEvents()
	if len(evs) != n {
		t.Fatalf("first frame carries %d events, want all %d", len(evs), n)
	}
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) {
			t.Fatalf("position %d has seq %d", i, ev.GetSeq())
		}
	}
}

// TestSlowConnectionIsDroppedWithResync: a full queue closes the connection
// with the resync code instead of dropping events or growing without bound.
func TestSlowConnectionIsDroppedWithResync(t *testing.T) {
	c, client := pair(t, 10)
	c.mu.Lock()
	c.writing = true // the writer is stuck on a slow socket
	c.mu.Unlock()
	for i := range 10 {
		if !c.push(&chatv1.Event{Seq: uint64(i + 1)}) {
			t.Fatalf("push %d refused below the limit", i)
		}
	}
	if c.push(&chatv1.Event{Seq: 11}) {
		t.Fatal("push beyond the limit accepted")
	}
	c.mu.Lock()
	queued := len(c.queue)
	c.mu.Unlock()
	if queued != 0 {
		t.Fatalf("dropped connection still holds %d queued items", queued)
	}
	if c.push(&chatv1.Event{Seq: 12}) {
		t.Fatal("push to a dropped connection accepted")
	}
	// The stuck write completes; the writer goes round its loop, finds the
	// connection dropped and owes the client the resync close.
	go c.writeLoop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wantResync(ctx, t, client)
}

// wantResync: the client is told RESYNC by an error frame, then closed
// with 4000.
func wantResync(ctx context.Context, t *testing.T, client *websocket.Conn) {
	t.Helper()
	_, data, err := client.Read(ctx)
	if err != nil {
		t.Fatalf("client saw %v, want an error RESYNC frame before close %d", err, CloseResync)
	}
	if f, err := wire.DecodeServer(wire.Binary, data); err != nil || f.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_RESYNC || f.GetRequestId() != "" {
		t.Fatalf("client got %v (%v), want an error RESYNC without a request id", f, err)
	}
	if _, _, err := client.Read(ctx); websocket.CloseStatus(err) != CloseResync {
		t.Fatalf("client saw %v after the error frame, want close %d", err, CloseResync)
	}
}

// TestIdleConnectionIsDroppedWithResync: with no writer running when the
// queue overflows (the client read everything so far), the edge still
// sends the error RESYNC, then closes with 4000.
func TestIdleConnectionIsDroppedWithResync(t *testing.T) {
	c, client := pair(t, 4)
	// An ephemeral-free queue that overflows with no writer at work: the
	// items go straight into the queue under the lock, as if the writer
	// had not started yet.
	c.mu.Lock()
	for i := range 4 {
		c.queue = append(c.queue, item{event: &chatv1.Event{Seq: uint64(i + 1)}, size: 1})
	}
	c.mu.Unlock()
	if c.push(&chatv1.Event{Seq: 5}) {
		t.Fatal("push beyond the limit accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wantResync(ctx, t, client)
}

// TestResyncCloseOutlivesTheReadLoop: a frame read after the queue was
// dropped ends the read loop while the writer, stuck on the full socket,
// still owes the resync close. Ending the read loop must not close the
// socket under it: TestSlowReaderIsResynced (services/integration) saw
// "unexpected EOF" mid-frame instead of 4000 when its device, stalled,
// sent a frame before reading again.
func TestResyncCloseOutlivesTheReadLoop(t *testing.T) {
	c, client := pair(t, 10)
	c.mu.Lock()
	c.writing = true // the writer is stuck on a slow socket
	c.mu.Unlock()
	for i := range 11 {
		c.push(&chatv1.Event{Seq: uint64(i + 1)})
	}
	c.mu.Lock()
	owed := c.resync
	c.mu.Unlock()
	if !owed {
		t.Fatal("the overflow left no resync close to the writer")
	}
	// The read loop ends (awaitRoom finds the connection closed) before
	// the stuck write completes.
	c.closeSocket()
	go c.writeLoop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wantResync(ctx, t, client)
}

// TestReceiptsGiveWayToEvents: receipts take at most half the queue, are
// shed first when events need the room, never drop the connection, and
// leave coalesced (one per device, the latest).
func TestReceiptsGiveWayToEvents(t *testing.T) {
	const limit = 10
	c, client := pair(t, limit)
	c.mu.Lock()
	c.writing = true // as if a write were in flight: everything stays queued
	c.mu.Unlock()
	rcpt := func(device string, seq uint64) *chatv1.Receipt {
		return &chatv1.Receipt{ConversationId: "c", UserId: "bob", DeviceId: device, DeliveredSeq: seq}
	}
	for i := range limit / 2 {
		if !c.pushEphemeral(item{receipt: rcpt("phone", uint64(i+1))}) {
			t.Fatalf("receipt %d refused below half the queue", i)
		}
	}
	if c.pushEphemeral(item{receipt: rcpt("phone", 99)}) {
		t.Fatal("a receipt was queued past half the queue")
	}
	// Events fill the queue: the receipts make room rather than the
	// connection being dropped.
	for i := range limit {
		if !c.push(&chatv1.Event{ConversationId: "c", Seq: uint64(i + 1)}) {
			t.Fatalf("event %d refused: receipts were not shed", i+1)
		}
	}
	if got := c.svc.stats.shedEphemeral.Load(); got != 1+limit/2 {
		t.Fatalf("shed %d receipts, want %d", got, 1+limit/2)
	}
	// Now full of events: the next event drops the connection as before.
	if c.push(&chatv1.Event{ConversationId: "c", Seq: limit + 1}) {
		t.Fatal("event queued past the limit")
	}
	rec := httptest.NewRecorder()
	c.svc.metricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`parley_ephemeral_shed_total{service="edge"} 6`, `parley_resyncs_total{service="edge"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}

	// Coalescing, on a fresh connection: three positions of one device and
	// one of another leave as one frame of two receipts, the latest each.
	c, client = pair(t, limit)
	c.mu.Lock()
	c.writing = true
	c.mu.Unlock()
	for _, r := range []*chatv1.Receipt{rcpt("phone", 1), rcpt("laptop", 1), rcpt("phone", 2), rcpt("phone", 3)} {
		if !c.pushEphemeral(item{receipt: r}) {
			t.Fatal("receipt refused")
		}
	}
	c.push(&chatv1.Event{ConversationId: "c", Seq: 1})
	go c.writeLoop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var frames []string
	for len(frames) < 2 {
		f := nextFrame(ctx, t, client)
		switch {
		case f.GetEvents() != nil:
			frames = append(frames, fmt.Sprintf("events %d", len(f.GetEvents().GetEvents())))
		case f.GetReceipts() != nil:
			var s []string
			for _, r := range f.GetReceipts().GetReceipts() {
				s = append(s, fmt.Sprintf("%s@%d", r.GetDeviceId(), r.GetDeliveredSeq()))
			}
			frames = append(frames, "receipts "+strings.Join(s, " "))
		}
	}
	if got := strings.Join(frames, "; "); got != "events 1; receipts phone@3 laptop@1" {
		t.Fatalf("frames: %s", got)
	}
}

// TestTypingCoalesces: indicators of one user in one conversation leave as
// one, the latest; they are shed like receipts.
func TestTypingCoalesces(t *testing.T) {
	ind := func(conv, user string, stopped bool) *chatv1.Typing {
		return &chatv1.Typing{ConversationId: conv, UserId: user, Stopped: stopped}
	}
	var batch []*chatv1.Typing
	for _, i := range []*chatv1.Typing{ind("c", "bob", false), ind("c", "carol", false), ind("d", "bob", false), ind("c", "bob", true)} {
		batch = typingRule.add(batch, i)
	}
	var got []string
	for _, b := range batch {
		got = append(got, fmt.Sprintf("%s/%s/%v", b.GetConversationId(), b.GetUserId(), b.GetStopped()))
	}
	if s := strings.Join(got, " "); s != "c/bob/true c/carol/false d/bob/false" {
		t.Fatalf("coalesced to %s", s)
	}
	if !(item{typing: ind("c", "bob", false)}).ephemeral() || (item{event: &chatv1.Event{}}).ephemeral() {
		t.Fatal("typing must be ephemeral, events not")
	}
}

// TestFlagsCoalesce: flags of one conversation leave as one, the highest
// version, whatever order they were queued in; they are shed like
// receipts (the conversation list has them).
func TestFlagsCoalesce(t *testing.T) {
	fl := func(conv string, version uint64, pinned bool) *chatv1.ConversationFlags {
		return &chatv1.ConversationFlags{ConversationId: conv, UserId: "u", Version: version, Pinned: pinned}
	}
	var batch []*chatv1.ConversationFlags
	for _, f := range []*chatv1.ConversationFlags{fl("c", 1, true), fl("d", 1, true), fl("c", 3, true), fl("c", 2, false)} {
		batch = flagsRule.add(batch, f)
	}
	var got []string
	for _, b := range batch {
		got = append(got, fmt.Sprintf("%s/v%d/%v", b.GetConversationId(), b.GetVersion(), b.GetPinned()))
	}
	if s := strings.Join(got, " "); s != "c/v3/true d/v1/true" {
		t.Fatalf("coalesced to %s", s)
	}
	if !(item{flags: fl("c", 1, true)}).ephemeral() {
		t.Fatal("flags must be ephemeral")
	}
}

// TestEveryStateKindGivesWay: typing indicators, presence changes and
// flags take at most half the queue and are shed for events, like
// receipts, so a flood of any of them never drops a connection.
func TestEveryStateKindGivesWay(t *testing.T) {
	const limit = 10
	kinds := map[string]func(i int) item{
		"typing": func(i int) item {
			return item{typing: &chatv1.Typing{ConversationId: "c", UserId: fmt.Sprint("u", i)}}
		},
		"presence": func(i int) item {
			return item{presence: &chatv1.Presence{UserId: fmt.Sprint("u", i), State: chatv1.PresenceState_PRESENCE_STATE_ONLINE}}
		},
		"flags": func(i int) item {
			return item{flags: &chatv1.ConversationFlags{ConversationId: fmt.Sprint("c", i), UserId: "u", Version: 1}}
		},
	}
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			c, _ := pair(t, limit)
			c.mu.Lock()
			c.writing = true // everything stays queued
			c.mu.Unlock()
			for i := range limit / 2 {
				if !c.pushEphemeral(mk(i)) {
					t.Fatalf("%s %d refused below half the queue", name, i)
				}
			}
			if c.pushEphemeral(mk(limit)) {
				t.Fatalf("a %s item was queued past half the queue", name)
			}
			for i := range limit {
				if !c.push(&chatv1.Event{ConversationId: "c", Seq: uint64(i + 1)}) {
					t.Fatalf("event %d refused: %s items were not shed", i+1, name)
				}
			}
			if got := c.svc.stats.shedEphemeral.Load(); got != 1+limit/2 {
				t.Fatalf("shed %d %s items, want %d", got, name, 1+limit/2)
			}
		})
	}
}

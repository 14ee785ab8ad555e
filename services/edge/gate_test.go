package edge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// frame builds one frame: masked as a client sends, or not as a server.
func frame(op byte, fin, masked bool, payload []byte) []byte {
	var f bytes.Buffer
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f.WriteByte(b0)
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		f.WriteByte(m | byte(n))
	case n <= 0xffff:
		f.WriteByte(m | 126)
		_ = binary.Write(&f, binary.BigEndian, uint16(n))
	default:
		f.WriteByte(m | 127)
		_ = binary.Write(&f, binary.BigEndian, uint64(n))
	}
	if !masked {
		f.Write(payload)
		return f.Bytes()
	}
	key := []byte{9, 8, 7, 6}
	f.Write(key)
	for i, b := range payload {
		f.WriteByte(b ^ key[i%4])
	}
	return f.Bytes()
}

// frameStream is frames of many lengths, with where each ends.
func frameStream(r *rand.Rand) ([]byte, []int) {
	var stream []byte
	var ends []int
	for _, n := range []int{0, 1, 13, 125, 126, 127, 200, 0xffff, 0x10000, 70_000, 3} {
		for _, masked := range []bool{true, false} {
			op := byte(0x2)
			if n <= maxControlPayload && r.IntN(2) == 0 {
				op = opPing
			}
			stream = append(stream, frame(op, true, masked, bytes.Repeat([]byte{byte(n)}, n))...)
			ends = append(ends, len(stream))
		}
	}
	return stream, ends
}

// TestFrameCursorStopsAtEachFrame: reading no more than want() at a time
// lands on every frame's end and never past it, however the reads are
// cut, and the cursor is between frames exactly there.
func TestFrameCursorStopsAtEachFrame(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	stream, ends := frameStream(r)
	for round := range 50 {
		var c frameCursor
		pos, next := 0, 0
		for pos < len(stream) {
			n := min(int(c.want()), 1+r.IntN(300), len(stream)-pos)
			if n <= 0 {
				t.Fatalf("round %d: want() = %d at %d", round, c.want(), pos)
			}
			c.feed(stream[pos : pos+n])
			pos += n
			if pos > ends[next] {
				t.Fatalf("round %d: read to %d, past the frame ending at %d", round, pos, ends[next])
			}
			if pos == ends[next] {
				if !c.atBoundary() {
					t.Fatalf("round %d: not between frames at the end of frame %d (%d)", round, next, pos)
				}
				next++
			} else if c.atBoundary() {
				t.Fatalf("round %d: between frames at %d, inside frame %d", round, pos, next)
			}
		}
	}
}

// FuzzFrameCursor: on any bytes, cut anywhere, the cursor neither panics
// nor stalls, and ends where feeding the bytes one at a time ends.
func FuzzFrameCursor(f *testing.F) {
	stream, _ := frameStream(rand.New(rand.NewPCG(3, 4)))
	f.Add(stream[:300], uint64(7))
	f.Add([]byte{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		var one frameCursor
		for i := range b {
			one.feed(b[i : i+1])
		}
		r := rand.New(rand.NewPCG(seed, seed))
		var c frameCursor
		for pos := 0; pos < len(b); {
			w := c.want()
			if w == 0 {
				t.Fatalf("want() = 0 at %d", pos)
			}
			n := min(w, uint64(1+r.IntN(64)), uint64(len(b)-pos))
			c.feed(b[pos : pos+int(n)])
			pos += int(n)
		}
		if c != one {
			t.Fatalf("cut reads end at %+v, byte by byte at %+v", c, one)
		}
	})
}

// recordConn is a net.Conn that keeps what is written to it.
type recordConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *recordConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

// TestGateWritesControlBetweenFrames: a pong asked for while a frame is
// half written follows that frame, and the frame's start, held, goes out
// with its rest in one write.
func TestGateWritesControlBetweenFrames(t *testing.T) {
	rc := &recordConn{}
	g := newGate(rc, nil, new(atomic.Int64), time.Second)
	data := frame(0x2, true, false, bytes.Repeat([]byte("x"), 300))
	if _, err := g.Write(data[:heldBytes]); err != nil {
		t.Fatal(err)
	}
	if rc.out.Len() != 0 {
		t.Fatalf("%d bytes of a frame's start written before its rest", rc.out.Len())
	}
	if err := g.control(opPong, []byte("p1")); err != nil {
		t.Fatal(err)
	}
	if rc.out.Len() != 0 {
		t.Fatal("a pong was written inside a frame")
	}
	if _, err := g.Write(data[heldBytes:]); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, data...), frame(opPong, true, false, []byte("p1"))...)
	if !bytes.Equal(rc.out.Bytes(), want) {
		t.Fatalf("wrote %x\nwant  %x", rc.out.Bytes(), want)
	}
	rc.out.Reset()
	if err := g.control(opPing, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rc.out.Bytes(), []byte{0x80 | opPing, 0}) {
		t.Fatalf("a ping between frames wrote %x", rc.out.Bytes())
	}
}

// gateServer accepts through smallHijacker and echoes every message with
// a read loop shaped like the edge's: it waits in the gate between
// messages. pings counts the pings coder/websocket saw; gates gets each
// connection's gate.
func gateServer(t *testing.T, pings *atomic.Int64, gates chan<- *gate, accepted chan<- *websocket.Conn) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &smallHijacker{ResponseWriter: w}
		ws, err := websocket.Accept(hj, r, &websocket.AcceptOptions{
			OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
		})
		if err != nil {
			t.Error(err)
			return
		}
		ws.SetReadLimit(1 << 20)
		if gates != nil {
			gates <- hj.gate
		}
		if accepted != nil {
			accepted <- ws
		}
		go func() {
			defer ws.CloseNow()
			ctx := context.Background()
			for {
				if _, err := hj.gate.await(); err != nil {
					return
				}
				typ, data, err := ws.Read(ctx)
				if err != nil {
					return
				}
				if err := ws.Write(ctx, typ, data); err != nil {
					return
				}
			}
		}()
	}))
	t.Cleanup(srv.Close)
	return srv
}

func dialGate(t *testing.T, srv *httptest.Server) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestGateAnswersPingsBetweenMessages: a client's pings between messages
// are answered by the gate, so coder/websocket's reader never sees them
// (the read loop never parks inside it), and messages of every size
// around the buffers' go through intact both ways.
func TestGateAnswersPingsBetweenMessages(t *testing.T) {
	var pings atomic.Int64
	srv := gateServer(t, &pings, nil, nil)
	c := dialGate(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// coder/websocket's client reads a pong only while it reads.
	msgs := make(chan []byte)
	go func() {
		for {
			_, got, err := c.Read(ctx)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- got
		}
	}()
	for i, n := range []int{1, 14, 15, 16, 17, 125, 126, 255, 257, 4079, 4080, 4096, 4097, 65535, 65536, 100_000} {
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping before a %d-byte message: %v", n, err)
		}
		msg := bytes.Repeat([]byte{byte(i)}, n)
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		if got := <-msgs; !bytes.Equal(got, msg) {
			t.Fatalf("%d-byte message came back as %d bytes", n, len(got))
		}
	}
	if n := pings.Load(); n != 0 {
		t.Fatalf("coder/websocket's reader answered %d pings; the gate should have", n)
	}
}

// TestGatePingIsAnswered: a ping the gate sends is answered by the client
// and noted as heard.
func TestGatePingIsAnswered(t *testing.T) {
	var pings atomic.Int64
	gates := make(chan *gate, 1)
	srv := gateServer(t, &pings, gates, nil)
	c := dialGate(t, srv)
	g := <-gates
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The client answers pings while it reads.
	go func() { _, _, _ = c.Read(ctx) }()
	for range 3 {
		sent := time.Now().UnixNano()
		if err := g.control(opPing, []byte("k")); err != nil {
			t.Fatal(err)
		}
		for g.heard.Load() < sent {
			if ctx.Err() != nil {
				t.Fatal("the client's pong was never heard")
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// TestGateCloseWhileWaiting: a close handshake started on another
// goroutine while the read loop waits in the gate completes with the
// client's answer, well before coder/websocket's 5 s bound.
func TestGateCloseWhileWaiting(t *testing.T) {
	var pings atomic.Int64
	accepted := make(chan *websocket.Conn, 1)
	srv := gateServer(t, &pings, nil, accepted)
	for range 5 {
		c := dialGate(t, srv)
		ws := <-accepted
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// The client reads, so it sees the close and answers it.
		read := make(chan error, 1)
		go func() { _, _, err := c.Read(ctx); read <- err }()
		time.Sleep(20 * time.Millisecond) // the server's loop is waiting
		start := time.Now()
		if err := ws.Close(websocket.StatusGoingAway, "bye"); err != nil {
			t.Fatalf("close: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("close took %v: the handshake did not see the client's answer", d)
		}
		var ce websocket.CloseError
		if err := <-read; !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway {
			t.Fatalf("the client read %v, want close %d", err, websocket.StatusGoingAway)
		}
		cancel()
	}
}

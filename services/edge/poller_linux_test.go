//go:build linux

package edge

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"
)

// TestIdleConnectionParks: with a poller, an idle connection's read loop
// ends, its goroutine with it, and the connection waits in the poller; a
// frame from the client starts the loop again and is answered; a close
// while it is parked starts the loop to end the connection.
func TestIdleConnectionParks(t *testing.T) {
	c, client := pair(t, 64)
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	c.svc.poller = p
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go p.run(ctx)
	c.svc.cfg.MaxFrameBytes = 1 << 16
	c.session = "" // this service has no hub or presence to leave
	c.lim.user = &userLimits{}
	c.svc.live.add(c)
	c.gate.setOwner(c)
	go c.readLoop()
	parked := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.parked[c.gate.fd] == c
	}
	waitParked := func(when string) {
		t.Helper()
		for !parked() {
			if ctx.Err() != nil {
				t.Fatalf("%s: the connection never parked", when)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitParked("at the start")
	data, err := wire.Encode(wire.Binary, pingFrame())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := client.Write(ctx, websocket.MessageBinary, data); err != nil {
			t.Fatal(err)
		}
		if f := nextFrame(ctx, t, client); f.GetPong() == nil {
			t.Fatalf("frame %d answered %v, want a pong", i, f)
		}
		waitParked("after a frame")
	}
	// The client answers the close handshake while it reads.
	go func() { _, _, _ = client.Read(ctx) }()
	if err := c.ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close: %v", err)
	}
	for c.svc.live.count() != 0 {
		if ctx.Err() != nil {
			t.Fatal("a connection closed while parked was never shut down")
		}
		time.Sleep(time.Millisecond)
	}
	if parked() {
		t.Fatal("a shut-down connection is still in the poller")
	}
}

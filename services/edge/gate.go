package edge

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// gate sits between coder/websocket and a client's socket and follows the
// frames (RFC 6455 section 5.2) going each way. It exists for the memory
// of an idle connection, which is mostly its read loop's stack: parked
// inside coder/websocket's reader, the loop needs 4 KiB, and that reader
// answers a ping and reads on, so it stays parked deep. With the gate the
// loop waits for the socket at the top of its goroutine (2 KiB), and
// pings and pongs that arrive between messages are answered there;
// coder/websocket reads only data and close frames, and control frames
// inside a fragmented message, as before.
//
// Following frame boundaries also lets both of coder/websocket's buffers
// shrink to a few bytes: the gate never hands its reader bytes past the
// end of the current frame (so nothing of the next frame waits in it),
// and it holds back the start of a frame it is given in pieces and writes
// the frame whole, in one system call as before.
type gate struct {
	net.Conn
	// raw waits for the socket to be readable without reading it; nil
	// if the connection has no file descriptor (then the read loop parks
	// in coder/websocket's reader, as without the gate).
	raw syscall.RawConn
	// fd is the socket's descriptor, for the poller; -1 if unknown.
	fd int32
	// owner is the connection the gate serves, if it parks in the poller.
	owner *conn
	// pmu orders a park with the close: a socket closed while it is
	// being registered would never wake its loop.
	pmu    sync.Mutex
	closed bool
	// heard is when the client was last heard from (conn.heardNow).
	heard *atomic.Int64
	// writeTimeout bounds each write to the socket (Config.WriteTimeout):
	// a deadline rather than a context for coder/websocket, which keeps
	// the context of the last write (a timer and a channel) for as long as
	// the connection stays idle.
	writeTimeout time.Duration

	// rmu guards the read side: the read loop's wait at the top and a
	// close handshake (coder/websocket reading from another goroutine)
	// must not interleave their reads within a frame.
	rmu   sync.Mutex
	early []byte // read by net/http past the handshake: first in line
	rcur  frameCursor
	// pend is a header the read loop read at the top for a frame that is
	// coder/websocket's to read; it is handed over first.
	pend           [maxFrameHeader]byte
	pendOff, pendN uint8

	wmu  sync.Mutex
	wcur frameCursor
	// held is the start of a frame written in pieces.
	held  [heldBytes]byte
	heldN uint8
	// ctrl is control frames waiting for the frame being written to end.
	ctrl []byte
}

const (
	// maxFrameHeader: 2 bytes, 8 of extended length, a 4-byte mask key.
	maxFrameHeader = 14
	// heldBytes is the size of coder/websocket's write buffer over the
	// gate: room for a header and the first bytes of its payload.
	heldBytes = 16
	// maxControlPayload is RFC 6455's bound on a control frame's payload.
	maxControlPayload = 125
	// maxQueuedControl bounds ctrl: a client pinging faster than its
	// socket drains gets answers to the latest pings only.
	maxQueuedControl = 4 * (2 + maxControlPayload)

	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xa
)

// errControlWrite: a ping or pong could not be written whole.
var errControlWrite = errors.New("edge: control frame not written")

func newGate(nc net.Conn, early []byte, heard *atomic.Int64, writeTimeout time.Duration) *gate {
	if writeTimeout <= 0 {
		writeTimeout = defaultWriteTimeout
	}
	g := &gate{Conn: nc, fd: -1, early: early, heard: heard, writeTimeout: writeTimeout}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			g.raw = raw
			_ = raw.Control(func(fd uintptr) { g.fd = int32(fd) })
		}
	}
	return g
}

// Close closes the socket. A read loop parked in the poller is taken out
// first and started, to find the connection closed and end it.
func (g *gate) Close() error {
	g.pmu.Lock()
	g.closed = true
	owner := g.owner
	resume := owner != nil && owner.svc.poller.unpark(owner)
	g.pmu.Unlock()
	err := g.Conn.Close()
	if resume {
		go owner.readLoop()
	}
	return err
}

// setOwner makes c the connection whose loop parks through the gate.
func (g *gate) setOwner(c *conn) {
	g.pmu.Lock()
	g.owner = c
	g.pmu.Unlock()
}

// park hands the connection to the poller; false if it has none, or the
// socket is closed.
func (g *gate) park() bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.owner != nil && !g.closed && g.owner.svc.poller.park(g.owner)
}

// rawRead reads what net/http left first, then the socket. Under rmu.
func (g *gate) rawRead(p []byte) (int, error) {
	if len(g.early) > 0 {
		n := copy(p, g.early)
		g.early = g.early[n:]
		if len(g.early) == 0 {
			g.early = nil
		}
		return n, nil
	}
	return g.Conn.Read(p)
}

// Read serves coder/websocket's reader: a header the read loop read
// first, then the socket, never past the end of the current frame.
func (g *gate) Read(p []byte) (int, error) {
	g.rmu.Lock()
	defer g.rmu.Unlock()
	if g.pendOff < g.pendN {
		n := copy(p, g.pend[g.pendOff:g.pendN])
		g.pendOff += uint8(n)
		return n, nil
	}
	if w := g.rcur.want(); uint64(len(p)) > w {
		p = p[:w]
	}
	n, err := g.rawRead(p)
	g.rcur.feed(p[:n])
	return n, err
}

// await returns once the client has sent something other than a ping or
// a pong, answering pings and noting pongs meanwhile; or, with nothing to
// read, parks the connection in the poller (parked: the caller's
// goroutine must end, the poller starts the loop again). Only the read
// loop calls it, between messages. It waits with no lock held, so a
// close handshake on another goroutine can read meanwhile.
func (g *gate) await() (parked bool, err error) {
	if g.raw == nil {
		return false, nil
	}
	for {
		if !g.hasBytes() {
			if g.park() {
				return true, nil
			}
			if err := g.waitReadable(); err != nil {
				return false, err
			}
		}
		next, err := g.takeControl()
		if next || err != nil {
			return false, err
		}
	}
}

// hasBytes: is there something to read now (or an error to find).
func (g *gate) hasBytes() bool {
	g.rmu.Lock()
	defer g.rmu.Unlock()
	return len(g.early) > 0 || g.readable()
}

// waitReadable parks until the socket has bytes (or is closed), reading
// none of them. It is the stack an idle connection keeps: shallow.
func (g *gate) waitReadable() error {
	g.rmu.Lock()
	early := len(g.early) > 0
	g.rmu.Unlock()
	if early {
		return nil
	}
	return g.raw.Read(func(fd uintptr) bool { return peek(fd) })
}

// peek says whether a read of fd would not block.
func peek(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}

// readable: would a read of the socket not block now.
func (g *gate) readable() bool {
	ready := false
	if err := g.raw.Read(func(fd uintptr) bool { ready = peek(fd); return true }); err != nil {
		return true // the read finds the error
	}
	return ready
}

// takeControl reads the next frame's header. A ping or pong is read
// whole and dealt with (next false); the header of any other frame is
// kept for coder/websocket (next true). Under rmu.
func (g *gate) takeControl() (next bool, err error) {
	g.rmu.Lock()
	defer g.rmu.Unlock()
	if g.pendOff < g.pendN || !g.rcur.atBoundary() {
		return true, nil
	}
	if len(g.early) == 0 && !g.readable() {
		// A close handshake read what woke the loop.
		return false, nil
	}
	h := g.pend[:]
	if err := g.readFull(h[:2]); err != nil {
		return false, err
	}
	hl := headerLen(h[1])
	if err := g.readFull(h[2:hl]); err != nil {
		return false, err
	}
	g.rcur.feed(h[:hl])
	op, fin, masked, n := h[0]&0x0f, h[0]&0x80 != 0, h[1]&0x80 != 0, payloadLen(h[:hl])
	if (op != opPing && op != opPong) || !fin || !masked || n > maxControlPayload {
		// Data, close, or a protocol error coder/websocket will name.
		g.pendOff, g.pendN = 0, uint8(hl)
		return true, nil
	}
	var payload [maxControlPayload]byte
	p := payload[:n]
	if err := g.readFull(p); err != nil {
		return false, err
	}
	g.rcur.feed(p)
	key := h[hl-4 : hl]
	for i := range p {
		p[i] ^= key[i%4]
	}
	g.heard.Store(time.Now().UnixNano())
	if op == opPing {
		return false, g.control(opPong, p)
	}
	return false, nil
}

// readFull reads exactly len(p) bytes. Under rmu.
func (g *gate) readFull(p []byte) error {
	for len(p) > 0 {
		n, err := g.rawRead(p)
		p = p[n:]
		if err != nil {
			return err
		}
	}
	return nil
}

// Write takes coder/websocket's writes: a piece of a frame that does not
// end it is held (up to heldBytes), and written with the rest.
func (g *gate) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.wcur.feed(p)
	if !g.wcur.atBoundary() && int(g.heldN)+len(p) <= len(g.held) {
		g.heldN += uint8(copy(g.held[g.heldN:], p))
		return len(p), nil
	}
	n, err := g.writeHeld(p)
	if err == nil && g.wcur.atBoundary() && len(g.ctrl) > 0 {
		ctrl := g.ctrl
		g.ctrl = nil
		if err := g.writeControl(ctrl); err != nil {
			return n, err
		}
	}
	return n, err
}

// write writes p to the socket within writeTimeout. Under wmu.
func (g *gate) write(p []byte) (int, error) {
	_ = g.Conn.SetWriteDeadline(time.Now().Add(g.writeTimeout))
	return g.Conn.Write(p)
}

// writeBufs recycles the buffers that join a held start to the rest.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// writeHeld writes the held bytes and p in one call; it returns how much
// of p was written. Under wmu.
func (g *gate) writeHeld(p []byte) (int, error) {
	if g.heldN == 0 {
		return g.write(p)
	}
	held := int(g.heldN)
	g.heldN = 0
	var n int
	var err error
	if held+len(p) <= 4<<10 {
		bp := writeBufs.Get().(*[]byte)
		b := append(append((*bp)[:0], g.held[:held]...), p...)
		n, err = g.write(b)
		*bp = b[:0]
		writeBufs.Put(bp)
	} else {
		bufs := net.Buffers{g.held[:held], p}
		_ = g.Conn.SetWriteDeadline(time.Now().Add(g.writeTimeout))
		var n64 int64
		n64, err = bufs.WriteTo(g.Conn)
		n = int(n64)
	}
	return max(n-held, 0), err
}

// control writes a ping or pong now if no frame is being written, or else
// as soon as the frame ends.
func (g *gate) control(op byte, payload []byte) error {
	f := make([]byte, 0, 2+len(payload))
	f = append(f, 0x80|op, byte(len(payload)))
	f = append(f, payload...)
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if !g.wcur.atBoundary() {
		if len(g.ctrl)+len(f) <= maxQueuedControl {
			g.ctrl = append(g.ctrl, f...)
		}
		return nil
	}
	return g.writeControl(f)
}

// defaultWriteTimeout bounds a write when none is configured.
const defaultWriteTimeout = 10 * time.Second

// writeControl writes whole control frames, or closes the connection: a
// frame cut short would garble the stream. Under wmu.
func (g *gate) writeControl(f []byte) error {
	if _, err := g.write(f); err != nil {
		_ = g.Conn.Close()
		return errors.Join(errControlWrite, err)
	}
	return nil
}

// frameCursor follows a stream of frames a few bytes at a time.
type frameCursor struct {
	hdr [maxFrameHeader]byte
	// got is how much of the current frame's header has been seen.
	got uint8
	// left is what remains of the current frame's payload once its
	// header is whole.
	left uint64
}

// headerLen is a frame header's length, from its second byte.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// payloadLen is the payload length a whole header gives.
func payloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return binary.BigEndian.Uint64(h[2:10])
	default:
		return uint64(l)
	}
}

// atBoundary: the cursor is between frames.
func (c *frameCursor) atBoundary() bool { return c.got == 0 && c.left == 0 }

// want is how many bytes can be read without passing the current
// frame's end: the rest of its payload, or of its header (with a short
// payload, whose length the header's second byte gives).
func (c *frameCursor) want() uint64 {
	switch {
	case c.left > 0:
		return c.left
	case c.got < 2:
		return uint64(2 - c.got)
	}
	n := uint64(headerLen(c.hdr[1]) - int(c.got))
	if l := c.hdr[1] & 0x7f; l < 126 {
		n += uint64(l)
	}
	return n
}

// feed moves the cursor over b, the bytes that follow what it has seen.
func (c *frameCursor) feed(b []byte) {
	for len(b) > 0 {
		if c.left > 0 {
			n := min(uint64(len(b)), c.left)
			c.left -= n
			b = b[n:]
			continue
		}
		c.hdr[c.got] = b[0]
		c.got++
		b = b[1:]
		if c.got >= 2 && int(c.got) == headerLen(c.hdr[1]) {
			c.left = payloadLen(c.hdr[:c.got])
			c.got = 0
		}
	}
}

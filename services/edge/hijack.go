package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Buffer sizes of a hijacked WebSocket connection. coder/websocket keeps
// the reader and writer that Hijack returns for the connection's life, and
// net/http's are 4 KiB each: on an idle connection that would be most of
// what it costs. The gate under them (gate.go) hands the reader no bytes
// past a frame's end and holds back a frame's start until it can write the
// frame whole, so a few bytes each serve: the reader's hold a frame
// header, larger payloads are read straight into the caller's buffer.
const (
	hijackReadBuffer  = 16
	hijackWriteBuffer = heldBytes
)

// smallHijacker wraps the ResponseWriter given to websocket.Accept so the
// hijacked connection comes with small buffers instead of net/http's, over
// a gate. heard is the connection's last-heard time, which the gate sets
// for pings and pongs it answers itself.
type smallHijacker struct {
	http.ResponseWriter
	heard *atomic.Int64
	// writeTimeout bounds each socket write (Config.WriteTimeout).
	writeTimeout time.Duration
	// gate is the hijacked connection's, once Hijack has run.
	gate *gate
}

func (h *smallHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("edge: hijack: %w", http.ErrNotSupported)
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// A client may send its first frame right behind the handshake; those
	// bytes can already sit in net/http's reader and must come first. They
	// go in front of the connection itself rather than into the new reader,
	// because coder/websocket resets the reader it is given onto the
	// returned conn (keeping only what that reader has buffered).
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		pending, _ := brw.Reader.Peek(n)
		early = bytes.Clone(pending)
	}
	if h.heard == nil {
		h.heard = new(atomic.Int64)
	}
	h.gate = newGate(nc, early, h.heard, h.writeTimeout)
	return h.gate, bufio.NewReadWriter(bufio.NewReaderSize(h.gate, hijackReadBuffer), bufio.NewWriterSize(h.gate, hijackWriteBuffer)), nil
}

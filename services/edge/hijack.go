package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
)

// Buffer sizes of a hijacked WebSocket connection. coder/websocket keeps
// the reader and writer that Hijack returns for the connection's life, and
// net/http's are 4 KiB each: on an idle connection that is most of what it
// costs. A frame header fits in the reader's 256 B and larger payloads are
// read straight into the caller's buffer; a typical events frame fits in
// the writer's 1 KiB, and bufio writes anything larger through.
const (
	hijackReadBuffer  = 256
	hijackWriteBuffer = 1 << 10
)

// smallHijacker wraps the ResponseWriter given to websocket.Accept so the
// hijacked connection comes with small buffers instead of net/http's.
type smallHijacker struct {
	http.ResponseWriter
}

func (h smallHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
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
	if n := brw.Reader.Buffered(); n > 0 {
		pending, _ := brw.Reader.Peek(n)
		nc = &prefixedConn{Conn: nc, pending: bytes.Clone(pending)}
	}
	return nc, bufio.NewReadWriter(bufio.NewReaderSize(nc, hijackReadBuffer), bufio.NewWriterSize(nc, hijackWriteBuffer)), nil
}

// prefixedConn reads pending before the connection. coder/websocket reads
// a connection from one goroutine at a time, so pending needs no lock.
type prefixedConn struct {
	net.Conn
	pending []byte
}

func (c *prefixedConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return n, nil
}

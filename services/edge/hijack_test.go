package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// echoServer accepts through smallHijacker and echoes every message,
// waiting in the gate between messages as the edge's read loop does.
func echoServer(t *testing.T) *httptest.Server {
	t.Helper()
	return gateServer(t, new(atomic.Int64), nil, nil)
}

// clientFrame builds a masked binary frame, as a client must send it.
func clientFrame(payload []byte) []byte {
	var f bytes.Buffer
	f.WriteByte(0x82) // FIN, binary
	switch n := len(payload); {
	case n < 126:
		f.WriteByte(0x80 | byte(n))
	default:
		f.WriteByte(0x80 | 126)
		_ = binary.Write(&f, binary.BigEndian, uint16(n))
	}
	mask := []byte{1, 2, 3, 4}
	f.Write(mask)
	for i, b := range payload {
		f.WriteByte(b ^ mask[i%4])
	}
	return f.Bytes()
}

// TestSmallHijackerKeepsBytesSentWithTheHandshake: frames that arrive in
// the same write as the upgrade request sit in net/http's reader when the
// connection is hijacked; they must be read first and intact.
func TestSmallHijackerKeepsBytesSentWithTheHandshake(t *testing.T) {
	srv := echoServer(t)
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	first := bytes.Repeat([]byte("a"), 1000) // beyond the 256 B reader
	second := []byte("second")
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write(append(append([]byte(req), clientFrame(first)...), clientFrame(second)...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %s", resp.Status)
	}
	for _, want := range [][]byte{first, second} {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatal(err)
		}
		n := int(hdr[1] & 0x7f)
		if n == 126 {
			var ext uint16
			if err := binary.Read(br, binary.BigEndian, &ext); err != nil {
				t.Fatal(err)
			}
			n = int(ext)
		}
		got := make([]byte, n)
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("echo of a %d-byte message came back as %d bytes: %.40q", len(want), len(got), got)
		}
	}
}

// TestSmallHijackerLargeMessages: messages far beyond both buffers pass
// through unchanged in both directions.
func TestSmallHijackerLargeMessages(t *testing.T) {
	srv := echoServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for _, n := range []int{1, 255, 257, 1023, 1025, 100_000} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d-byte message came back as %d bytes", n, len(got))
		}
	}
}

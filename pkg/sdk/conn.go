package sdk

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

var (
	// errNotConnected: the client is between connections.
	errNotConnected = errors.New("parley client not connected")
	// errEnded: a request met a connection that had already ended, so it
	// was not sent.
	errEnded = errors.New("parley connection already ended")
)

// readLimit bounds one server frame; an events frame coalesces up to the
// edge's whole queue for the connection.
const readLimit = 16 << 20

// conn is one WebSocket connection: the requests waiting for answers on
// it, and why it ended.
type conn struct {
	ws     *websocket.Conn
	format wire.Format

	// mu guards pending, cause and ended.
	mu      sync.Mutex
	pending map[string]chan *clientv1.ServerFrame
	// cause is why the connection was dropped on purpose (kill); it wins
	// over the read error the drop then causes.
	cause error
	ended bool
	// err is why the connection ended; set before dead is closed.
	err  error
	dead chan struct{}
	// installed: authenticated and handed to the app. Only then may the
	// read loop wait for the app to read events: before, it must get
	// the answer to authenticate through.
	installed atomic.Bool
	// killed is closed by kill, releasing a read loop that waits.
	killed   chan struct{}
	killOnce sync.Once
}

// connect dials, starts the connection's read loop and authenticates. On
// failure the connection is closed and its read loop gone.
func (c *Client) connect(ctx context.Context, token, device string, resume []*clientv1.Cursor) (*conn, *clientv1.Authenticated, error) {
	sub := wire.SubprotocolProto
	if c.opts.JSON {
		sub = wire.SubprotocolJSON
	}
	ws, hresp, err := websocket.Dial(ctx, c.opts.URL, &websocket.DialOptions{HTTPClient: c.opts.HTTPClient, Subprotocols: []string{sub}})
	if err != nil {
		if after, ok := retryAfter(hresp); ok {
			err = &BusyError{RetryAfter: after, Err: err}
		}
		return nil, nil, fmt.Errorf("dial %s: %w", c.opts.URL, err)
	}
	ws.SetReadLimit(readLimit)
	format, ok := wire.FormatFor(ws.Subprotocol())
	if !ok {
		ws.Close(websocket.StatusProtocolError, "no subprotocol")
		return nil, nil, permanent(fmt.Errorf("dial %s: server chose no parley subprotocol", c.opts.URL))
	}
	cn := &conn{ws: ws, format: format, pending: make(map[string]chan *clientv1.ServerFrame), dead: make(chan struct{}), killed: make(chan struct{})}
	go c.read(cn)
	resp, err := cn.do(ctx, &clientv1.ClientFrame{RequestId: c.requestID(), Frame: &clientv1.ClientFrame_Authenticate{
		Authenticate: &clientv1.Authenticate{Token: token, DeviceId: device, Resume: resume},
	}})
	if err == nil && resp.GetAuthenticated() == nil {
		err = permanent(fmt.Errorf("unexpected answer %v", resp))
	}
	if err != nil {
		cn.kill(err)
		<-cn.dead
		return nil, nil, fmt.Errorf("authenticate: %w", err)
	}
	return cn, resp.GetAuthenticated(), nil
}

// read is the connection's read loop. It never waits for the app: answers
// go to their callers and events to the inbox, whose bound drops the
// connection instead of blocking.
func (c *Client) read(cn *conn) {
	var err error
	for {
		var data []byte
		if _, data, err = cn.ws.Read(context.Background()); err != nil {
			break
		}
		var f *clientv1.ServerFrame
		if f, err = wire.DecodeServer(cn.format, data); err != nil {
			break
		}
		if err = c.dispatch(cn, f); err != nil {
			break
		}
	}
	cn.ws.CloseNow()
	cn.end(err)
}

func (cn *conn) isDead() bool {
	select {
	case <-cn.dead:
		return true
	default:
		return false
	}
}

// kill drops the connection for the given reason.
func (cn *conn) kill(cause error) {
	cn.mu.Lock()
	if cn.cause == nil {
		cn.cause = cause
	}
	cn.mu.Unlock()
	cn.killOnce.Do(func() { close(cn.killed) })
	cn.ws.CloseNow()
}

// end records why the connection ended and fails its waiting requests.
func (cn *conn) end(err error) {
	cn.mu.Lock()
	if cn.cause != nil {
		err = cn.cause
	}
	cn.err, cn.ended = err, true
	for id, ch := range cn.pending {
		close(ch)
		delete(cn.pending, id)
	}
	cn.mu.Unlock()
	close(cn.dead)
}

// answer hands a frame to the request waiting for it, if any still is.
func (cn *conn) answer(id string, f *clientv1.ServerFrame) {
	cn.mu.Lock()
	ch := cn.pending[id]
	delete(cn.pending, id)
	cn.mu.Unlock()
	if ch != nil {
		ch <- f
	}
}

// do sends f (its request id set) and waits for its answer.
func (cn *conn) do(ctx context.Context, f *clientv1.ClientFrame) (*clientv1.ServerFrame, error) {
	id := f.GetRequestId()
	ch := make(chan *clientv1.ServerFrame, 1)
	cn.mu.Lock()
	if cn.ended {
		err := cn.err
		cn.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", errEnded, err)
	}
	cn.pending[id] = ch
	cn.mu.Unlock()
	defer func() {
		cn.mu.Lock()
		delete(cn.pending, id)
		cn.mu.Unlock()
	}()
	if err := cn.writeFrame(ctx, f); err != nil {
		return nil, err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			cn.mu.Lock()
			err := cn.err
			cn.mu.Unlock()
			return nil, lost(err)
		}
		if e := resp.GetError(); e != nil {
			return resp, wire.ErrorOf(e)
		}
		return resp, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (cn *conn) writeFrame(ctx context.Context, f *clientv1.ClientFrame) error {
	data, err := wire.Encode(cn.format, f)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return cn.write(ctx, data)
}

// write sends one frame. A failed write leaves the connection unusable
// (a frame may be half sent), so it is dropped and the caller told to
// retry, unless its own context ran out.
func (cn *conn) write(ctx context.Context, data []byte) error {
	typ := websocket.MessageBinary
	if cn.format == wire.JSON {
		typ = websocket.MessageText
	}
	if err := cn.ws.Write(ctx, typ, data); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("write frame: %w", err)
		}
		err = fmt.Errorf("write frame: %w", err)
		cn.kill(err)
		return lost(err)
	}
	return nil
}

// lost is the error of a request whose connection ended under it.
func lost(cause error) error {
	if cause == nil {
		return ErrConnectionLost
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, cause)
}

// BusyError is a dial the server refused for now (HTTP 429 or 503, as an
// edge taking a reconnect storm in turn answers): try again after
// RetryAfter, which the server has already spread out.
type BusyError struct {
	RetryAfter time.Duration
	Err        error
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("server busy, retry after %v: %v", e.RetryAfter, e.Err)
}

func (e *BusyError) Unwrap() error { return e.Err }

// retryAfter reads a refused upgrade's Retry-After (in seconds), if the
// refusal was one that asks for a later try.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil || (resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests) {
		return 0, false
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 0 {
		return 0, false
	}
	return time.Duration(min(secs, 3600)) * time.Second, true
}

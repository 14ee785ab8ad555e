// Package sdk is the Go client for Parley's WebSocket protocol. The CLI,
// the tests and the benchmark all use it, so it is the reference client.
package sdk

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("parley client closed")

// Options configure Dial.
type Options struct {
	// URL is the edge's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
	URL   string
	Token string
	// DeviceID identifies this device across reconnects; empty lets the
	// server choose.
	DeviceID string
	// JSON selects the protojson subprotocol instead of binary protobuf.
	JSON bool
	// EventBuffer is how many pushed events may wait unread in Events()
	// before the client stops reading the socket (default 4096).
	EventBuffer int
	// Resume asks the server to catch these conversations up from the
	// given seqs before their live events (see Resumed).
	Resume []*clientv1.Cursor
	// HTTPClient dials the WebSocket (http.DefaultClient if nil): a way to
	// set a proxy, a source address or socket options.
	HTTPClient *http.Client
}

// Client is one authenticated connection. Its methods are safe for
// concurrent use.
type Client struct {
	conn   *websocket.Conn
	format wire.Format
	events chan *chatv1.Event
	// errs carries error frames that answer no request (a frame the
	// server could not even read a request id from).
	errs chan *wire.Error
	// resumed carries the end of the catch-up asked for in Options.Resume.
	resumed chan *clientv1.Resumed

	UserID, DeviceID, SessionID string

	nextID atomic.Uint64
	// mu guards pending and err.
	mu      sync.Mutex
	pending map[string]chan *clientv1.ServerFrame
	err     error
	done    chan struct{}
	// closing unblocks a read loop waiting for room in events.
	closing   chan struct{}
	closeOnce sync.Once
}

// Dial connects and authenticates.
func Dial(ctx context.Context, o Options) (*Client, error) {
	proto := wire.SubprotocolProto
	if o.JSON {
		proto = wire.SubprotocolJSON
	}
	conn, _, err := websocket.Dial(ctx, o.URL, &websocket.DialOptions{HTTPClient: o.HTTPClient, Subprotocols: []string{proto}})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", o.URL, err)
	}
	conn.SetReadLimit(16 << 20)
	format, ok := wire.FormatFor(conn.Subprotocol())
	if !ok {
		conn.Close(websocket.StatusProtocolError, "no subprotocol")
		return nil, fmt.Errorf("dial %s: server chose no parley subprotocol", o.URL)
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = 4096
	}
	c := &Client{
		conn:    conn,
		format:  format,
		events:  make(chan *chatv1.Event, o.EventBuffer),
		errs:    make(chan *wire.Error, 16),
		resumed: make(chan *clientv1.Resumed, 1),
		pending: make(map[string]chan *clientv1.ServerFrame),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	go c.readLoop()
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Authenticate{
		Authenticate: &clientv1.Authenticate{Token: o.Token, DeviceId: o.DeviceID, Resume: o.Resume},
	}})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	a := resp.GetAuthenticated()
	if a == nil {
		c.Close()
		return nil, fmt.Errorf("authenticate: unexpected answer %v", resp)
	}
	c.UserID, c.DeviceID, c.SessionID = a.UserId, a.DeviceId, a.SessionId
	return c, nil
}

// Resumed delivers, once, the end of the catch-up asked for with
// Options.Resume: the events before it in Events() were history, those
// after it are live, each conversation's contiguous across the seam.
func (c *Client) Resumed() <-chan *clientv1.Resumed { return c.resumed }

// Errors delivers error frames that answer no request, such as the answer
// to bytes the server could not decode. It holds the latest 16; older ones
// are dropped rather than stall the connection.
func (c *Client) Errors() <-chan *wire.Error { return c.errs }

// Events delivers pushed events, each conversation's in seq order. It is
// closed when the connection ends; Err then says why.
func (c *Client) Events() <-chan *chatv1.Event { return c.events }

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	err := c.conn.Close(websocket.StatusNormalClosure, "bye")
	<-c.done
	return err
}

func (c *Client) readLoop() {
	defer close(c.events)
	var err error
	for {
		var data []byte
		_, data, err = c.conn.Read(context.Background())
		if err != nil {
			break
		}
		frame, derr := wire.DecodeServer(c.format, data)
		if derr != nil {
			err = derr
			break
		}
		if r := frame.GetResumed(); r != nil {
			select {
			case c.resumed <- r: // one per connection
			default:
			}
			continue
		}
		if id := frame.GetRequestId(); id != "" {
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				ch <- frame
			}
			continue
		}
		switch f := frame.GetFrame().(type) {
		case *clientv1.ServerFrame_Events:
			for _, ev := range f.Events.GetEvents() {
				select {
				case c.events <- ev:
				case <-c.closing:
				}
			}
		case *clientv1.ServerFrame_Error:
			e := &wire.Error{Code: f.Error.GetCode(), Message: f.Error.GetMessage()}
			select {
			case c.errs <- e:
			default: // full: drop the oldest to keep the newest
				select {
				case <-c.errs:
				default:
				}
				select {
				case c.errs <- e:
				default:
				}
			}
		}
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.done)
}

// Do sends a frame and waits for the frame answering it. An Error answer
// is returned as a *wire.Error.
func (c *Client) Do(ctx context.Context, f *clientv1.ClientFrame) (*clientv1.ServerFrame, error) {
	id := strconv.FormatUint(c.nextID.Add(1), 10)
	f.RequestId = id
	ch := make(chan *clientv1.ServerFrame, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := c.WriteFrame(ctx, f); err != nil {
		return nil, err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w: %w", ErrClosed, c.Err())
		}
		if e := resp.GetError(); e != nil {
			return resp, &wire.Error{Code: e.GetCode(), Message: e.GetMessage()}
		}
		return resp, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WriteFrame sends a frame without waiting for an answer.
func (c *Client) WriteFrame(ctx context.Context, f *clientv1.ClientFrame) error {
	data, err := wire.Encode(c.format, f)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return c.WriteRaw(ctx, data)
}

// WriteRaw sends bytes as one frame of the connection's type; tests use it
// to send what no well-behaved client would.
func (c *Client) WriteRaw(ctx context.Context, data []byte) error {
	typ := websocket.MessageBinary
	if c.format == wire.JSON {
		typ = websocket.MessageText
	}
	if err := c.conn.Write(ctx, typ, data); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// NewClientMsgID returns a fresh client message id.
func NewClientMsgID() string { return uuid.Must(uuid.NewV7()).String() }

// Send posts text with a fresh client message id.
func (c *Client) Send(ctx context.Context, conversationID, text string) (*clientv1.Accepted, error) {
	return c.SendWithID(ctx, conversationID, NewClientMsgID(), text)
}

// SendWithID posts text with the given client message id; sending the same
// id again returns the original Accepted with Duplicate set.
func (c *Client) SendWithID(ctx context.Context, conversationID, clientMsgID, text string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
		ConversationId: conversationID, ClientMsgId: clientMsgID, Text: text,
	}}})
}

// OpenDirect opens (or finds) the direct conversation with another user.
func (c *Client) OpenDirect(ctx context.Context, other string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
		ClientMsgId: NewClientMsgID(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, MemberIds: []string{other},
	}}})
}

// CreateGroup creates a group with a client-chosen id, so a retry cannot
// create it twice.
func (c *Client) CreateGroup(ctx context.Context, title string, members ...string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
		ClientMsgId: NewClientMsgID(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: title, MemberIds: members,
		ConversationId: uuid.Must(uuid.NewV7()).String(),
	}}})
}

// AddMember adds a user to a group.
func (c *Client) AddMember(ctx context.Context, conversationID, user string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_AddMember{AddMember: &clientv1.AddMember{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), UserId: user,
	}}})
}

func (c *Client) accepted(ctx context.Context, f *clientv1.ClientFrame) (*clientv1.Accepted, error) {
	resp, err := c.Do(ctx, f)
	if err != nil {
		return nil, err
	}
	a := resp.GetAccepted()
	if a == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return a, nil
}

// Conversations lists the user's conversations, most recent first.
func (c *Client) Conversations(ctx context.Context, limit uint32) ([]*chatv1.Conversation, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{Limit: limit}}})
	if err != nil {
		return nil, err
	}
	l := resp.GetConversations()
	if l == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return l.GetConversations(), nil
}

// History pages a conversation; see GetHistory in the protocol.
func (c *Client) History(ctx context.Context, q *clientv1.GetHistory) (*clientv1.HistoryPage, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetHistory{GetHistory: q}})
	if err != nil {
		return nil, err
	}
	p := resp.GetHistory()
	if p == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return p, nil
}

// Ping round-trips a Ping.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}})
	return err
}

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
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

var (
	// ErrClosed is returned by calls on a client that is finished: closed
	// by Close, or ended by a failure it does not (or may not) retry.
	ErrClosed = errors.New("parley client closed")
	// ErrConnectionLost is returned by a request whose connection dropped
	// before its answer came. The request may or may not have taken
	// effect: retry it (a send retried with the same client message id
	// lands exactly once).
	ErrConnectionLost = errors.New("parley connection lost before the answer")
	// ErrAuthRejected ends a client whose token the server refused when it
	// reconnected; errors.As with *wire.Error gives the code
	// (UNAUTHENTICATED, TOKEN_EXPIRED).
	ErrAuthRejected = errors.New("parley authentication rejected")
	// ErrEventBufferFull is why the client dropped its own connection: more
	// than Options.EventBuffer pushed events were waiting unread in
	// Events(). With Reconnect it resumes once the app has read half of
	// them; without, the client ends.
	ErrEventBufferFull = errors.New("parley client: too many pushed events unread")
)

// Options configure Dial.
type Options struct {
	// URL is the edge's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
	URL string
	// Token authenticates the connection (a JWT whose subject is the user).
	Token string
	// TokenFunc, when set, is asked for a token before every connection
	// instead of using Token, so a client that reconnects hours later can
	// present a fresh one. Its error is treated like a failed dial. It is
	// also asked when the server warns that the connection's token expires
	// soon, and its token handed to the connection (RefreshToken), so the
	// connection outlives its first token.
	TokenFunc func(ctx context.Context) (string, error)
	// DeviceID identifies this device across reconnects; empty lets the
	// server choose (and reconnects reuse its choice).
	DeviceID string
	// JSON selects the protojson subprotocol instead of binary protobuf.
	JSON bool
	// EventBuffer is how many pushed events may wait unread in Events()
	// (default 4096). With Reconnect the client keeps reading the socket
	// regardless, so answers never wait behind unread events, and past
	// this bound it drops the connection (ErrEventBufferFull) and resumes
	// from the last event the app read once the app has read half of
	// them (requests made meanwhile wait for that connection). Without
	// Reconnect it stops reading the socket until the app reads: answers
	// then wait behind the unread events, and the server, its queue for
	// the connection full, drops it with close code 4000 (resync).
	EventBuffer int
	// Resume asks the server to catch these conversations up from the
	// given seqs before their live events (see Resumed). Events at or
	// below a cursor are never delivered.
	Resume []*clientv1.Cursor
	// Reconnect, when set, makes the client redial by itself after its
	// connection drops, resuming every conversation from the last event
	// delivered on Events(). Nil keeps one connection: when it ends, the
	// client ends.
	Reconnect *ReconnectPolicy
	// AckDelivered makes the client report, every AckInterval (500 ms by
	// default), how far the app has read Events() in each conversation as
	// this device's delivered position, so senders see their messages
	// delivered to it.
	AckDelivered bool
	AckInterval  time.Duration
	// TrackStatus makes the client follow the messages it sends and report
	// each change of their status on Statuses().
	TrackStatus bool
	// HTTPClient dials the WebSocket (http.DefaultClient if nil): a way to
	// set a proxy, a source address or socket options.
	HTTPClient *http.Client
}

// Client is a connection to Parley that, with Options.Reconnect, outlives
// the WebSocket it started on. Its methods are safe for concurrent use.
type Client struct {
	opts Options
	// ctx ends with Close; everything the client runs is bounded by it.
	ctx    context.Context
	cancel context.CancelFunc

	// UserID and DeviceID are who the first connection authenticated as;
	// every reconnect is the same. SessionID is the first connection's
	// (StateConnected carries each one's).
	UserID, DeviceID, SessionID string
	// InboxID is the user's inbox (CONVERSATION_KIND_INBOX): contact
	// requests and their answers arrive there as events, like any
	// conversation's.
	InboxID string
	// Audiences are the broadcast audiences the token's attributes put
	// the user in: each a conversation to resume and page like any.
	Audiences []*clientv1.Audience

	nextID atomic.Uint64
	// installs counts the connections the client has had.
	installs atomic.Int64
	// tokenExpires is the current connection's token expiry in Unix
	// nanoseconds (token.go).
	tokenExpires atomic.Int64

	// mu guards cur, up, err, seen and lost.
	mu sync.Mutex
	// cur is the authenticated connection, nil while reconnecting.
	cur *conn
	// up is closed when cur is set again (or the client ends), releasing
	// requests that wait for a connection.
	up  chan struct{}
	err error
	// seen is the last seq delivered per conversation: the resume cursors
	// and the bar below which an event is a duplicate.
	seen map[string]*cursor
	// lost names the conversations the server said lost events
	// (EVENTS_MISSING): the next gap there is not waited for in history.
	lost map[string]bool
	// touch orders seen by recency, to choose which conversations to
	// resume when there are more than the server takes.
	touch uint64
	done  chan struct{}

	in inbox

	events chan *chatv1.Event
	// errs carries error frames that answer no request (a frame the
	// server could not even read a request id from, a failed resume) and
	// gaps the client could not fill.
	errs chan *wire.Error
	// resumed carries the end of the catch-up asked for in Options.Resume.
	resumed     chan *clientv1.Resumed
	resumedOnce sync.Once
	states      chan StateChange
	pos         *positions
	// smu makes drop-oldest sends to states and errs atomic.
	smu sync.Mutex
}

type cursor struct {
	seq, touched uint64
}

// Dial connects and authenticates. It makes one attempt: a failure is
// returned, not retried, whatever Options.Reconnect says.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.EventBuffer <= 0 {
		o.EventBuffer = 4096
	}
	if o.Reconnect != nil {
		p := o.Reconnect.withDefaults()
		o.Reconnect = &p
	}
	c := &Client{
		opts:    o,
		up:      make(chan struct{}),
		seen:    make(map[string]*cursor, len(o.Resume)),
		lost:    map[string]bool{},
		done:    make(chan struct{}),
		in:      inbox{limit: o.EventBuffer, block: o.Reconnect == nil, wake: make(chan struct{}, 1)},
		events:  make(chan *chatv1.Event),
		errs:    make(chan *wire.Error, 16),
		resumed: make(chan *clientv1.Resumed, 1),
		states:  make(chan StateChange, stateBuffer),
		pos:     newPositions(),
	}
	for _, cur := range o.Resume {
		c.note(cur.GetConversationId(), cur.GetLastSeq())
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	token := o.Token
	if o.TokenFunc != nil {
		var err error
		if token, err = o.TokenFunc(ctx); err != nil {
			c.cancel()
			return nil, fmt.Errorf("token: %w", err)
		}
	}
	cn, a, err := c.connect(ctx, token, o.DeviceID, o.Resume)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.UserID, c.DeviceID, c.SessionID, c.InboxID = a.GetUserId(), a.GetDeviceId(), a.GetSessionId(), a.GetInboxId()
	c.Audiences = a.GetAudiences()
	if o.TrackStatus {
		c.pos.mu.Lock()
		c.pos.tracker = NewStatusTracker(c.UserID)
		c.pos.mu.Unlock()
	}
	if o.AckDelivered {
		if o.AckInterval <= 0 {
			o.AckInterval = defaultAckInterval
		}
		go c.ackLoop(o.AckInterval)
	}
	c.install(cn)
	go c.supervise(cn)
	go c.deliver()
	return c, nil
}

// Resumed delivers, once, the end of the catch-up asked for with
// Options.Resume: the events before it in Events() were history, those
// after it are live, each conversation's contiguous across the seam.
// States reports the end of every later resume too.
func (c *Client) Resumed() <-chan *clientv1.Resumed { return c.resumed }

// Errors delivers error frames that answer no request, such as the answer
// to bytes the server could not decode or a conversation that failed to
// resume, and gaps in a conversation that history could not fill. It
// holds the latest 16; older ones are dropped rather than stall the
// connection.
func (c *Client) Errors() <-chan *wire.Error { return c.errs }

// Events delivers pushed events, each conversation's in seq order, none
// twice. With Reconnect it stays open across reconnects. When the client
// ends it delivers what it had received, then closes (at once after
// Close); Err then says why.
func (c *Client) Events() <-chan *chatv1.Event { return c.events }

// Done is closed when the client is finished for good: after Close, or
// when its connection ends and it will not reconnect.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the client ended (ErrClosed after Close), or nil while it is
// up or reconnecting.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection and stops reconnecting; it returns once the
// client is finished. Events still unread are dropped. Call it after Done
// too: until then the client holds on to the events the app has not read.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// dispatch routes one server frame. An answer goes to the request waiting
// for it; anything else is a push, handled by its type (a new push type
// gets a case here and its handler in a file of its own). A non-nil error
// drops the connection.
func (c *Client) dispatch(cn *conn, f *clientv1.ServerFrame) error {
	switch b := f.GetFrame().(type) {
	case *clientv1.ServerFrame_Resumed:
		// It carries the authenticate frame's request id, long answered.
		c.onResumed(b.Resumed)
		return nil
	case *clientv1.ServerFrame_Authenticated:
		// Reported here, in frame order, so Connected always comes before
		// the Resumed that follows it.
		c.noteTokenExpires(b.Authenticated.GetTokenExpires())
		c.state(StateChange{State: StateConnected, SessionID: b.Authenticated.GetSessionId()})
	}
	if id := f.GetRequestId(); id != "" {
		cn.answer(id, f)
		return nil
	}
	switch b := f.GetFrame().(type) {
	case *clientv1.ServerFrame_Events:
		return c.in.add(c.ctx, cn, b.Events.GetEvents())
	case *clientv1.ServerFrame_Error:
		if conv := b.Error.GetConversationId(); conv != "" && b.Error.GetCode() == chatv1.ErrorCode_ERROR_CODE_EVENTS_MISSING {
			// Sent before the events after the hole, so it is noted
			// before deliver meets the gap they show.
			c.mu.Lock()
			c.lost[conv] = true
			c.mu.Unlock()
		}
		c.report(wire.ErrorOf(b.Error))
	case *clientv1.ServerFrame_Receipts:
		c.onReceipts(b.Receipts.GetReceipts())
	case *clientv1.ServerFrame_Typing:
		c.onTyping(b.Typing.GetTyping())
	case *clientv1.ServerFrame_Presence:
		c.onPresence(b.Presence.GetPresence())
	case *clientv1.ServerFrame_Flags:
		c.onFlags(b.Flags.GetFlags())
	case *clientv1.ServerFrame_TokenExpiring:
		c.onTokenExpiring(cn, b.TokenExpiring)
	}
	return nil
}

func (c *Client) onResumed(r *clientv1.Resumed) {
	c.resumedOnce.Do(func() {
		if len(c.opts.Resume) > 0 {
			c.resumed <- r
		}
	})
	for _, cur := range r.GetFailed() {
		c.in.sync(cur.GetConversationId())
	}
	c.state(StateChange{State: StateResumed, Resumed: r})
}

// report queues an error for Errors(), dropping the oldest when full.
func (c *Client) report(e *wire.Error) {
	c.smu.Lock()
	defer c.smu.Unlock()
	for {
		select {
		case c.errs <- e:
			return
		default:
		}
		select {
		case <-c.errs:
		default:
		}
	}
}

// Do sends a frame and waits for the frame answering it. An Error answer
// is returned as a *wire.Error. With Reconnect, a request made while the
// client is reconnecting waits (within ctx) for the next connection; one
// whose connection drops before the answer fails with ErrConnectionLost.
//
// A RATE_LIMITED answer is retried after the wait the server asked for,
// up to MaxRateLimitRetries times and only while ctx leaves time for it;
// after that it is returned, its RetryAfter set. The server refused the
// frame without acting on it, so a retry never acts twice.
func (c *Client) Do(ctx context.Context, f *clientv1.ClientFrame) (*clientv1.ServerFrame, error) {
	limited := 0
	for {
		cn, err := c.conn(ctx, true)
		if err != nil {
			return nil, err
		}
		f.RequestId = c.requestID()
		resp, err := cn.do(ctx, f)
		if errors.Is(err, errEnded) {
			// Nothing was sent: the connection ended just before. Wait for
			// the next one like any request made while reconnecting.
			continue
		}
		var we *wire.Error
		if errors.As(err, &we) && we.Code == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED && limited < MaxRateLimitRetries && waitRetry(ctx, we.RetryAfter) {
			limited++
			continue
		}
		return resp, err
	}
}

// MaxRateLimitRetries is how many RATE_LIMITED answers in a row Do waits
// out before it returns one.
const MaxRateLimitRetries = 5

// waitRetry waits d (at least a millisecond); false, at once, if ctx would
// end first.
func waitRetry(ctx context.Context, d time.Duration) bool {
	d = max(d, time.Millisecond)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Client) requestID() string { return strconv.FormatUint(c.nextID.Add(1), 10) }

// conn returns the current connection, waiting for one while the client
// reconnects if wait is set.
func (c *Client) conn(ctx context.Context, wait bool) (*conn, error) {
	for {
		c.mu.Lock()
		cn, up, err := c.cur, c.up, c.err
		c.mu.Unlock()
		switch {
		case err != nil:
			if errors.Is(err, ErrClosed) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", ErrClosed, err)
		case cn != nil && !cn.isDead():
			return cn, nil
		case !wait:
			return nil, errNotConnected
		}
		// Between connections: the supervisor replaces a dead one, or
		// ends the client, and either closes up.
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a connection: %w", ctx.Err())
		}
	}
}

// WriteFrame sends a frame without waiting for an answer.
func (c *Client) WriteFrame(ctx context.Context, f *clientv1.ClientFrame) error {
	cn, err := c.conn(ctx, true)
	if err != nil {
		return err
	}
	return cn.writeFrame(ctx, f)
}

// WriteRaw sends bytes as one frame of the connection's type; tests use it
// to send what no well-behaved client would.
func (c *Client) WriteRaw(ctx context.Context, data []byte) error {
	cn, err := c.conn(ctx, true)
	if err != nil {
		return err
	}
	return cn.write(ctx, data)
}

// NewClientMsgID returns a fresh client message id.
func NewClientMsgID() string { return uuid.Must(uuid.NewV7()).String() }

// Send posts text with a fresh client message id. To retry a send that
// failed with ErrConnectionLost without risking a second message, use
// SendWithID with an id of your own.
func (c *Client) Send(ctx context.Context, conversationID, text string) (*clientv1.Accepted, error) {
	return c.SendWithID(ctx, conversationID, NewClientMsgID(), text)
}

// SendWithID posts text with the given client message id; sending the same
// id again returns the original Accepted with Duplicate set.
func (c *Client) SendWithID(ctx context.Context, conversationID, clientMsgID, text string) (*clientv1.Accepted, error) {
	a, err := c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
		ConversationId: conversationID, ClientMsgId: clientMsgID, Text: text,
	}}})
	if err == nil {
		c.sent(a)
	}
	return a, err
}

// SendRich posts a message with whatever m holds besides text
// (attachments, contact card, reply_to_seq, mention_ids). An empty
// ClientMsgId gets a fresh one; set it to retry without risk of a second
// message.
func (c *Client) SendRich(ctx context.Context, m *clientv1.SendMessage) (*clientv1.Accepted, error) {
	m = proto.CloneOf(m)
	if m.GetClientMsgId() == "" {
		m.ClientMsgId = NewClientMsgID()
	}
	a, err := c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SendMessage{SendMessage: m}})
	if err == nil {
		c.sent(a)
	}
	return a, err
}

// Edit replaces the text (and mentions) of one of the user's messages.
func (c *Client) Edit(ctx context.Context, conversationID string, seq uint64, text string, mentions ...string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_EditMessage{EditMessage: &clientv1.EditMessage{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), TargetSeq: seq, Text: text, MentionIds: mentions,
	}}})
}

// Delete deletes a message: the user's own, or any as a moderator.
func (c *Client) Delete(ctx context.Context, conversationID string, seq uint64) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_DeleteMessage{DeleteMessage: &clientv1.DeleteMessage{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), TargetSeq: seq,
	}}})
}

// React adds the user's emoji reaction to a message. Reacting with an
// emoji the user already has answers Duplicate, with the seq that added it.
func (c *Client) React(ctx context.Context, conversationID string, seq uint64, emoji string) (*clientv1.Accepted, error) {
	return c.react(ctx, conversationID, seq, emoji, false)
}

// Unreact takes the user's emoji reaction back. Taking back one the user
// does not have answers Duplicate with seq 0.
func (c *Client) Unreact(ctx context.Context, conversationID string, seq uint64, emoji string) (*clientv1.Accepted, error) {
	return c.react(ctx, conversationID, seq, emoji, true)
}

func (c *Client) react(ctx context.Context, conversationID string, seq uint64, emoji string, remove bool) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_React{React: &clientv1.React{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), TargetSeq: seq, Emoji: emoji, Remove: remove,
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
	return historyPage(resp, err)
}

func historyPage(resp *clientv1.ServerFrame, err error) (*clientv1.HistoryPage, error) {
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

// closeStatus is the WebSocket close code in err, or -1.
func closeStatus(err error) websocket.StatusCode { return websocket.CloseStatus(err) }

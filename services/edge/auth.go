package edge

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// authenticate reads the first frame, which must carry a valid token.
func (c *conn) authenticate(ctx context.Context) bool {
	actx, cancel := context.WithTimeout(ctx, c.svc.cfg.AuthTimeout)
	defer cancel()
	// The timeout is not the read's deadline: coder/websocket drops the
	// TCP connection when a read's context ends, with no close frame, and
	// a client could not tell that from a network loss. The timer tells
	// it (UNAUTHENTICATED, then 4001), unless the first frame came first.
	var settled atomic.Bool
	timer := time.AfterFunc(c.svc.cfg.AuthTimeout, func() {
		if settled.CompareAndSwap(false, true) {
			c.writeNow(ctx, wire.ErrorFrame("", wire.Errorf(chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "no authenticate frame within %v", c.svc.cfg.AuthTimeout)))
			c.ws.Close(CloseUnauthenticated, "authentication timeout")
		}
	})
	defer timer.Stop()
	data, ferr, err := c.readFrame(ctx)
	if err != nil || !settled.CompareAndSwap(false, true) {
		return false
	}
	fail := func(reqID string, e *wire.Error) bool {
		c.writeNow(ctx, wire.ErrorFrame(reqID, e))
		c.ws.Close(CloseUnauthenticated, e.Code.String())
		return false
	}
	if ferr != nil {
		return fail("", ferr)
	}
	frame, derr := wire.DecodeClient(c.format, data)
	if derr != nil {
		return fail(echoable(frame.GetRequestId()), derr)
	}
	a := frame.GetAuthenticate()
	if a == nil {
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "the first frame must be authenticate"))
	}
	id, err := c.svc.verifier.Verify(actx, a.GetToken())
	if errors.Is(err, auth.ErrExpired) {
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED, "token expired"))
	}
	if err != nil {
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "invalid token"))
	}
	device := a.GetDeviceId()
	if device == "" {
		device = "d-" + uuid.NewString()
	}
	if len(device) > 128 {
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "device_id longer than 128 bytes"))
	}
	if strings.ContainsFunc(device, unicode.IsControl) {
		// Ids become parts of storage keys, which control bytes (NUL)
		// separate.
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "device_id holds control characters"))
	}
	// A conversation named twice would be caught up twice, at twice the
	// cost; only distinct ones count against the cap.
	resume := dedupeCursors(a.GetResume())
	if n := c.svc.lim.cfg.MaxResumeCursors; len(resume) > n {
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "at most %d conversations can be resumed at once", n))
	}
	for _, cur := range resume {
		if id := cur.GetConversationId(); id == "" || len(id) > 64 {
			return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "resume: conversation_id must be 1-64 bytes"))
		}
	}
	if refused := c.joinUser(id.User); refused != nil {
		refused.RequestId = frame.GetRequestId()
		c.writeNow(ctx, refused)
		c.ws.Close(CloseTooManyConnections, "too many connections")
		return false
	}
	c.user, c.device, c.session = id.User, device, uuid.Must(uuid.NewV7()).String()
	c.audiences = audiencesOf(id.Attributes)
	// Hold before joining the hub, so no live event of a resumed
	// conversation can overtake its catch-up.
	c.hold(resume)
	c.svc.hub.add(c)
	// The audiences' sessions are queued first, so the report that
	// carries the user's, which the handshake waits for, carries them too
	// (reports go one at a time, in order).
	for _, s := range c.audienceSessions() {
		c.svc.reporter.connect(s)
	}
	fate := c.svc.reporter.connect(&presencev1.Session{SessionId: c.session, UserId: c.user, DeviceId: c.device})
	// Authenticated promises live events from here on, which fan-out can
	// push only once presence has the session: wait for the report that
	// carries it. A presence that refuses (replaying after a restart) does
	// not hold the handshake up; the resume waits for it instead.
	select {
	case <-fate.tried:
	case <-actx.Done():
	}
	select {
	case <-fate.taken:
	default:
		c.svc.log.Warn("edge: presence did not take the session yet; live pushes miss it until a report is taken, and its resume waits for that", "user", c.user)
	}
	c.send(&clientv1.ServerFrame{RequestId: frame.GetRequestId(), Frame: &clientv1.ServerFrame_Authenticated{
		Authenticated: &clientv1.Authenticated{UserId: c.user, DeviceId: c.device, SessionId: c.session, TokenExpires: timestamppb.New(id.Expires),
			InboxId: membership.InboxID(c.user), Audiences: c.audienceRefs()},
	}})
	// Armed after authenticated is queued, so a token_expiring for a
	// token that is nearly spent follows it.
	c.startTokenClock(id.Expires)
	if len(resume) > 0 {
		go c.resume(frame.GetRequestId(), resume, fate.taken)
	}
	return true
}

// alreadyAuthenticated answers an authenticate frame on a connection that
// passed the handshake: a connection's user never changes.
func alreadyAuthenticated(context.Context, *conn, *clientv1.ClientFrame_Authenticate) *clientv1.ServerFrame {
	return errorFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "already authenticated", "")
}

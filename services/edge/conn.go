package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// WebSocket close codes beyond RFC 6455's, in the private 4000-4999 range.
const (
	// CloseResync: the server dropped this connection's queue; reconnect and
	// sync from the last seq of each conversation.
	CloseResync websocket.StatusCode = 4000
	// CloseUnauthenticated: no valid token was presented.
	CloseUnauthenticated websocket.StatusCode = 4001
)

// conn is one client connection. Its read loop runs in its own goroutine
// (the HTTP handler returns, releasing net/http's buffers); its writer
// goroutine exists only while there is something to write, so an idle
// connection costs one goroutine.
type conn struct {
	svc    *Service
	ws     *websocket.Conn
	format wire.Format

	user, device, session string

	// mu guards every field below it. It is never held across a socket
	// write or a remote call, so Push (under the hub's lock) never waits
	// for a client.
	mu    sync.Mutex
	queue []item
	// writing: a writer goroutine exists; it alone writes to the socket.
	writing bool
	// closed: the connection takes nothing more.
	closed bool
	// resync: the connection was dropped for overflowing its queue and
	// still owes the client the resync close frame.
	resync bool
	// held keeps back live events of conversations being resumed until
	// their catch-up from history is queued (resume.go); heldN counts them
	// against the queue limit.
	held  map[string][]*chatv1.Event
	heldN int
	// ephemeral counts the queued items that may be shed.
	ephemeral int
	// lastTyping is when this connection last forwarded a typing indicator.
	lastTyping time.Time
	// idle is what the device last said with set_idle.
	idle bool
}

// sessionLocked is the connection's session as presence knows it.
func (c *conn) sessionLocked() *presencev1.Session {
	return &presencev1.Session{SessionId: c.session, UserId: c.user, DeviceId: c.device, Idle: c.idle}
}

// readLoop serves an authenticated connection until it ends. It runs in a
// goroutine of its own, started after authentication: the stack a goroutine
// grows (the JWT check and the presence call run deep) stays with it, and
// an idle connection is mostly this goroutine's stack.
func (c *conn) readLoop() {
	ctx := context.Background()
	defer c.shutdown()
	for {
		data, ferr, err := c.readFrame(ctx)
		if err != nil {
			return
		}
		if ferr != nil {
			c.send(wire.ErrorFrame("", ferr))
			continue
		}
		frame, derr := wire.DecodeClient(c.format, data)
		if derr != nil {
			c.send(wire.ErrorFrame(frame.GetRequestId(), derr))
			continue
		}
		c.send(c.handle(ctx, frame))
	}
}

// readFrame reads one message, enforcing the frame limit without closing
// the connection: an oversize frame is drained and reported.
func (c *conn) readFrame(ctx context.Context) ([]byte, *wire.Error, error) {
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		return nil, nil, err
	}
	want := websocket.MessageBinary
	if c.format == wire.JSON {
		want = websocket.MessageText
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(c.svc.cfg.MaxFrameBytes)+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > c.svc.cfg.MaxFrameBytes {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, nil, err
		}
		return nil, wire.Errorf(chatv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, "frame exceeds %d bytes", c.svc.cfg.MaxFrameBytes), nil
	}
	if typ != want {
		return nil, wire.Errorf(chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "expected %v frames for this subprotocol, got %v", want, typ), nil
	}
	return data, nil, nil
}

// authenticate reads the first frame, which must carry a valid token.
func (c *conn) authenticate(ctx context.Context) bool {
	actx, cancel := context.WithTimeout(ctx, c.svc.cfg.AuthTimeout)
	defer cancel()
	data, ferr, err := c.readFrame(actx)
	if err != nil {
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
		return fail(frame.GetRequestId(), derr)
	}
	a := frame.GetAuthenticate()
	if a == nil {
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "the first frame must be authenticate"))
	}
	user, err := c.svc.verifier.Verify(a.GetToken())
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
	resume := a.GetResume()
	if len(resume) > MaxResumeCursors {
		return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "at most %d conversations can be resumed at once", MaxResumeCursors))
	}
	for _, cur := range resume {
		if id := cur.GetConversationId(); id == "" || len(id) > 64 {
			return fail(frame.GetRequestId(), wire.Errorf(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "resume: conversation_id must be 1-64 bytes"))
		}
	}
	c.user, c.device, c.session = user, device, uuid.Must(uuid.NewV7()).String()
	// Hold before joining the hub, so no live event of a resumed
	// conversation can overtake its catch-up.
	c.hold(resume)
	c.svc.hub.add(c)
	taken, err := c.svc.reporter.connect(actx, &presencev1.Session{SessionId: c.session, UserId: c.user, DeviceId: c.device})
	if err != nil {
		c.svc.log.Warn("edge: presence did not take the session yet; live pushes miss it until a report is taken, and its resume waits for that", "err", err)
	}
	c.send(&clientv1.ServerFrame{RequestId: frame.GetRequestId(), Frame: &clientv1.ServerFrame_Authenticated{
		Authenticated: &clientv1.Authenticated{UserId: c.user, DeviceId: c.device, SessionId: c.session},
	}})
	if len(resume) > 0 {
		go c.resume(frame.GetRequestId(), resume, taken)
	}
	return true
}

// shutdown runs when the read loop ends, whatever the reason.
func (c *conn) shutdown() {
	c.mu.Lock()
	c.closed = true
	c.queue, c.held, c.heldN = nil, nil, 0
	c.mu.Unlock()
	if c.session != "" {
		c.svc.hub.remove(c)
		c.svc.watchers.remove(c)
		c.svc.reporter.disconnect(&presencev1.Session{SessionId: c.session, UserId: c.user, DeviceId: c.device})
	}
	c.ws.CloseNow()
	c.svc.liveMu.Lock()
	delete(c.svc.live, c)
	c.svc.liveMu.Unlock()
	c.svc.conns.Done()
}

// handle answers one authenticated frame.
func (c *conn) handle(ctx context.Context, f *clientv1.ClientFrame) *clientv1.ServerFrame {
	reply := func(out *clientv1.ServerFrame) *clientv1.ServerFrame {
		out.RequestId = f.GetRequestId()
		return out
	}
	errFrame := func(code chatv1.ErrorCode, msg, clientMsgID string) *clientv1.ServerFrame {
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{Code: code, Message: msg, ClientMsgId: clientMsgID}}})
	}
	ctx, cancel := context.WithTimeout(ctx, c.svc.cfg.RequestTimeout)
	defer cancel()
	cmd := &logv1.Command{UserId: c.user, DeviceId: c.device}
	switch b := f.GetFrame().(type) {
	case *clientv1.ClientFrame_Ping:
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Pong{Pong: &clientv1.Pong{}}})
	case *clientv1.ClientFrame_Authenticate:
		return errFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "already authenticated", "")
	case *clientv1.ClientFrame_SendMessage:
		m := b.SendMessage
		cmd.ConversationId, cmd.ClientMsgId = m.GetConversationId(), m.GetClientMsgId()
		cmd.Body = &logv1.Command_PostMessage{PostMessage: &logv1.PostMessage{
			Text: m.GetText(), Attachments: m.GetAttachments(), Contact: m.GetContact(), ReplyToSeq: m.GetReplyToSeq(), MentionIds: m.GetMentionIds(),
		}}
	case *clientv1.ClientFrame_EditMessage:
		e := b.EditMessage
		cmd.ConversationId, cmd.ClientMsgId = e.GetConversationId(), e.GetClientMsgId()
		cmd.Body = &logv1.Command_EditMessage{EditMessage: &logv1.EditMessage{TargetSeq: e.GetTargetSeq(), Text: e.GetText(), MentionIds: e.GetMentionIds()}}
	case *clientv1.ClientFrame_DeleteMessage:
		d := b.DeleteMessage
		cmd.ConversationId, cmd.ClientMsgId = d.GetConversationId(), d.GetClientMsgId()
		cmd.Body = &logv1.Command_DeleteMessage{DeleteMessage: &logv1.DeleteMessage{TargetSeq: d.GetTargetSeq()}}
	case *clientv1.ClientFrame_React:
		r := b.React
		cmd.ConversationId, cmd.ClientMsgId = r.GetConversationId(), r.GetClientMsgId()
		cmd.Body = &logv1.Command_React{React: &logv1.React{TargetSeq: r.GetTargetSeq(), Emoji: r.GetEmoji(), Remove: r.GetRemove()}}
	case *clientv1.ClientFrame_CreateConversation:
		cc := b.CreateConversation
		cmd.ConversationId, cmd.ClientMsgId = cc.GetConversationId(), cc.GetClientMsgId()
		cmd.Body = &logv1.Command_CreateConversation{CreateConversation: &logv1.CreateConversation{
			Kind: cc.GetKind(), Title: cc.GetTitle(), MemberIds: cc.GetMemberIds(), Public: cc.GetPublic(),
		}}
	case *clientv1.ClientFrame_AddMember:
		cmd.ConversationId, cmd.ClientMsgId = b.AddMember.GetConversationId(), b.AddMember.GetClientMsgId()
		cmd.Body = &logv1.Command_AddMember{AddMember: &logv1.AddMember{UserId: b.AddMember.GetUserId()}}
	case *clientv1.ClientFrame_RemoveMember:
		cmd.ConversationId, cmd.ClientMsgId = b.RemoveMember.GetConversationId(), b.RemoveMember.GetClientMsgId()
		cmd.Body = &logv1.Command_RemoveMember{RemoveMember: &logv1.RemoveMember{UserId: b.RemoveMember.GetUserId()}}
	case *clientv1.ClientFrame_Leave:
		cmd.ConversationId, cmd.ClientMsgId = b.Leave.GetConversationId(), b.Leave.GetClientMsgId()
		cmd.Body = &logv1.Command_Leave{Leave: &logv1.Leave{}}
	case *clientv1.ClientFrame_SetRole:
		cmd.ConversationId, cmd.ClientMsgId = b.SetRole.GetConversationId(), b.SetRole.GetClientMsgId()
		cmd.Body = &logv1.Command_SetRole{SetRole: &logv1.SetRole{UserId: b.SetRole.GetUserId(), Role: b.SetRole.GetRole()}}
	case *clientv1.ClientFrame_TransferOwnership:
		cmd.ConversationId, cmd.ClientMsgId = b.TransferOwnership.GetConversationId(), b.TransferOwnership.GetClientMsgId()
		cmd.Body = &logv1.Command_TransferOwnership{TransferOwnership: &logv1.TransferOwnership{UserId: b.TransferOwnership.GetUserId()}}
	case *clientv1.ClientFrame_MuteMember:
		cmd.ConversationId, cmd.ClientMsgId = b.MuteMember.GetConversationId(), b.MuteMember.GetClientMsgId()
		cmd.Body = &logv1.Command_MuteMember{MuteMember: &logv1.MuteMember{UserId: b.MuteMember.GetUserId(), Muted: b.MuteMember.GetMuted()}}
	case *clientv1.ClientFrame_Rename:
		cmd.ConversationId, cmd.ClientMsgId = b.Rename.GetConversationId(), b.Rename.GetClientMsgId()
		cmd.Body = &logv1.Command_Rename{Rename: &logv1.Rename{Title: b.Rename.GetTitle()}}
	case *clientv1.ClientFrame_CreateInvite:
		cmd.ConversationId, cmd.ClientMsgId = b.CreateInvite.GetConversationId(), b.CreateInvite.GetClientMsgId()
		cmd.Body = &logv1.Command_CreateInvite{CreateInvite: &logv1.CreateInvite{Code: b.CreateInvite.GetCode()}}
	case *clientv1.ClientFrame_RevokeInvite:
		cmd.ConversationId, cmd.ClientMsgId = b.RevokeInvite.GetConversationId(), b.RevokeInvite.GetClientMsgId()
		cmd.Body = &logv1.Command_RevokeInvite{RevokeInvite: &logv1.RevokeInvite{Code: b.RevokeInvite.GetCode()}}
	case *clientv1.ClientFrame_JoinByInvite:
		cmd.ConversationId, cmd.ClientMsgId = b.JoinByInvite.GetConversationId(), b.JoinByInvite.GetClientMsgId()
		cmd.Body = &logv1.Command_JoinByInvite{JoinByInvite: &logv1.JoinByInvite{Code: b.JoinByInvite.GetCode()}}
	case *clientv1.ClientFrame_Follow:
		cmd.ConversationId, cmd.ClientMsgId = b.Follow.GetConversationId(), b.Follow.GetClientMsgId()
		cmd.Body = &logv1.Command_Follow{Follow: &logv1.Follow{}}
	case *clientv1.ClientFrame_SetFlags:
		f := b.SetFlags
		cmd.ConversationId = f.GetConversationId()
		cmd.Body = &logv1.Command_SetFlags{SetFlags: &logv1.SetFlags{Muted: f.Muted, Pinned: f.Pinned}}
	case *clientv1.ClientFrame_BlockUser:
		cmd.Body = &logv1.Command_Block{Block: &logv1.Block{UserId: b.BlockUser.GetUserId(), Blocked: true}}
	case *clientv1.ClientFrame_UnblockUser:
		cmd.Body = &logv1.Command_Block{Block: &logv1.Block{UserId: b.UnblockUser.GetUserId(), Blocked: false}}
	case *clientv1.ClientFrame_ListConversations:
		resp, err := c.svc.persistence.Conversations(ctx, &persistencev1.ConversationsRequest{
			UserId: c.user, Limit: b.ListConversations.GetLimit(), ChangedSince: b.ListConversations.GetChangedSince(),
		})
		if err != nil {
			code, msg := grpcError(err)
			return errFrame(code, msg, "")
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Conversations{Conversations: &clientv1.ConversationList{
			Conversations: resp.GetConversations(), SyncToken: resp.GetSyncToken(),
		}}})
	case *clientv1.ClientFrame_ListBlocks:
		// Always the connection's own user: who blocks whom is private,
		// so the frame takes no user to ask about.
		resp, err := c.svc.persistence.Blocks(ctx, &persistencev1.BlocksRequest{UserId: c.user})
		if err != nil {
			code, msg := grpcError(err)
			return errFrame(code, msg, "")
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Blocks{Blocks: &clientv1.BlockList{UserIds: resp.GetBlockedIds()}}})
	case *clientv1.ClientFrame_GetReceipts:
		if b.GetReceipts.GetConversationId() == "" {
			return errFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "conversation_id is required", "")
		}
		resp, err := c.svc.persistence.Receipts(ctx, &persistencev1.ReceiptsRequest{UserId: c.user, ConversationId: b.GetReceipts.GetConversationId()})
		if err != nil {
			code, msg := grpcError(err)
			return errFrame(code, msg, "")
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Receipts{Receipts: &clientv1.ReceiptBatch{Receipts: resp.GetReceipts()}}})
	case *clientv1.ClientFrame_Typing:
		ind, err := c.typing(ctx, b.Typing)
		if err != nil {
			code, msg := grpcError(err)
			return errFrame(code, msg, "")
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Typing{Typing: &clientv1.TypingBatch{Typing: []*chatv1.Typing{ind}}}})
	case *clientv1.ClientFrame_SetIdle:
		c.mu.Lock()
		changed := c.idle != b.SetIdle.GetIdle()
		c.idle = b.SetIdle.GetIdle()
		s := c.sessionLocked()
		c.mu.Unlock()
		if changed {
			c.svc.reporter.update(s)
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Pong{Pong: &clientv1.Pong{}}})
	case *clientv1.ClientFrame_WatchPresence:
		ps, err := c.watch(ctx, b.WatchPresence.GetUserIds())
		if err != nil {
			code, msg := grpcError(err)
			return errFrame(code, msg, "")
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Presence{Presence: &clientv1.PresenceList{Presence: ps}}})
	case *clientv1.ClientFrame_GetPresence:
		ps, err := c.presenceOf(ctx, b.GetPresence.GetUserIds())
		if err != nil {
			code, msg := grpcError(err)
			return errFrame(code, msg, "")
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Presence{Presence: &clientv1.PresenceList{Presence: ps}}})
	case *clientv1.ClientFrame_Mark:
		cmd.ConversationId = b.Mark.GetConversationId()
		cmd.Body = &logv1.Command_Mark{Mark: &logv1.Mark{DeliveredSeq: b.Mark.GetDeliveredSeq(), ReadSeq: b.Mark.GetReadSeq()}}
	case *clientv1.ClientFrame_GetHistory:
		q := b.GetHistory
		if q.GetConversationId() == "" {
			return errFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "conversation_id is required", "")
		}
		resp, err := c.svc.persistence.History(ctx, &persistencev1.HistoryRequest{
			UserId: c.user, ConversationId: q.GetConversationId(), BeforeSeq: q.GetBeforeSeq(), AfterSeq: q.AfterSeq, Limit: q.GetLimit(),
		})
		if err != nil {
			code, msg := grpcError(err)
			return errFrame(code, msg, "")
		}
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_History{History: &clientv1.HistoryPage{
			ConversationId: q.GetConversationId(), Events: resp.GetEvents(), HasMore: resp.GetHasMore(),
		}}})
	default:
		return errFrame(chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, "frame has no known type", "")
	}
	resp, err := c.svc.ingest.Submit(ctx, &ingestv1.SubmitRequest{Command: cmd})
	if err != nil {
		code, msg := grpcError(err)
		if code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE {
			// The command may already be in the log: only a retry with
			// the same id is sure not to post it twice.
			msg += "; retry with the same client_msg_id"
		}
		return errFrame(code, msg, cmd.GetClientMsgId())
	}
	o := resp.GetOutcome()
	if o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return errFrame(o.GetErrorCode(), o.GetErrorMessage(), cmd.GetClientMsgId())
	}
	if bl := cmd.GetBlock(); bl != nil {
		// The direct conversation stays out of the answer: blocking names
		// a user, not a conversation.
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_BlockStatus{BlockStatus: &clientv1.BlockStatus{UserId: bl.GetUserId(), Blocked: bl.GetBlocked()}}})
	}
	if cmd.GetSetFlags() != nil {
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Flags{Flags: &clientv1.FlagsBatch{Flags: []*chatv1.ConversationFlags{o.GetFlags()}}}})
	}
	if o.GetReceipt() != nil {
		return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Receipts{Receipts: &clientv1.ReceiptBatch{Receipts: []*chatv1.Receipt{o.GetReceipt()}}}})
	}
	return reply(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Accepted{Accepted: &clientv1.Accepted{
		ClientMsgId: o.GetClientMsgId(), ConversationId: o.GetConversationId(), Seq: o.GetSeq(), Duplicate: o.GetDuplicate(),
	}}})
}

// grpcError maps an internal call's failure to a client error code.
func grpcError(err error) (chatv1.ErrorCode, string) {
	st := status.Convert(err)
	switch st.Code() {
	case codes.PermissionDenied:
		return chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER, st.Message()
	case codes.NotFound:
		return chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, st.Message()
	case codes.InvalidArgument:
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, st.Message()
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted:
		return chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "temporarily unavailable"
	}
	return chatv1.ErrorCode_ERROR_CODE_INTERNAL, fmt.Sprintf("internal error (%s)", st.Code())
}

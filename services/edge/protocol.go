package edge

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/trace"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// handlers answer the frames of an authenticated connection, one entry
// per frame type, grouped by family (each family's handlers are in the
// file named after it). A frame that becomes a command is only mapped
// here: the sequencer decides it.
var handlers = table(
	on(ping),
	on(alreadyAuthenticated), // auth.go
	on(refreshToken),         // tokenclock.go

	on(command(sendMessage, accepted)), // messages.go
	on(command(editMessage, accepted)),
	on(command(deleteMessage, accepted)),
	on(command(react, accepted)),

	on(consent(groupMembers, strangers(command(createConversation, accepted)))), // conversations.go; consent: access.go; strangers: contacts.go
	on(consent(addedMember, command(addMember, accepted))),
	on(command(removeMember, accepted)),
	on(command(leave, accepted)),
	on(command(setRole, accepted)),
	on(command(transferOwnership, accepted)),
	on(command(muteMember, accepted)),
	on(command(rename, accepted)),
	on(command(createInvite, accepted)),
	on(command(revokeInvite, accepted)),
	on(command(joinByInvite, accepted)),
	on(command(follow, accepted)),
	on(listConversations),

	on(command(mark, accepted)), // receipts.go
	on(getReceipts),

	on(typing), // typing.go

	on(getPresence), // presence.go
	on(watchPresence),
	on(setIdle),

	on(command(blockUser, blockStatus)), // blocks.go
	on(command(unblockUser, blockStatus)),
	on(listBlocks),
	on(command(setFlags, flagsSet)),

	on(command(requestContact, contactStatus)), // contacts.go
	on(command(respondContact, contactStatus)),
	on(command(cancelContact, contactStatus)),
	on(listContacts),
	on(command(respondInvitation, invitationStatus)),
	on(command(setSettings, settingsSet)),
	on(getSettings),

	on(getHistory), // history.go
)

// A handler answers one frame; handle gives the answer the frame's
// request id.
type handler func(ctx context.Context, c *conn, f *clientv1.ClientFrame) *clientv1.ServerFrame

// route is a handler and the type of the frame body it answers, a
// ClientFrame oneof wrapper such as *clientv1.ClientFrame_Ping.
type route struct {
	body reflect.Type
	h    handler
}

// on routes the frames whose body is B to h.
func on[B any](h func(ctx context.Context, c *conn, body B) *clientv1.ServerFrame) route {
	return route{reflect.TypeFor[B](), func(ctx context.Context, c *conn, f *clientv1.ClientFrame) *clientv1.ServerFrame {
		return h(ctx, c, f.GetFrame().(B))
	}}
}

func table(routes ...route) map[reflect.Type]handler {
	t := make(map[reflect.Type]handler, len(routes))
	for _, r := range routes {
		if t[r.body] != nil {
			panic(fmt.Sprintf("edge: two handlers of %v", r.body))
		}
		t[r.body] = r.h
	}
	return t
}

// handle answers one authenticated frame.
func (c *conn) handle(ctx context.Context, f *clientv1.ClientFrame) *clientv1.ServerFrame {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.svc.cfg.RequestTimeout)
	defer cancel()
	ctx, span, typ := c.startFrame(ctx, f)
	var out *clientv1.ServerFrame
	if c.token.expired.Load() {
		// Between the expiry and the close nothing acts as the user.
		out = errorFrame(chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED, "token expired", "")
	} else if h := handlers[reflect.TypeOf(f.GetFrame())]; h != nil {
		out = h(ctx, c, f)
	} else {
		out = errorFrame(chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, "frame has no known type", "")
	}
	out.RequestId = f.GetRequestId()
	c.endFrame(ctx, span, typ, start, out)
	return out
}

func ping(context.Context, *conn, *clientv1.ClientFrame_Ping) *clientv1.ServerFrame {
	return pong()
}

func pong() *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Pong{Pong: &clientv1.Pong{}}}
}

// command is the handler of a frame that becomes a command: build fills
// in what the frame says, and answer turns the sequencer's outcome into
// the reply.
func command[B any](build func(body B, cmd *logv1.Command), answer func(*logv1.Command, *logv1.Outcome) *clientv1.ServerFrame) func(context.Context, *conn, B) *clientv1.ServerFrame {
	return func(ctx context.Context, c *conn, body B) *clientv1.ServerFrame {
		cmd := &logv1.Command{UserId: c.user, DeviceId: c.device}
		build(body, cmd)
		// A mark or a flag of an audience of the user's is theirs to set
		// (audiences.go): the edge vouches for it.
		cmd.Audience = c.audienceMember(cmd.GetConversationId())
		trace.SpanFromContext(ctx).SetAttributes(attrConv.String(cmd.GetConversationId()))
		resp, err := c.svc.clients.ingest.Submit(ctx, &ingestv1.SubmitRequest{Command: cmd})
		if err != nil {
			code, msg := grpcError(err)
			if code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE {
				// The command may already be in the log: only a retry with
				// the same id is sure not to post it twice.
				msg += "; retry with the same client_msg_id"
			}
			return errorFrame(code, msg, cmd.GetClientMsgId())
		}
		o := resp.GetOutcome()
		if o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return errorFrame(o.GetErrorCode(), o.GetErrorMessage(), cmd.GetClientMsgId())
		}
		return answer(cmd, o)
	}
}

// accepted answers a command the sequencer accepted: with the position it
// moved, for a mark, else with where the command landed.
func accepted(_ *logv1.Command, o *logv1.Outcome) *clientv1.ServerFrame {
	if o.GetReceipt() != nil {
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Receipts{Receipts: &clientv1.ReceiptBatch{Receipts: []*chatv1.Receipt{o.GetReceipt()}}}}
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Accepted{Accepted: &clientv1.Accepted{
		ClientMsgId: o.GetClientMsgId(), ConversationId: o.GetConversationId(), Seq: o.GetSeq(), Duplicate: o.GetDuplicate(),
	}}}
}

func errorFrame(code chatv1.ErrorCode, msg, clientMsgID string) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{Code: code, Message: msg, ClientMsgId: clientMsgID}}}
}

// failed answers a request whose internal call failed.
func failed(err error) *clientv1.ServerFrame {
	code, msg := grpcError(err)
	return errorFrame(code, msg, "")
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

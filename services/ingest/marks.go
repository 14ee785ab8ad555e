package ingest

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// prepareMark checks a mark. A mark is about a device's position, so it
// needs the device. A mark of zeros moves nothing: it asks for the
// conversation's head (Outcome.seq), as a resume does.
func prepareMark(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	if cmd.GetDeviceId() == "" {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a mark needs a device id"
	}
	return needConversation(cmd)
}

// decideMark moves a device's positions. A receipt takes no seq: positions
// are state, not history, so they neither show in history nor count as
// unread for anyone. Nothing is logged when nothing moves, which makes a
// repeated Mark free and idempotent.
func decideMark(c *conversation, cmd *logv1.Command, m *logv1.Mark, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
	switch {
	case !c.exists() || !c.isMember(cmd.GetUserId()) && !c.readsAudience(cmd):
		// One answer for both (notFound).
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, NoSuchConversation
		return nil, out
	case cmd.GetDeviceId() == "":
		// Prepare refuses these; a position belongs to a device.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a mark needs a device id"
		return nil, out
	case max(m.GetDeliveredSeq(), m.GetReadSeq()) > c.lastSeq:
		out.ErrorCode = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
		out.ErrorMessage = fmt.Sprintf("seq %d is beyond the conversation's last seq %d", max(m.GetDeliveredSeq(), m.GetReadSeq()), c.lastSeq)
		return nil, out
	}
	moved := c.move(cmd.GetUserId(), cmd.GetDeviceId(), m.GetDeliveredSeq(), m.GetReadSeq())
	out.Receipt = c.receipt(cmd.GetUserId(), cmd.GetDeviceId())
	// The head: every event up to it is on the log before this outcome,
	// which is what lets a resume know where history must reach.
	out.Seq = c.lastSeq
	if !moved {
		return nil, out
	}
	r := proto.CloneOf(out.Receipt)
	r.Time = timestamppb.New(now)
	recipients := append([]string(nil), c.members()...)
	if c.kind() == chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE {
		// A reader's position is theirs alone: not the whole audience's
		// to be pushed.
		recipients = []string{cmd.GetUserId()}
	}
	return &logv1.EventRecord{Receipt: r, RecipientIds: recipients, CommandId: cmd.GetCommandId()}, out
}

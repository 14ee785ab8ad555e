package ingest

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// A user's muted and pinned flags of a conversation are their own state,
// decided here like a Mark: checked against membership, logged only when
// something changed, as a seq-less record whose one recipient is the user,
// so that every device of theirs is told and nobody else is.

// prepareFlags checks a flags command: one that sets nothing is a
// mistake worth telling.
func prepareFlags(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	if f := cmd.GetSetFlags(); f.Muted == nil && f.Pinned == nil {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "set muted, pinned or both"
	}
	return needConversation(cmd)
}

// decideFlags applies a SetFlags command. The outcome carries the user's
// flags after it, changed or not, which is what the edge answers with.
func decideFlags(c *conversation, cmd *logv1.Command, f *logv1.SetFlags, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
	user := cmd.GetUserId()
	switch {
	case !c.exists() || !c.isMember(user) && !c.readsAudience(cmd):
		// One answer for both (notFound).
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, NoSuchConversation
		return nil, out
	case f.Muted == nil && f.Pinned == nil:
		// Prepare refuses these.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "set muted, pinned or both"
		return nil, out
	}
	cur := c.flagsOf(user)
	next := proto.CloneOf(cur)
	if f.Muted != nil {
		next.Muted = f.GetMuted()
	}
	if f.Pinned != nil {
		next.Pinned = f.GetPinned()
	}
	if next.GetMuted() == cur.GetMuted() && next.GetPinned() == cur.GetPinned() {
		out.Flags = cur
		return nil, out
	}
	next.Version = cur.GetVersion() + 1
	next.Time = timestamppb.New(now)
	c.applyFlags(next)
	out.Flags = next
	return &logv1.EventRecord{Flags: proto.CloneOf(next), RecipientIds: []string{user}, CommandId: cmd.GetCommandId()}, out
}

// flagsOf is user's current flags; version 0 when they never set any.
func (c *conversation) flagsOf(user string) *chatv1.ConversationFlags {
	if f := c.flags[user]; f != nil {
		return proto.CloneOf(f)
	}
	return &chatv1.ConversationFlags{ConversationId: c.id, UserId: user}
}

// applyFlags keeps the flags of the highest version. Flags outlive a
// membership: a user who leaves and comes back finds their settings as
// they left them.
func (c *conversation) applyFlags(f *chatv1.ConversationFlags) {
	if cur := c.flags[f.GetUserId()]; cur != nil && cur.GetVersion() >= f.GetVersion() {
		return
	}
	c.flags[f.GetUserId()] = proto.CloneOf(f)
}

package ingest

import (
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// prepareBlock checks a block. A block is state, set or not; its
// conversation is the pair's direct one, never the client's say.
func prepareBlock(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	switch u := cmd.GetBlock().GetUserId(); {
	case !auth.ValidUserID(u):
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "invalid user id to block"
	case u == cmd.GetUserId():
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "you cannot block yourself"
	default:
		cmd.ConversationId = DirectID(cmd.GetUserId(), u)
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// decideBlock blocks or unblocks. The record takes no seq and names no
// recipients: nothing of it shows in history, and fan-out pushes it to
// nobody, so the blocked user is never told. The blocker's own answer is
// the outcome. Blocking someone one never talked to leaves an aggregate
// without events that holds the block, so a later attempt to open the
// conversation is refused.
func decideBlock(convs map[string]*conversation, cmd *logv1.Command, b *logv1.Block, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
	c := convs[cmd.GetConversationId()]
	if c.exists() && c.kind() != chatv1.ConversationKind_CONVERSATION_KIND_DIRECT {
		// Prepare derives the id from the pair; only a forged command
		// lands here.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "blocks belong to direct conversations"
		return nil, out
	}
	user := cmd.GetUserId()
	if c != nil && c.blocks[user] == b.GetBlocked() {
		return nil, out
	}
	if c == nil {
		c = newConversation(cmd.GetConversationId())
		convs[c.id] = c
	}
	// Persistence ranks a pair's block records by time, to the
	// microsecond (Cassandra's write timestamps), so each one here is
	// stamped strictly after the one before, whatever the clock says (it
	// may have stepped back, or another instance may have written that one).
	at := now.Truncate(time.Microsecond)
	if !at.After(c.lastBlock) {
		at = c.lastBlock.Add(time.Microsecond)
	}
	rec := &logv1.BlockChange{ConversationId: c.id, BlockerId: user, BlockedId: b.GetUserId(), Blocked: b.GetBlocked(), Time: timestamppb.New(at)}
	c.applyBlock(rec)
	return &logv1.EventRecord{Block: rec, CommandId: cmd.GetCommandId()}, out
}

func (c *conversation) applyBlock(b *logv1.BlockChange) {
	if t := b.GetTime().AsTime(); t.After(c.lastBlock) {
		c.lastBlock = t
	}
	if b.GetBlocked() {
		c.blocks[b.GetBlockerId()] = true
	} else {
		delete(c.blocks, b.GetBlockerId())
	}
}

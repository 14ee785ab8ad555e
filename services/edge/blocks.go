package edge

import (
	"context"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// Blocks and a conversation's flags are the user's own: commands the
// sequencer decides, answered with the state they set rather than with a
// seq.

func blockUser(b *clientv1.ClientFrame_BlockUser, cmd *logv1.Command) {
	cmd.Body = &logv1.Command_Block{Block: &logv1.Block{UserId: b.BlockUser.GetUserId(), Blocked: true}}
}

func unblockUser(b *clientv1.ClientFrame_UnblockUser, cmd *logv1.Command) {
	cmd.Body = &logv1.Command_Block{Block: &logv1.Block{UserId: b.UnblockUser.GetUserId(), Blocked: false}}
}

// blockStatus leaves the direct conversation out of the answer: blocking
// names a user, not a conversation.
func blockStatus(cmd *logv1.Command, _ *logv1.Outcome) *clientv1.ServerFrame {
	bl := cmd.GetBlock()
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_BlockStatus{BlockStatus: &clientv1.BlockStatus{UserId: bl.GetUserId(), Blocked: bl.GetBlocked()}}}
}

func listBlocks(ctx context.Context, c *conn, _ *clientv1.ClientFrame_ListBlocks) *clientv1.ServerFrame {
	// Always the connection's own user: who blocks whom is private, so the
	// frame takes no user to ask about.
	resp, err := c.svc.clients.persistence.Blocks(ctx, &persistencev1.BlocksRequest{UserId: c.user})
	if err != nil {
		return failed(err)
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Blocks{Blocks: &clientv1.BlockList{UserIds: resp.GetBlockedIds()}}}
}

func setFlags(b *clientv1.ClientFrame_SetFlags, cmd *logv1.Command) {
	f := b.SetFlags
	cmd.ConversationId = f.GetConversationId()
	cmd.Body = &logv1.Command_SetFlags{SetFlags: &logv1.SetFlags{Muted: f.Muted, Pinned: f.Pinned}}
}

// flagsSet answers with the user's flags after the command.
func flagsSet(_ *logv1.Command, o *logv1.Outcome) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Flags{Flags: &clientv1.FlagsBatch{Flags: []*chatv1.ConversationFlags{o.GetFlags()}}}}
}

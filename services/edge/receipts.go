package edge

import (
	"context"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// Receipts: a device's mark is a command (the sequencer keeps positions);
// get_receipts reads them from persistence, which checks membership.

func mark(b *clientv1.ClientFrame_Mark, cmd *logv1.Command) {
	cmd.ConversationId = b.Mark.GetConversationId()
	cmd.Body = &logv1.Command_Mark{Mark: &logv1.Mark{DeliveredSeq: b.Mark.GetDeliveredSeq(), ReadSeq: b.Mark.GetReadSeq()}}
}

func getReceipts(ctx context.Context, c *conn, b *clientv1.ClientFrame_GetReceipts) *clientv1.ServerFrame {
	if b.GetReceipts.GetConversationId() == "" {
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "conversation_id is required", "")
	}
	resp, err := c.svc.clients.persistence.Receipts(ctx, &persistencev1.ReceiptsRequest{UserId: c.user, ConversationId: b.GetReceipts.GetConversationId()})
	if err != nil {
		return failed(err)
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Receipts{Receipts: &clientv1.ReceiptBatch{Receipts: resp.GetReceipts()}}}
}

package edge

import (
	"context"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// getHistory pages a conversation's history from persistence, which checks
// membership.
func getHistory(ctx context.Context, c *conn, b *clientv1.ClientFrame_GetHistory) *clientv1.ServerFrame {
	q := b.GetHistory
	if q.GetConversationId() == "" {
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "conversation_id is required", "")
	}
	resp, err := c.svc.clients.persistence.History(ctx, &persistencev1.HistoryRequest{
		UserId: c.reader(q.GetConversationId()), ConversationId: q.GetConversationId(), BeforeSeq: q.GetBeforeSeq(), AfterSeq: q.AfterSeq, Limit: q.GetLimit(),
	})
	if err != nil {
		return failed(err)
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_History{History: &clientv1.HistoryPage{
		ConversationId: q.GetConversationId(), Events: resp.GetEvents(), HasMore: resp.GetHasMore(),
	}}}
}

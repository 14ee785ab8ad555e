package edge

import (
	"context"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// Conversations and groups: creating one and changing its members, roles,
// title and invites are commands the sequencer decides; the list is
// persistence's, always of the connection's own user.

func createConversation(b *clientv1.ClientFrame_CreateConversation, cmd *logv1.Command) {
	cc := b.CreateConversation
	cmd.ConversationId, cmd.ClientMsgId = cc.GetConversationId(), cc.GetClientMsgId()
	cmd.Body = &logv1.Command_CreateConversation{CreateConversation: &logv1.CreateConversation{
		Kind: cc.GetKind(), Title: cc.GetTitle(), MemberIds: cc.GetMemberIds(), Public: cc.GetPublic(), Consent: cc.GetConsent(),
	}}
}

func addMember(b *clientv1.ClientFrame_AddMember, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.AddMember.GetConversationId(), b.AddMember.GetClientMsgId()
	cmd.Body = &logv1.Command_AddMember{AddMember: &logv1.AddMember{UserId: b.AddMember.GetUserId()}}
}

func removeMember(b *clientv1.ClientFrame_RemoveMember, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.RemoveMember.GetConversationId(), b.RemoveMember.GetClientMsgId()
	cmd.Body = &logv1.Command_RemoveMember{RemoveMember: &logv1.RemoveMember{UserId: b.RemoveMember.GetUserId()}}
}

func leave(b *clientv1.ClientFrame_Leave, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.Leave.GetConversationId(), b.Leave.GetClientMsgId()
	cmd.Body = &logv1.Command_Leave{Leave: &logv1.Leave{}}
}

func setRole(b *clientv1.ClientFrame_SetRole, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.SetRole.GetConversationId(), b.SetRole.GetClientMsgId()
	cmd.Body = &logv1.Command_SetRole{SetRole: &logv1.SetRole{UserId: b.SetRole.GetUserId(), Role: b.SetRole.GetRole()}}
}

func transferOwnership(b *clientv1.ClientFrame_TransferOwnership, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.TransferOwnership.GetConversationId(), b.TransferOwnership.GetClientMsgId()
	cmd.Body = &logv1.Command_TransferOwnership{TransferOwnership: &logv1.TransferOwnership{UserId: b.TransferOwnership.GetUserId()}}
}

func muteMember(b *clientv1.ClientFrame_MuteMember, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.MuteMember.GetConversationId(), b.MuteMember.GetClientMsgId()
	cmd.Body = &logv1.Command_MuteMember{MuteMember: &logv1.MuteMember{UserId: b.MuteMember.GetUserId(), Muted: b.MuteMember.GetMuted()}}
}

func rename(b *clientv1.ClientFrame_Rename, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.Rename.GetConversationId(), b.Rename.GetClientMsgId()
	cmd.Body = &logv1.Command_Rename{Rename: &logv1.Rename{Title: b.Rename.GetTitle()}}
}

func createInvite(b *clientv1.ClientFrame_CreateInvite, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.CreateInvite.GetConversationId(), b.CreateInvite.GetClientMsgId()
	cmd.Body = &logv1.Command_CreateInvite{CreateInvite: &logv1.CreateInvite{Code: b.CreateInvite.GetCode()}}
}

func revokeInvite(b *clientv1.ClientFrame_RevokeInvite, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.RevokeInvite.GetConversationId(), b.RevokeInvite.GetClientMsgId()
	cmd.Body = &logv1.Command_RevokeInvite{RevokeInvite: &logv1.RevokeInvite{Code: b.RevokeInvite.GetCode()}}
}

func joinByInvite(b *clientv1.ClientFrame_JoinByInvite, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.JoinByInvite.GetConversationId(), b.JoinByInvite.GetClientMsgId()
	cmd.Body = &logv1.Command_JoinByInvite{JoinByInvite: &logv1.JoinByInvite{Code: b.JoinByInvite.GetCode()}}
}

func follow(b *clientv1.ClientFrame_Follow, cmd *logv1.Command) {
	cmd.ConversationId, cmd.ClientMsgId = b.Follow.GetConversationId(), b.Follow.GetClientMsgId()
	cmd.Body = &logv1.Command_Follow{Follow: &logv1.Follow{}}
}

func listConversations(ctx context.Context, c *conn, b *clientv1.ClientFrame_ListConversations) *clientv1.ServerFrame {
	resp, err := c.svc.clients.persistence.Conversations(ctx, &persistencev1.ConversationsRequest{
		UserId: c.user, Limit: b.ListConversations.GetLimit(), ChangedSince: b.ListConversations.GetChangedSince(),
	})
	if err != nil {
		return failed(err)
	}
	list := resp.GetConversations()
	if len(c.audiences) > 0 {
		// The user is no member of their audiences, so persistence does
		// not list them; they follow the list, each as the user reads it
		// (whatever changed_since says: they are few).
		ids := make([]string, len(c.audiences))
		for i, a := range c.audiences {
			ids[i] = a.conv
		}
		aud, err := c.svc.clients.persistence.Summaries(ctx, &persistencev1.SummariesRequest{UserId: c.user, ConversationIds: ids})
		if err != nil {
			return failed(err)
		}
		list = append(list, aud.GetConversations()...)
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Conversations{Conversations: &clientv1.ConversationList{
		Conversations: list, SyncToken: resp.GetSyncToken(),
	}}}
}

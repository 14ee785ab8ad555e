package edge

import (
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Messages: posting, editing, deleting and reacting are commands; whether
// the user may is the sequencer's decision.

func sendMessage(b *clientv1.ClientFrame_SendMessage, cmd *logv1.Command) {
	m := b.SendMessage
	cmd.ConversationId, cmd.ClientMsgId = m.GetConversationId(), m.GetClientMsgId()
	cmd.Body = &logv1.Command_PostMessage{PostMessage: &logv1.PostMessage{
		Text: m.GetText(), Attachments: m.GetAttachments(), Contact: m.GetContact(), ReplyToSeq: m.GetReplyToSeq(), MentionIds: m.GetMentionIds(),
	}}
}

func editMessage(b *clientv1.ClientFrame_EditMessage, cmd *logv1.Command) {
	e := b.EditMessage
	cmd.ConversationId, cmd.ClientMsgId = e.GetConversationId(), e.GetClientMsgId()
	cmd.Body = &logv1.Command_EditMessage{EditMessage: &logv1.EditMessage{TargetSeq: e.GetTargetSeq(), Text: e.GetText(), MentionIds: e.GetMentionIds()}}
}

func deleteMessage(b *clientv1.ClientFrame_DeleteMessage, cmd *logv1.Command) {
	d := b.DeleteMessage
	cmd.ConversationId, cmd.ClientMsgId = d.GetConversationId(), d.GetClientMsgId()
	cmd.Body = &logv1.Command_DeleteMessage{DeleteMessage: &logv1.DeleteMessage{TargetSeq: d.GetTargetSeq()}}
}

func react(b *clientv1.ClientFrame_React, cmd *logv1.Command) {
	r := b.React
	cmd.ConversationId, cmd.ClientMsgId = r.GetConversationId(), r.GetClientMsgId()
	cmd.Body = &logv1.Command_React{React: &logv1.React{TargetSeq: r.GetTargetSeq(), Emoji: r.GetEmoji(), Remove: r.GetRemove()}}
}

package ingest

import (
	"time"

	"github.com/parleychat/parley/pkg/server/membership"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/google/uuid"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// In a conversation with consent (ConversationCreated.consent), adding a
// user invites them: a MemberInvited event that the members see, and an
// item in the invitee's inbox, handed on with it. The invitee joins only
// by accepting (a MemberJoined event, which they then receive with
// everything after it) or declines (a seq-less record the members are not
// shown); either answer is told to the invitee's own devices through
// their inbox.

// handOnInvitation takes an invitation the sequencer just logged to the
// invitee's inbox.
func handOnInvitation(convs map[string]*conversation, cmd *logv1.Command, rec *logv1.EventRecord) []*logv1.Command {
	inv := rec.GetEvent().GetMemberInvited()
	if inv == nil {
		return nil
	}
	c := convs[cmd.GetConversationId()]
	return []*logv1.Command{c.invitationItem(cmd, 0, inv.GetUserId(), cmd.GetUserId(), chatv1.InvitationAction_INVITATION_ACTION_INVITED)}
}

// invitationItem is the n-th command src hands on: an item for invitee's
// inbox about their invitation into c.
func (c *conversation) invitationItem(src *logv1.Command, n int, invitee, inviter string, action chatv1.InvitationAction) *logv1.Command {
	cmd := derive(src, n, membership.InboxID(invitee), src.GetUserId())
	cmd.Body = &logv1.Command_InboxDeliver{InboxDeliver: &logv1.InboxDeliver{OwnerId: invitee, Item: &logv1.InboxDeliver_InvitationUpdated{
		InvitationUpdated: &chatv1.InvitationUpdated{ConversationId: c.id, Title: c.sum.GetTitle(), Kind: c.kind(), InviterId: inviter,
			Action: action, OwnerId: invitee}}}}
	return cmd
}

// endInvitation forgets user's pending invitation: they joined, or
// declined.
func (c *conversation) endInvitation(user string) {
	delete(c.invited, user)
	delete(c.invitedAt, user)
}

// decideAnswer decides the user's answer to their invitation into the
// command's conversation. Accepting again once a member answers as before,
// with the seq of the conversation's head.
func decideAnswer(convs map[string]*conversation, cmd *logv1.Command, maxMembers int, out *logv1.Outcome, now time.Time) decision {
	user := cmd.GetUserId()
	accept := cmd.GetAnswerInvitation().GetAccept()
	c := convs[cmd.GetConversationId()]
	refuse := func(code chatv1.ErrorCode, msg string) decision {
		out.ErrorCode, out.ErrorMessage = code, msg
		return decision{out: out}
	}
	inviter, invited := "", false
	if c.exists() {
		inviter, invited = c.invited[user]
	}
	switch {
	case c.exists() && c.isMember(user) && accept:
		out.Seq, out.Duplicate = c.lastSeq, true
		return decision{out: out}
	case !invited:
		// One answer whether the conversation exists or not.
		return refuse(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no invitation to this conversation")
	case accept && len(c.members()) >= maxMembers:
		return refuse(chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL, "conversation is full")
	}
	d := decision{out: out}
	action := chatv1.InvitationAction_INVITATION_ACTION_DECLINED
	if accept {
		action = chatv1.InvitationAction_INVITATION_ACTION_ACCEPTED
		ev := &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), SenderId: user, SenderDeviceId: cmd.GetDeviceId(),
			Time: timestamppb.New(now), Body: &chatv1.Event_MemberJoined{MemberJoined: &chatv1.MemberJoined{UserId: user}}}
		rec := c.appendEvent(ev, cmd.GetCommandId())
		d.recs = append(d.recs, rec)
		out.Seq = ev.GetSeq()
	} else {
		c.endInvitation(user)
		d.recs = append(d.recs, &logv1.EventRecord{CommandId: cmd.GetCommandId(),
			Declined: &logv1.InvitationDeclined{ConversationId: c.id, UserId: user, Time: timestamppb.New(now)}})
	}
	d.derived = append(d.derived, c.invitationItem(cmd, 0, user, inviter, action))
	return d
}

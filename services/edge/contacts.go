package edge

import (
	"context"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// Contact requests are state of a pair, decided by the sequencer in the
// pair's direct conversation (which ingest derives from the two users),
// and answered with the user's view of the pair after the command. What
// each side is told arrives as items of their inbox.

func requestContact(b *clientv1.ClientFrame_RequestContact, cmd *logv1.Command) {
	cmd.Body = &logv1.Command_ContactRequest{ContactRequest: &logv1.ContactRequest{UserId: b.RequestContact.GetUserId()}}
}

func respondContact(b *clientv1.ClientFrame_RespondContact, cmd *logv1.Command) {
	r := b.RespondContact
	cmd.Body = &logv1.Command_ContactResponse{ContactResponse: &logv1.ContactResponse{UserId: r.GetUserId(), Accept: r.GetAccept()}}
}

func cancelContact(b *clientv1.ClientFrame_CancelContact, cmd *logv1.Command) {
	cmd.Body = &logv1.Command_ContactCancel{ContactCancel: &logv1.ContactCancel{UserId: b.CancelContact.GetUserId()}}
}

// contactStatus names the other user, not the pair's conversation: a
// request is about a person.
func contactStatus(cmd *logv1.Command, o *logv1.Outcome) *clientv1.ServerFrame {
	var user string
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_ContactRequest:
		user = b.ContactRequest.GetUserId()
	case *logv1.Command_ContactResponse:
		user = b.ContactResponse.GetUserId()
	case *logv1.Command_ContactCancel:
		user = b.ContactCancel.GetUserId()
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_ContactStatus{ContactStatus: &clientv1.ContactStatus{UserId: user, State: o.GetContactState()}}}
}

func listContacts(ctx context.Context, c *conn, _ *clientv1.ClientFrame_ListContacts) *clientv1.ServerFrame {
	// Always the connection's own user: the frame takes no user to ask
	// about.
	resp, err := c.svc.clients.persistence.Contacts(ctx, &persistencev1.ContactsRequest{UserId: c.user})
	if err != nil {
		return failed(err)
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Contacts{Contacts: &clientv1.ContactList{Contacts: resp.GetContacts()}}}
}

// An answer to an invitation is the invitee's command in the
// conversation they were invited into, decided by its sequencer.

func respondInvitation(b *clientv1.ClientFrame_RespondInvitation, cmd *logv1.Command) {
	cmd.ConversationId = b.RespondInvitation.GetConversationId()
	cmd.Body = &logv1.Command_AnswerInvitation{AnswerInvitation: &logv1.AnswerInvitation{Accept: b.RespondInvitation.GetAccept()}}
}

func invitationStatus(cmd *logv1.Command, o *logv1.Outcome) *clientv1.ServerFrame {
	accept := cmd.GetAnswerInvitation().GetAccept()
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_InvitationStatus{InvitationStatus: &clientv1.InvitationStatus{
		ConversationId: cmd.GetConversationId(), Joined: accept, Seq: o.GetSeq()}}}
}

package edge

import (
	"context"
	"slices"

	"github.com/parleychat/parley/pkg/server/auth"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
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

// A user's settings live in their inbox (SettingsChanged events), whose
// summary persistence keeps.

func setSettings(b *clientv1.ClientFrame_SetSettings, cmd *logv1.Command) {
	cmd.Body = &logv1.Command_SetSettings{SetSettings: &logv1.SetSettings{ContactsOnly: b.SetSettings.ContactsOnly}}
}

// settingsSet answers with what the command set: the sequencer accepted
// it, so that is the setting now (set anew, or already).
func settingsSet(cmd *logv1.Command, _ *logv1.Outcome) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Settings{Settings: &clientv1.Settings{ContactsOnly: cmd.GetSetSettings().GetContactsOnly()}}}
}

func getSettings(ctx context.Context, c *conn, _ *clientv1.ClientFrame_GetSettings) *clientv1.ServerFrame {
	only, err := c.svc.access.contactsOnly(ctx, c.user)
	if err != nil {
		return failed(err)
	}
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Settings{Settings: &clientv1.Settings{ContactsOnly: only}}}
}

// errContactsOnly refuses opening a direct conversation with a user who
// takes them from their contacts only.
var errContactsOnly = errorFrame(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "this user takes direct conversations from their contacts only: send a contact request", "")

// strangers refuses opening a direct conversation with a user who takes
// them from contacts only, when the sender is not one; the rest goes on.
// Both are read fresh from persistence, which follows a change by a
// moment: a command in that moment is let through.
func strangers(next func(context.Context, *conn, *clientv1.ClientFrame_CreateConversation) *clientv1.ServerFrame) func(context.Context, *conn, *clientv1.ClientFrame_CreateConversation) *clientv1.ServerFrame {
	return func(ctx context.Context, c *conn, b *clientv1.ClientFrame_CreateConversation) *clientv1.ServerFrame {
		cc := b.CreateConversation
		if cc.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_DIRECT || len(cc.GetMemberIds()) != 1 || cc.GetMemberIds()[0] == c.user ||
			!auth.ValidUserID(cc.GetMemberIds()[0]) {
			// Ingest answers the malformed ones.
			return next(ctx, c, b)
		}
		other := cc.GetMemberIds()[0]
		only, err := c.svc.access.contactsOnly(ctx, other)
		if err != nil {
			return failed(err)
		}
		if only {
			resp, err := c.svc.clients.persistence.Contacts(ctx, &persistencev1.ContactsRequest{UserId: other})
			if err != nil {
				return failed(err)
			}
			contact := slices.ContainsFunc(resp.GetContacts(), func(ct *chatv1.Contact) bool {
				return ct.GetUserId() == c.user && ct.GetState() == chatv1.ContactState_CONTACT_STATE_CONTACT
			})
			if !contact {
				out := proto.CloneOf(errContactsOnly)
				out.GetError().ClientMsgId = cc.GetClientMsgId()
				return out
			}
		}
		return next(ctx, c, b)
	}
}

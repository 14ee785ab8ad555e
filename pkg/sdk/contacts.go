package sdk

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// RequestContact asks user to become a contact. The request waits in
// their inbox until they answer; if they had asked first, it accepts
// theirs. It returns the caller's view of the pair after it.
func (c *Client) RequestContact(ctx context.Context, user string) (chatv1.ContactState, error) {
	return c.contactStatus(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RequestContact{RequestContact: &clientv1.RequestContact{UserId: user}}})
}

// RespondContact accepts or declines user's pending request. Accepting
// opens the direct conversation of the two.
func (c *Client) RespondContact(ctx context.Context, user string, accept bool) (chatv1.ContactState, error) {
	return c.contactStatus(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RespondContact{RespondContact: &clientv1.RespondContact{UserId: user, Accept: accept}}})
}

// CancelContact withdraws the caller's request to user, or removes user
// from the caller's contacts.
func (c *Client) CancelContact(ctx context.Context, user string) (chatv1.ContactState, error) {
	return c.contactStatus(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CancelContact{CancelContact: &clientv1.CancelContact{UserId: user}}})
}

// Contacts lists the caller's contacts and pending requests either way,
// in user id order. It is read from history, which follows the inbox by
// a moment: a list asked for right after a change may not show it yet.
func (c *Client) Contacts(ctx context.Context) ([]*chatv1.Contact, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListContacts{ListContacts: &clientv1.ListContacts{}}})
	if err != nil {
		return nil, err
	}
	if resp.GetContacts() == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return resp.GetContacts().GetContacts(), nil
}

func (c *Client) contactStatus(ctx context.Context, f *clientv1.ClientFrame) (chatv1.ContactState, error) {
	resp, err := c.Do(ctx, f)
	if err != nil {
		return chatv1.ContactState_CONTACT_STATE_UNSPECIFIED, err
	}
	s := resp.GetContactStatus()
	if s == nil {
		return chatv1.ContactState_CONTACT_STATE_UNSPECIFIED, fmt.Errorf("unexpected answer %v", resp)
	}
	return s.GetState(), nil
}

// CreateConsentGroup creates a group with consent, the caller alone in
// it: AddMember then invites, and each invitee joins only by accepting
// (RespondInvitation) the item their inbox gets.
func (c *Client) CreateConsentGroup(ctx context.Context, title string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
		ClientMsgId: NewClientMsgID(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: title,
		ConversationId: uuid.Must(uuid.NewV7()).String(), Consent: true,
	}}})
}

// RespondInvitation accepts (joining) or declines the caller's invitation
// into conversationID.
func (c *Client) RespondInvitation(ctx context.Context, conversationID string, accept bool) (*clientv1.InvitationStatus, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RespondInvitation{RespondInvitation: &clientv1.RespondInvitation{
		ConversationId: conversationID, Accept: accept}}})
	if err != nil {
		return nil, err
	}
	if resp.GetInvitationStatus() == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return resp.GetInvitationStatus(), nil
}

// SetContactsOnly sets whether only the caller's contacts may open a
// direct conversation with them; their other devices get a
// SettingsChanged event in the inbox.
func (c *Client) SetContactsOnly(ctx context.Context, on bool) (*clientv1.Settings, error) {
	return c.settings(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetSettings{SetSettings: &clientv1.SetSettings{ContactsOnly: &on}}})
}

// Settings reads the caller's settings.
func (c *Client) Settings(ctx context.Context) (*clientv1.Settings, error) {
	return c.settings(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetSettings{GetSettings: &clientv1.GetSettings{}}})
}

func (c *Client) settings(ctx context.Context, f *clientv1.ClientFrame) (*clientv1.Settings, error) {
	resp, err := c.Do(ctx, f)
	if err != nil {
		return nil, err
	}
	if resp.GetSettings() == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return resp.GetSettings(), nil
}

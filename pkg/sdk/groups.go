package sdk

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/google/uuid"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// Groups and channels. Each method is one command: it returns the Accepted
// of its event (pushed to every member, the removed one included) or a
// *wire.Error with a stable code: NOT_FOUND (no such conversation, or
// not a member of it: one answer; no such member or invite),
// PERMISSION_DENIED (role), MUTED, CONVERSATION_FULL, BLOCKED (a user
// named blocks the caller),
// ALREADY_EXISTS, INVALID_ARGUMENT. Each uses a fresh client message id.

// CreateChannel creates a channel, in which only the owner and admins post.
// A public one may be followed by anyone (Follow); a private one is joined
// by invite. Like CreateGroup, its id is chosen here.
func (c *Client) CreateChannel(ctx context.Context, title string, public bool, members ...string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
		ClientMsgId: NewClientMsgID(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL, Title: title, MemberIds: members,
		ConversationId: uuid.Must(uuid.NewV7()).String(), Public: public,
	}}})
}

// RemoveMember removes user (owner or admin; admins remove members only).
func (c *Client) RemoveMember(ctx context.Context, conversationID, user string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RemoveMember{RemoveMember: &clientv1.RemoveMember{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), UserId: user,
	}}})
}

// Leave leaves a group or unfollows a channel; the owner transfers
// ownership first.
func (c *Client) Leave(ctx context.Context, conversationID string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Leave{Leave: &clientv1.LeaveConversation{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(),
	}}})
}

// SetRole makes user an admin or a member (owner only).
func (c *Client) SetRole(ctx context.Context, conversationID, user string, role chatv1.MemberRole) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_SetRole{SetRole: &clientv1.SetMemberRole{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), UserId: user, Role: role,
	}}})
}

// TransferOwnership makes user the owner; the caller becomes an admin.
func (c *Client) TransferOwnership(ctx context.Context, conversationID, user string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_TransferOwnership{TransferOwnership: &clientv1.TransferOwnership{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), UserId: user,
	}}})
}

// MuteMember mutes (or unmutes) user: a muted member cannot post.
func (c *Client) MuteMember(ctx context.Context, conversationID, user string, muted bool) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_MuteMember{MuteMember: &clientv1.MuteMember{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), UserId: user, Muted: muted,
	}}})
}

// Rename sets a group's or channel's title (owner or admin).
func (c *Client) Rename(ctx context.Context, conversationID, title string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Rename{Rename: &clientv1.RenameConversation{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), Title: title,
	}}})
}

// CreateInvite creates an invite with a fresh random code and returns the
// code: anyone given the conversation id and the code may JoinByInvite
// until it is revoked.
func (c *Client) CreateInvite(ctx context.Context, conversationID string) (string, *clientv1.Accepted, error) {
	code := NewInviteCode()
	a, err := c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateInvite{CreateInvite: &clientv1.CreateInvite{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), Code: code,
	}}})
	if err != nil {
		return "", nil, err
	}
	return code, a, nil
}

// RevokeInvite ends an invite.
func (c *Client) RevokeInvite(ctx context.Context, conversationID, code string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RevokeInvite{RevokeInvite: &clientv1.RevokeInvite{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), Code: code,
	}}})
}

// JoinByInvite joins a group or channel with an invite code.
func (c *Client) JoinByInvite(ctx context.Context, conversationID, code string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_JoinByInvite{JoinByInvite: &clientv1.JoinByInvite{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(), Code: code,
	}}})
}

// Follow joins a public channel as a follower; Leave unfollows.
func (c *Client) Follow(ctx context.Context, conversationID string) (*clientv1.Accepted, error) {
	return c.accepted(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Follow{Follow: &clientv1.FollowChannel{
		ConversationId: conversationID, ClientMsgId: NewClientMsgID(),
	}}})
}

// Block blocks user: neither can open or post into the direct conversation
// of the two until the block is lifted. user is not told.
func (c *Client) Block(ctx context.Context, user string) error {
	return c.blockStatus(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_BlockUser{BlockUser: &clientv1.BlockUser{UserId: user}}}, true)
}

// Unblock lifts the caller's block of user.
func (c *Client) Unblock(ctx context.Context, user string) error {
	return c.blockStatus(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_UnblockUser{UnblockUser: &clientv1.UnblockUser{UserId: user}}}, false)
}

// Blocks lists the users the caller blocks, in byte order. It is read
// from history, which follows Block and Unblock by a moment: a list asked
// for right after one of them may not show it yet.
func (c *Client) Blocks(ctx context.Context) ([]string, error) {
	resp, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListBlocks{ListBlocks: &clientv1.ListBlocks{}}})
	if err != nil {
		return nil, err
	}
	if resp.GetBlocks() == nil {
		return nil, fmt.Errorf("unexpected answer %v", resp)
	}
	return resp.GetBlocks().GetUserIds(), nil
}

func (c *Client) blockStatus(ctx context.Context, f *clientv1.ClientFrame, want bool) error {
	resp, err := c.Do(ctx, f)
	if err != nil {
		return err
	}
	if s := resp.GetBlockStatus(); s == nil || s.GetBlocked() != want {
		return fmt.Errorf("unexpected answer %v", resp)
	}
	return nil
}

// NewInviteCode draws an invite code: 128 random bits, URL-safe.
func NewInviteCode() string {
	return "inv-" + rand.Text()
}

package ingest

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Membership, roles, mutes and invites are decided here and folded into
// the aggregate by applyGroupEvent (through conversation.apply), which
// both decide and replay use: the state a decision leaves is by
// construction the state the log rebuilds.

// exists reports whether the conversation has been created. A block of a
// user one never talked to leaves an aggregate without any event (lastSeq
// 0): it holds the block but, to everyone else, is no conversation at all.
func (c *conversation) exists() bool { return c != nil && c.lastSeq > 0 }

// managed reports whether the conversation has roles.
func (c *conversation) managed() bool { return membership.Managed(c.sum) }

// kind is the conversation's kind (UNSPECIFIED before its creation).
func (c *conversation) kind() chatv1.ConversationKind { return c.sum.GetKind() }

// role is what user may do here; UNSPECIFIED for a non-member.
func (c *conversation) role(user string) chatv1.MemberRole {
	switch {
	case !c.isMember(user):
		return chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED
	case c.managed() && user == c.sum.GetOwnerId():
		return chatv1.MemberRole_MEMBER_ROLE_OWNER
	case membership.IsAdmin(c.sum, user):
		return chatv1.MemberRole_MEMBER_ROLE_ADMIN
	}
	return chatv1.MemberRole_MEMBER_ROLE_MEMBER
}

// blocked reports whether either user of a direct conversation blocks the
// other. Only the pair can name the conversation (its id is derived from
// them), so any block in it stands between them.
func (c *conversation) blocked() bool { return c != nil && len(c.blocks) > 0 }

// mayPost says why user may not post here, if they may not.
func (c *conversation) mayPost(user string) (chatv1.ErrorCode, string) {
	switch {
	case c.kind() == chatv1.ConversationKind_CONVERSATION_KIND_DIRECT && c.blocked():
		return chatv1.ErrorCode_ERROR_CODE_BLOCKED, "you cannot message this user"
	case membership.IsMuted(c.sum, user):
		return chatv1.ErrorCode_ERROR_CODE_MUTED, "you are muted in this conversation"
	case c.kind() == chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL && c.role(user) < chatv1.MemberRole_MEMBER_ROLE_ADMIN:
		return chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "only the owner and admins post in a channel"
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// applyGroupEvent folds what membership.Fold leaves to the sequencer:
// invite codes.
func (c *conversation) applyGroupEvent(ev *chatv1.Event) {
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MemberInvited:
		c.invited[b.MemberInvited.GetUserId()] = ev.GetSenderId()
		c.invitedAt[b.MemberInvited.GetUserId()] = ev.GetSeq()
	case *chatv1.Event_MemberJoined:
		c.endInvitation(b.MemberJoined.GetUserId())
	case *chatv1.Event_MemberAdded:
		c.endInvitation(b.MemberAdded.GetUserId())
	case *chatv1.Event_InviteCreated:
		c.invites[b.InviteCreated.GetCode()] = true
	case *chatv1.Event_InviteRevoked:
		// Kept as false: a revoked code is never valid again, not even if
		// an admin creates it anew.
		c.invites[b.InviteRevoked.GetCode()] = false
	}
}

// verdict is decideGroup's answer: a refusal, or (code unspecified) the
// event's body is set.
type verdict struct {
	code    chatv1.ErrorCode
	msg     string
	removed string // a user who leaves with this event and must still get it
	// noop: nothing to log; the command is answered as a duplicate of seq.
	noop bool
	seq  uint64
}

func refuse(code chatv1.ErrorCode, msg string) verdict { return verdict{code: code, msg: msg} }

var (
	// notFound answers both a conversation that does not exist and one
	// the user is not in: telling them apart would say, of a direct
	// conversation (whose id anyone can derive from the pair), who talks
	// to whom.
	notFound     = refuse(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, NoSuchConversation)
	notManaged   = refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "only groups and channels have members to manage")
	notAdmin     = refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "only the owner and admins may do this")
	notOwner     = refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "only the owner may do this")
	noSuchInvite = refuse(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no such invite")
	full         = refuse(chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL, "conversation is full")
	alreadyThere = refuse(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "you are already a member")
)

func notAMember(user string) verdict {
	return refuse(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, user+" is not a member")
}

// prepareMembership checks the membership and administration commands.
func prepareMembership(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	invalid := chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_AddMember:
		if !auth.ValidUserID(b.AddMember.GetUserId()) {
			return invalid, "invalid user id to add"
		}
	case *logv1.Command_RemoveMember:
		if !auth.ValidUserID(b.RemoveMember.GetUserId()) {
			return invalid, "invalid user id to remove"
		}
	case *logv1.Command_SetRole:
		if !auth.ValidUserID(b.SetRole.GetUserId()) {
			return invalid, "invalid user id"
		}
		if r := b.SetRole.GetRole(); r != chatv1.MemberRole_MEMBER_ROLE_ADMIN && r != chatv1.MemberRole_MEMBER_ROLE_MEMBER {
			return invalid, "role must be MEMBER_ROLE_ADMIN or MEMBER_ROLE_MEMBER"
		}
	case *logv1.Command_TransferOwnership:
		if !auth.ValidUserID(b.TransferOwnership.GetUserId()) {
			return invalid, "invalid user id of the new owner"
		}
	case *logv1.Command_MuteMember:
		if !auth.ValidUserID(b.MuteMember.GetUserId()) {
			return invalid, "invalid user id to mute"
		}
	case *logv1.Command_Rename:
		t := b.Rename.GetTitle()
		if strings.TrimSpace(t) == "" || len(t) > MaxTitleBytes || !utf8.ValidString(t) {
			return invalid, fmt.Sprintf("title must be 1-%d bytes of UTF-8", MaxTitleBytes)
		}
	case *logv1.Command_CreateInvite:
		if !ValidInviteCode(b.CreateInvite.GetCode()) {
			return invalid, inviteCodeRule
		}
	case *logv1.Command_RevokeInvite:
		if !ValidInviteCode(b.RevokeInvite.GetCode()) {
			return invalid, inviteCodeRule
		}
	case *logv1.Command_JoinByInvite:
		if !ValidInviteCode(b.JoinByInvite.GetCode()) {
			return invalid, inviteCodeRule
		}
	case *logv1.Command_Leave, *logv1.Command_Follow:
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// decideAdd decides adding a member.
func decideAdd(c *conversation, cmd *logv1.Command, maxMembers int, ev *chatv1.Event) verdict {
	if !c.exists() || !c.isMember(cmd.GetUserId()) {
		return notFound
	}
	if !c.managed() {
		return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "members can only be added to groups and channels")
	}
	if c.kind() == chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL && c.role(cmd.GetUserId()) < chatv1.MemberRole_MEMBER_ROLE_ADMIN {
		return refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "only the owner and admins add followers to a channel")
	}
	u := cmd.GetAddMember().GetUserId()
	if c.isMember(u) {
		return refuse(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, u+" is already a member")
	}
	if len(c.members()) >= maxMembers {
		return refuse(chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL, "conversation is full")
	}
	if c.sum.GetConsent() {
		// Nobody is put in without saying yes: an invitation, which
		// handOnInvitation takes to the invitee's inbox.
		if _, ok := c.invited[u]; ok {
			return verdict{noop: true, seq: c.invitedAt[u]}
		}
		ev.Body = &chatv1.Event_MemberInvited{MemberInvited: &chatv1.MemberInvited{UserId: u}}
		return verdict{}
	}
	ev.Body = &chatv1.Event_MemberAdded{MemberAdded: &chatv1.MemberAdded{UserId: u}}
	return verdict{}
}

// decideGroup decides the membership and administration commands. It
// changes nothing: the caller folds the event in (conversation.apply).
func decideGroup(c *conversation, cmd *logv1.Command, maxMembers int, ev *chatv1.Event) verdict {
	if _, ok := cmd.GetBody().(*logv1.Command_AddMember); ok {
		return decideAdd(c, cmd, maxMembers, ev)
	}
	if !c.exists() {
		if _, ok := cmd.GetBody().(*logv1.Command_JoinByInvite); ok {
			return noSuchInvite
		}
		return notFound
	}
	user := cmd.GetUserId()
	actor := c.role(user)
	// Joining is for non-members; everything else for members.
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_JoinByInvite:
		switch {
		case !c.managed() || !c.invites[b.JoinByInvite.GetCode()]:
			// The same answer for a wrong code, a conversation without
			// invites and one that does not exist, so a non-member
			// learns nothing by guessing.
			return noSuchInvite
		case actor != chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED:
			return alreadyThere
		case len(c.members()) >= maxMembers:
			return full
		}
		ev.Body = &chatv1.Event_MemberJoined{MemberJoined: &chatv1.MemberJoined{UserId: user, InviteCode: b.JoinByInvite.GetCode()}}
		return verdict{}
	case *logv1.Command_Follow:
		switch {
		case actor == chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED && (c.kind() != chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL || !c.sum.GetPublic()):
			// To a non-member only a public channel is there to follow:
			// a group, a direct conversation or a private channel answers
			// as one that does not exist.
			return notFound
		case c.kind() != chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL:
			return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "only channels can be followed")
		case actor != chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED:
			return alreadyThere
		case len(c.members()) >= maxMembers:
			return full
		}
		ev.Body = &chatv1.Event_MemberJoined{MemberJoined: &chatv1.MemberJoined{UserId: user}}
		return verdict{}
	}
	if actor == chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED {
		return notFound
	}
	if !c.managed() {
		return notManaged
	}
	admin := actor >= chatv1.MemberRole_MEMBER_ROLE_ADMIN
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_RemoveMember:
		u := b.RemoveMember.GetUserId()
		switch target := c.role(u); {
		case !admin:
			return notAdmin
		case u == user:
			return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "to remove yourself, leave")
		case target == chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED:
			return notAMember(u)
		case target == chatv1.MemberRole_MEMBER_ROLE_OWNER:
			return refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "the owner cannot be removed")
		case target >= actor:
			return refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "admins can only remove members")
		}
		ev.Body = &chatv1.Event_MemberRemoved{MemberRemoved: &chatv1.MemberRemoved{UserId: u}}
		return verdict{removed: u}
	case *logv1.Command_Leave:
		if actor == chatv1.MemberRole_MEMBER_ROLE_OWNER {
			return refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "the owner must transfer ownership before leaving")
		}
		ev.Body = &chatv1.Event_MemberLeft{MemberLeft: &chatv1.MemberLeft{UserId: user}}
		return verdict{removed: user}
	case *logv1.Command_SetRole:
		u, role := b.SetRole.GetUserId(), b.SetRole.GetRole()
		switch target := c.role(u); {
		case actor != chatv1.MemberRole_MEMBER_ROLE_OWNER:
			return notOwner
		case role != chatv1.MemberRole_MEMBER_ROLE_ADMIN && role != chatv1.MemberRole_MEMBER_ROLE_MEMBER:
			return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a role is ADMIN or MEMBER; ownership is transferred")
		case target == chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED:
			return notAMember(u)
		case target == chatv1.MemberRole_MEMBER_ROLE_OWNER:
			return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the owner's role changes only by transferring ownership")
		case target == role:
			return refuse(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, u+" has this role already")
		}
		ev.Body = &chatv1.Event_RoleChanged{RoleChanged: &chatv1.RoleChanged{UserId: u, Role: role}}
		return verdict{}
	case *logv1.Command_TransferOwnership:
		u := b.TransferOwnership.GetUserId()
		switch {
		case actor != chatv1.MemberRole_MEMBER_ROLE_OWNER:
			return notOwner
		case u == user:
			return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "you are the owner already")
		case !c.isMember(u):
			return notAMember(u)
		}
		ev.Body = &chatv1.Event_OwnershipTransferred{OwnershipTransferred: &chatv1.OwnershipTransferred{NewOwnerId: u}}
		return verdict{}
	case *logv1.Command_MuteMember:
		u, mute := b.MuteMember.GetUserId(), b.MuteMember.GetMuted()
		switch target := c.role(u); {
		case !admin:
			return notAdmin
		case u == user:
			return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "you cannot mute yourself")
		case target == chatv1.MemberRole_MEMBER_ROLE_UNSPECIFIED:
			return notAMember(u)
		case target >= actor:
			return refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "you can only mute members below your role")
		case mute && membership.IsMuted(c.sum, u):
			return refuse(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, u+" is muted already")
		case !mute && !membership.IsMuted(c.sum, u):
			return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, u+" is not muted")
		}
		ev.Body = &chatv1.Event_MemberMuted{MemberMuted: &chatv1.MemberMuted{UserId: u, Muted: mute}}
		return verdict{}
	case *logv1.Command_Rename:
		if !admin {
			return notAdmin
		}
		ev.Body = &chatv1.Event_ConversationRenamed{ConversationRenamed: &chatv1.ConversationRenamed{Title: b.Rename.GetTitle()}}
		return verdict{}
	case *logv1.Command_CreateInvite:
		code := b.CreateInvite.GetCode()
		switch _, known := c.invites[code]; {
		case !admin:
			return notAdmin
		case known:
			return refuse(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "this invite code was used before; pick another")
		}
		ev.Body = &chatv1.Event_InviteCreated{InviteCreated: &chatv1.InviteCreated{Code: code}}
		return verdict{}
	case *logv1.Command_RevokeInvite:
		code := b.RevokeInvite.GetCode()
		switch {
		case !admin:
			return notAdmin
		case !c.invites[code]:
			return noSuchInvite
		}
		ev.Body = &chatv1.Event_InviteRevoked{InviteRevoked: &chatv1.InviteRevoked{Code: code}}
		return verdict{}
	}
	return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "command has no known body")
}

// Package membership is the one fold of a conversation's membership and
// roles from its events: who is in it, who owns and administers it, who
// is muted, its kind, title and public flag, kept in a
// chatv1.Conversation. The sequencer decides commands against it and the
// history stores summarise conversations with it, so the two cannot
// disagree on who belongs to a conversation.
package membership

import (
	"slices"
	"strings"

	"github.com/google/uuid"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// MaxCreateMembers bounds the members one creation names, its creator
// included: the sequencer refuses more, and the edge reads the block list
// of each before it lets the creation through. A bigger group grows by
// adding members, or by invites.
const MaxCreateMembers = 100

// Fold applies ev's membership and role change, if it has one, to c. It
// reports the users who became members and those who stopped being
// members (removed or left). It does not look at seqs: callers apply each
// event once, in order.
func Fold(c *chatv1.Conversation, ev *chatv1.Event) (joined, left []string) {
	join := func(m string) {
		if !IsMember(c, m) {
			c.MemberIds = append(c.MemberIds, m)
			joined = append(joined, m)
		}
	}
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_ConversationCreated:
		c.Kind = b.ConversationCreated.GetKind()
		c.Title = b.ConversationCreated.GetTitle()
		c.Public = b.ConversationCreated.GetPublic()
		c.Consent = b.ConversationCreated.GetConsent()
		if Managed(c) {
			c.OwnerId = ev.GetSenderId()
		}
		for _, m := range b.ConversationCreated.GetMemberIds() {
			join(m)
		}
	case *chatv1.Event_MemberAdded:
		join(b.MemberAdded.GetUserId())
	case *chatv1.Event_MemberJoined:
		join(b.MemberJoined.GetUserId())
	case *chatv1.Event_MemberRemoved:
		left = leave(c, b.MemberRemoved.GetUserId())
	case *chatv1.Event_MemberLeft:
		left = leave(c, b.MemberLeft.GetUserId())
	case *chatv1.Event_RoleChanged:
		c.AdminIds = setIn(c.AdminIds, b.RoleChanged.GetUserId(), b.RoleChanged.GetRole() == chatv1.MemberRole_MEMBER_ROLE_ADMIN)
	case *chatv1.Event_OwnershipTransferred:
		// The sender is the owner until now (the sequencer sees to it);
		// taken from the event, not the summary, so that a store writing
		// without reading folds it the same way.
		if s := ev.GetSenderId(); s != "" {
			c.AdminIds = setIn(c.AdminIds, s, true)
		}
		c.OwnerId = b.OwnershipTransferred.GetNewOwnerId()
		c.AdminIds = setIn(c.AdminIds, c.OwnerId, false)
	case *chatv1.Event_MemberMuted:
		c.MutedIds = setIn(c.MutedIds, b.MemberMuted.GetUserId(), b.MemberMuted.GetMuted())
	case *chatv1.Event_ConversationRenamed:
		c.Title = b.ConversationRenamed.GetTitle()
	case *chatv1.Event_SettingsChanged:
		// An inbox's owner's settings, kept in its summary.
		c.ContactsOnly = b.SettingsChanged.GetContactsOnly()
	}
	return joined, left
}

// Managed reports whether c has an owner and roles: groups and channels.
func Managed(c *chatv1.Conversation) bool {
	return c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_GROUP || c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL
}

// IsMember reports whether user is a member of c.
func IsMember(c *chatv1.Conversation, user string) bool {
	return slices.Contains(c.GetMemberIds(), user)
}

// IsAdmin reports whether user administers c (the owner aside).
func IsAdmin(c *chatv1.Conversation, user string) bool {
	_, found := slices.BinarySearch(c.GetAdminIds(), user)
	return found
}

// IsMuted reports whether an admin muted user in c.
func IsMuted(c *chatv1.Conversation, user string) bool {
	_, found := slices.BinarySearch(c.GetMutedIds(), user)
	return found
}

// leave drops user from c with their role and mute.
func leave(c *chatv1.Conversation, user string) []string {
	c.AdminIds = setIn(c.AdminIds, user, false)
	c.MutedIds = setIn(c.MutedIds, user, false)
	i := slices.Index(c.MemberIds, user)
	if i < 0 {
		return nil
	}
	c.MemberIds = slices.Delete(c.MemberIds, i, i+1)
	return []string{user}
}

// setIn adds user to (in) or removes them from a sorted id list.
func setIn(ids []string, user string, in bool) []string {
	i, found := slices.BinarySearch(ids, user)
	switch {
	case in && !found:
		return slices.Insert(ids, i, user)
	case !in && found:
		return slices.Delete(ids, i, i+1)
	}
	return ids
}

// inboxNamespace derives inbox ids from their owners.
var inboxNamespace = uuid.MustParse("0b8f6a3e-2f43-4c1e-9a57-5d2f0f1c7e64")

// InboxID is the id of user's inbox (CONVERSATION_KIND_INBOX): a UUIDv5 of
// the user, so the sequencer that hands an item to it, and the edge that
// tells the user where it is, agree without asking anyone. No client can
// create a conversation of that id: theirs must be UUIDv7.
func InboxID(user string) string {
	return uuid.NewSHA1(inboxNamespace, []byte(user)).String()
}

// audienceNamespace derives audience ids from their selectors.
var audienceNamespace = uuid.MustParse("c7a4e2d9-3f61-4b8a-9e05-71d2b6f8a413")

// AudiencePrefix starts the id of every audience's member: a user id
// never holds a ':' (auth.ValidUserID), so none can be taken for one.
const AudiencePrefix = "aud:"

// AudienceID is the id of the audience of selector ("key=value", see
// auth.ParseAttributes), CONVERSATION_KIND_AUDIENCE: a UUIDv5, so the
// backend that broadcasts to it and the edge that lets matching users read
// it agree without asking anyone.
func AudienceID(selector string) string {
	return uuid.NewSHA1(audienceNamespace, []byte(selector)).String()
}

// AudienceMember is the one member of an audience's conversation: not a
// user but the selector, under which each edge registers the connections
// whose user has that attribute, so fan-out and presence find them as
// they find a user's.
func AudienceMember(selector string) string { return AudiencePrefix + selector }

// IsAudienceMember reports whether id is an audience's member, not a user.
func IsAudienceMember(id string) bool { return strings.HasPrefix(id, AudiencePrefix) }

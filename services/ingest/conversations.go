package ingest

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// prepareCreate checks a creation and fills what ingest derives: the
// member list (the creator first, the others sorted, each once) and the
// conversation id (a direct one's from the pair; a group's or channel's a
// UUIDv7, the client's or a new one).
func prepareCreate(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	invalid := chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	cc := cmd.GetCreateConversation()
	if len(cc.GetTitle()) > MaxTitleBytes || !utf8.ValidString(cc.GetTitle()) {
		return invalid, fmt.Sprintf("title must be at most %d bytes of UTF-8", MaxTitleBytes)
	}
	others := map[string]bool{}
	for _, m := range cc.GetMemberIds() {
		if !auth.ValidUserID(m) {
			return invalid, fmt.Sprintf("invalid member id %q", m)
		}
		if m != cmd.GetUserId() {
			others[m] = true
		}
	}
	members := []string{cmd.GetUserId()}
	for m := range others {
		members = append(members, m)
	}
	sort.Strings(members[1:])
	if len(members) > membership.MaxCreateMembers {
		return invalid, fmt.Sprintf("a creation names at most %d members, you included: add the others later, or invite them", membership.MaxCreateMembers)
	}
	cc.MemberIds = members
	switch cc.GetKind() {
	case chatv1.ConversationKind_CONVERSATION_KIND_DIRECT:
		if len(others) != 1 {
			return invalid, "a direct conversation needs exactly one other member"
		}
		cmd.ConversationId = DirectID(members[0], members[1])
		cc.Title, cc.Public, cc.Consent = "", false, false
	case chatv1.ConversationKind_CONVERSATION_KIND_GROUP, chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL:
		if cmd.GetConversationId() == "" {
			cmd.ConversationId = uuid.Must(uuid.NewV7()).String()
		} else if id, err := uuid.Parse(cmd.GetConversationId()); err != nil || id.Version() != 7 {
			// Version 7 only: a client must not take the id of a
			// direct conversation (version 5) and so keep the pair
			// from opening it, or hold their blocks.
			return invalid, "conversation_id must be a UUIDv7"
		}
		if strings.TrimSpace(cc.GetTitle()) == "" {
			return invalid, "a group or channel needs a title"
		}
		if cc.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_GROUP {
			cc.Public = false
		}
		if cc.GetConsent() && len(members) > 1 {
			return invalid, "a conversation with consent starts with its creator alone: invite the others with add_member"
		}
	default:
		return invalid, "unknown conversation kind"
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// decideCreate decides a creation. Opening a direct conversation that
// exists finds it (answered as a duplicate of its seq 1).
func decideCreate(convs map[string]*conversation, cmd *logv1.Command, maxMembers int, ev *chatv1.Event) verdict {
	cc := cmd.GetCreateConversation()
	c := convs[cmd.GetConversationId()]
	if cc.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_DIRECT && c.blocked() {
		// Checked first, so that the blocked user cannot tell a block of
		// a conversation that exists from one that does not.
		return refuse(chatv1.ErrorCode_ERROR_CODE_BLOCKED, "you cannot message this user")
	}
	if c.exists() {
		if c.kind() == chatv1.ConversationKind_CONVERSATION_KIND_DIRECT && c.isMember(cmd.GetUserId()) {
			return verdict{noop: true, seq: 1}
		}
		return refuse(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "conversation already exists")
	}
	if len(cc.GetMemberIds()) > maxMembers {
		return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "too many members")
	}
	if c == nil {
		c = newConversation(cmd.GetConversationId())
		convs[c.id] = c
	}
	ev.Body = &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
		Kind: cc.GetKind(), Title: cc.GetTitle(), MemberIds: append(append([]string(nil), c.members()...), cc.GetMemberIds()...),
		Public: cc.GetPublic(), Consent: cc.GetConsent(),
	}}
	return verdict{}
}

package ingest

import (
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// An audience is a conversation (CONVERSATION_KIND_AUDIENCE, id
// membership.AudienceID of its selector) whose one member is the audience
// itself (membership.AudienceMember), not a user. A broadcast is a system
// message in it, stored once and pushed, like any event, to its member:
// each edge registers under that member the connections whose token
// carries the attribute, and reads the conversation as it for them. So
// the broadcast reaches every matching device once, live or by resuming,
// with the seqs and seam of any conversation, and nobody else.

// readsAudience reports whether cmd's user reads c as an audience they
// belong to: an edge vouches for it (Command.audience) with c's member.
// They may then mark their read position and set their own flags in it,
// as a member would.
func (c *conversation) readsAudience(cmd *logv1.Command) bool {
	return c.kind() == chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE && cmd.GetAudience() != "" &&
		len(c.members()) == 1 && c.members()[0] == cmd.GetAudience()
}

// prepareAnnounce checks a broadcast and addresses it to its audience.
func prepareAnnounce(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	a := cmd.GetAnnounce()
	if !auth.ValidSelector(a.GetSelector()) {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "an audience is one attribute, key=value: key 1-32 of a-z 0-9 _ -, value 1-64 bytes"
	}
	if code, msg := validNotice(a.GetText()); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
	}
	cmd.ConversationId = membership.AudienceID(a.GetSelector())
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// validNotice checks the text of what the application posts as itself (a
// broadcast, a notice): valid text, and some.
func validNotice(text string) (chatv1.ErrorCode, string) {
	if text == "" {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a notice needs text"
	}
	return validText(text)
}

// decideAnnounce posts a broadcast, creating its audience (seq 1) first if
// this is its first. A retry with the same client message id is answered
// with the first post's seq.
func decideAnnounce(convs map[string]*conversation, cmd *logv1.Command, _ int, out *logv1.Outcome, now time.Time) decision {
	a := cmd.GetAnnounce()
	key := dedupKey{cmd.GetUserId(), cmd.GetClientMsgId()}
	c := convs[cmd.GetConversationId()]
	switch {
	case cmd.GetConversationId() != membership.AudienceID(a.GetSelector()) || cmd.GetClientMsgId() == "":
		// Prepare derives the id; only a forged command lands here.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a broadcast goes to its selector's audience"
		return decision{out: out}
	case c.exists() && c.kind() != chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE:
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "not an audience"
		return decision{out: out}
	}
	c, seq, dup := applied(convs, cmd.GetConversationId(), key)
	if dup {
		out.Seq, out.Duplicate = seq, true
		return decision{out: out}
	}
	d := decision{out: out, recs: c.create(chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE, a.GetSelector(),
		membership.AudienceMember(a.GetSelector()), cmd.GetUserId(), cmd, now)}
	post := c.systemPost(cmd, a.GetText(), now)
	d.recs = append(d.recs, c.appendEvent(post, cmd.GetCommandId()))
	out.Seq = post.GetSeq()
	return d
}

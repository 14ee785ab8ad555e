package ingest

import (
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// A user's inbox is a conversation of its own (CONVERSATION_KIND_INBOX,
// id membership.InboxID), whose one member is its owner: its items get
// contiguous seqs, are stored, listed, paged and resumed exactly as a
// conversation's events are, and pushed to every device of the owner, with
// no machinery of their own. Only the sequencer writes to it, by handing
// an InboxDeliver command to the inbox's partition (see derive).

// derivedNamespace makes the ids of the commands a decision hands on.
var derivedNamespace = uuid.MustParse("5a3c1f7e-8b0d-4e62-b1a4-2c9e7d6f0a35")

// derive makes the n-th command that src's decision hands on, to
// conversation conv as user; the caller sets its body. Its ids follow
// from src's, so deciding src again (after an aborted transaction) hands
// on the same commands, and its client message id makes a second copy a
// duplicate.
func derive(src *logv1.Command, n int, conv, user string) *logv1.Command {
	id := uuid.NewSHA1(derivedNamespace, []byte(src.GetCommandId()+"/"+strconv.Itoa(n))).String()
	return &logv1.Command{CommandId: id, ConversationId: conv, UserId: user, ClientMsgId: "parley:" + id, SubmitTime: src.GetSubmitTime()}
}

// decideInbox appends an item to its owner's inbox, creating the inbox
// first (its seq 1) if this is its first item.
func decideInbox(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome, now time.Time) decision {
	d := cmd.GetInboxDeliver()
	owner := d.GetOwnerId()
	if owner == "" || cmd.GetConversationId() != membership.InboxID(owner) || d.GetItem() == nil || cmd.GetClientMsgId() == "" {
		// Only the sequencer writes these; a bug or a foreign writer.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "inbox item without its owner's inbox or an item"
		return decision{out: out}
	}
	// Items have no sender (Parley writes them; the item says who did
	// what), so their ids are remembered under none.
	key := dedupKey{"", cmd.GetClientMsgId()}
	c := convs[cmd.GetConversationId()]
	if c != nil {
		if seq, ok := c.applied[key]; ok {
			out.Seq, out.Duplicate = seq, true
			return decision{out: out}
		}
	}
	if c == nil {
		c = newConversation(cmd.GetConversationId())
		convs[c.id] = c
	}
	var dec decision
	if !c.exists() {
		created := &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), SenderId: owner, Time: timestamppb.New(now),
			Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
				Kind: chatv1.ConversationKind_CONVERSATION_KIND_INBOX, MemberIds: []string{owner}}}}
		dec.recs = append(dec.recs, c.appendEvent(created, cmd.GetCommandId()))
	}
	item := &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), Time: timestamppb.New(now),
		ClientMsgId: cmd.GetClientMsgId()}
	switch it := d.GetItem().(type) {
	case *logv1.InboxDeliver_ContactUpdated:
		item.Body = &chatv1.Event_ContactUpdated{ContactUpdated: it.ContactUpdated}
	case *logv1.InboxDeliver_InvitationUpdated:
		item.Body = &chatv1.Event_InvitationUpdated{InvitationUpdated: it.InvitationUpdated}
	}
	rec := c.appendEvent(item, cmd.GetCommandId())
	if c.flags[owner].GetMuted() {
		// An owner who muted their inbox gets no offline notification
		// of it, as for any conversation.
		rec.MutedIds = []string{owner}
	}
	dec.recs = append(dec.recs, rec)
	out.ConversationId, out.Seq = c.id, item.GetSeq()
	dec.out = out
	return dec
}

// prepareSettings checks a settings command and addresses it to the
// user's inbox, which keeps their settings.
func prepareSettings(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	if cmd.GetSetSettings().ContactsOnly == nil {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "set contacts_only"
	}
	cmd.ConversationId = membership.InboxID(cmd.GetUserId())
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// decideSettings changes the user's settings: a SettingsChanged event in
// their inbox (created first if it has none), so every device of theirs
// learns it, and persistence keeps it in the inbox's summary. Setting
// what is set logs nothing.
func decideSettings(convs map[string]*conversation, cmd *logv1.Command, _ int, out *logv1.Outcome, now time.Time) decision {
	user := cmd.GetUserId()
	if cmd.GetConversationId() != membership.InboxID(user) {
		// Prepare derives it; only a forged command lands here.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "settings belong to the user's inbox"
		return decision{out: out}
	}
	want := cmd.GetSetSettings().GetContactsOnly()
	c := convs[cmd.GetConversationId()]
	if c.exists() && c.sum.GetContactsOnly() == want {
		out.Seq, out.Duplicate = c.lastSeq, true
		return decision{out: out}
	}
	if c == nil {
		c = newConversation(cmd.GetConversationId())
		convs[c.id] = c
	}
	var d decision
	if !c.exists() {
		created := &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), SenderId: user, Time: timestamppb.New(now),
			Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
				Kind: chatv1.ConversationKind_CONVERSATION_KIND_INBOX, MemberIds: []string{user}}}}
		d.recs = append(d.recs, c.appendEvent(created, cmd.GetCommandId()))
	}
	ev := &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), SenderId: user, SenderDeviceId: cmd.GetDeviceId(),
		Time: timestamppb.New(now), Body: &chatv1.Event_SettingsChanged{SettingsChanged: &chatv1.SettingsChanged{ContactsOnly: want}}}
	d.recs = append(d.recs, c.appendEvent(ev, cmd.GetCommandId()))
	out.Seq = ev.GetSeq()
	d.out = out
	return d
}

// prepareNotice checks a notice and addresses it to its user's inbox.
func prepareNotice(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	n := cmd.GetNotice()
	if !auth.ValidUserID(n.GetOwnerId()) {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "invalid user id"
	}
	if code, msg := validText(n.GetText()); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
	}
	if n.GetText() == "" {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a notice needs text"
	}
	cmd.ConversationId = membership.InboxID(n.GetOwnerId())
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// decideNotice posts a system message to the owner's inbox, creating
// the inbox first if it has none. A retry with the same client message
// id is answered with the first post's seq.
func decideNotice(convs map[string]*conversation, cmd *logv1.Command, _ int, out *logv1.Outcome, now time.Time) decision {
	n := cmd.GetNotice()
	owner := n.GetOwnerId()
	if cmd.GetConversationId() != membership.InboxID(owner) || cmd.GetClientMsgId() == "" {
		// Prepare derives it; only a forged command lands here.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a notice goes to its user's inbox"
		return decision{out: out}
	}
	key := dedupKey{cmd.GetUserId(), cmd.GetClientMsgId()}
	c := convs[cmd.GetConversationId()]
	if c != nil {
		if seq, ok := c.applied[key]; ok {
			out.Seq, out.Duplicate = seq, true
			return decision{out: out}
		}
	} else {
		c = newConversation(cmd.GetConversationId())
		convs[c.id] = c
	}
	d := decision{out: out}
	if !c.exists() {
		created := &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), SenderId: owner, Time: timestamppb.New(now),
			Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
				Kind: chatv1.ConversationKind_CONVERSATION_KIND_INBOX, MemberIds: []string{owner}}}}
		d.recs = append(d.recs, c.appendEvent(created, cmd.GetCommandId()))
	}
	post := &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), SenderId: cmd.GetUserId(),
		SenderDeviceId: cmd.GetDeviceId(), Time: timestamppb.New(now), ClientMsgId: cmd.GetClientMsgId(),
		Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: n.GetText(), Links: FindLinks(n.GetText()), System: true}}}
	rec := c.appendEvent(post, cmd.GetCommandId())
	if c.flags[owner].GetMuted() {
		rec.MutedIds = []string{owner}
	}
	d.recs = append(d.recs, rec)
	out.Seq = post.GetSeq()
	return d
}

// appendEvent gives ev the conversation's next seq and folds it in, as
// decide does for a command's event, and returns its record for the
// conversation's members.
func (c *conversation) appendEvent(ev *chatv1.Event, commandID string) *logv1.EventRecord {
	c.lastSeq++
	ev.Seq = c.lastSeq
	if id := ev.GetClientMsgId(); id != "" {
		c.applied[dedupKey{ev.GetSenderId(), id}] = ev.GetSeq()
	}
	c.apply(ev)
	c.move(ev.GetSenderId(), ev.GetSenderDeviceId(), ev.GetSeq(), ev.GetSeq())
	return &logv1.EventRecord{Event: ev, RecipientIds: append([]string(nil), c.members()...), CommandId: commandID}
}

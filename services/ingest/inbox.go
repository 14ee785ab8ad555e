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
	c, seq, dup := applied(convs, cmd.GetConversationId(), dedupKey{"", cmd.GetClientMsgId()})
	if dup {
		out.Seq, out.Duplicate = seq, true
		return decision{out: out}
	}
	dec := decision{recs: c.createInbox(owner, cmd, now)}
	item := c.newEvent("", "", now)
	item.ClientMsgId = cmd.GetClientMsgId()
	switch it := d.GetItem().(type) {
	case *logv1.InboxDeliver_ContactUpdated:
		item.Body = &chatv1.Event_ContactUpdated{ContactUpdated: it.ContactUpdated}
	case *logv1.InboxDeliver_InvitationUpdated:
		item.Body = &chatv1.Event_InvitationUpdated{InvitationUpdated: it.InvitationUpdated}
	}
	dec.recs = append(dec.recs, c.appendInboxItem(owner, item, cmd.GetCommandId()))
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
	if c := convs[cmd.GetConversationId()]; c.exists() && c.sum.GetContactsOnly() == want {
		out.Seq, out.Duplicate = c.lastSeq, true
		return decision{out: out}
	}
	c, _, _ := applied(convs, cmd.GetConversationId(), dedupKey{})
	d := decision{recs: c.createInbox(user, cmd, now)}
	ev := c.newEvent(user, cmd.GetDeviceId(), now)
	ev.Body = &chatv1.Event_SettingsChanged{SettingsChanged: &chatv1.SettingsChanged{ContactsOnly: want}}
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
	if code, msg := validNotice(n.GetText()); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
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
	c, seq, dup := applied(convs, cmd.GetConversationId(), dedupKey{cmd.GetUserId(), cmd.GetClientMsgId()})
	if dup {
		out.Seq, out.Duplicate = seq, true
		return decision{out: out}
	}
	d := decision{out: out, recs: c.createInbox(owner, cmd, now)}
	post := c.systemPost(cmd, n.GetText(), now)
	d.recs = append(d.recs, c.appendInboxItem(owner, post, cmd.GetCommandId()))
	out.Seq = post.GetSeq()
	return d
}

// applied returns the aggregate of conversation id, made empty if it has
// none, and the seq key was applied at, if it was.
func applied(convs map[string]*conversation, id string, key dedupKey) (c *conversation, seq uint64, dup bool) {
	c = convs[id]
	if c == nil {
		c = newConversation(id)
		convs[id] = c
		return c, 0, false
	}
	seq, dup = c.applied[key]
	return c, seq, dup
}

// createInbox creates c as owner's inbox (its seq 1) if it does not exist
// yet: the record to log, or none.
func (c *conversation) createInbox(owner string, cmd *logv1.Command, now time.Time) []*logv1.EventRecord {
	return c.create(chatv1.ConversationKind_CONVERSATION_KIND_INBOX, "", owner, owner, cmd, now)
}

// create creates c (its seq 1) of kind, with title and its one member,
// by sender, if it does not exist yet: the record to log, or none.
func (c *conversation) create(kind chatv1.ConversationKind, title, member, sender string, cmd *logv1.Command, now time.Time) []*logv1.EventRecord {
	if c.exists() {
		return nil
	}
	ev := c.newEvent(sender, "", now)
	ev.Body = &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{Kind: kind, Title: title, MemberIds: []string{member}}}
	return []*logv1.EventRecord{c.appendEvent(ev, cmd.GetCommandId())}
}

// newEvent is an event of c by sender at now, its seq and body to come.
func (c *conversation) newEvent(sender, device string, now time.Time) *chatv1.Event {
	return &chatv1.Event{ConversationId: c.id, EventId: uuid.Must(uuid.NewV7()).String(), SenderId: sender, SenderDeviceId: device, Time: timestamppb.New(now)}
}

// systemPost is the application's message text, by cmd's user and device
// under its client message id, its seq to come.
func (c *conversation) systemPost(cmd *logv1.Command, text string, now time.Time) *chatv1.Event {
	ev := c.newEvent(cmd.GetUserId(), cmd.GetDeviceId(), now)
	ev.ClientMsgId = cmd.GetClientMsgId()
	ev.Body = &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: text, Links: FindLinks(text), System: true}}
	return ev
}

// appendInboxItem appends ev to owner's inbox c: an owner who muted their
// inbox gets no offline notification of it, as for any conversation.
func (c *conversation) appendInboxItem(owner string, ev *chatv1.Event, commandID string) *logv1.EventRecord {
	rec := c.appendEvent(ev, commandID)
	if c.flags[owner].GetMuted() {
		rec.MutedIds = []string{owner}
	}
	return rec
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

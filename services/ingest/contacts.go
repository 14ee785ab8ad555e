package ingest

import (
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Contact requests are state of a pair of users, like blocks: they live in
// the aggregate of the pair's direct conversation, whether or not it was
// ever opened, so one sequencer decides everything between the two and
// sees their blocks. What each user is told goes to their inbox, another
// conversation on (usually) another partition: the decision hands those
// items on as commands (InboxDeliver), produced in the same transaction as
// the pair's record, so they are sequenced exactly when the change is.

// pairContact is a pair's contact state in the sequencer.
type pairContact struct {
	// state: none (zero), pending or declined from -> to, or contacts.
	state    contactPhase
	from, to string
	last     time.Time
}

type contactPhase int

const (
	contactNone contactPhase = iota
	contactPending
	contactDeclined
	contactAccepted
)

// contactUser is the other user a contact command names.
func contactUser(cmd *logv1.Command) string {
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_ContactRequest:
		return b.ContactRequest.GetUserId()
	case *logv1.Command_ContactResponse:
		return b.ContactResponse.GetUserId()
	case *logv1.Command_ContactCancel:
		return b.ContactCancel.GetUserId()
	}
	return ""
}

// prepareContact checks a contact command and addresses it to the pair's
// direct conversation, never the client's say.
func prepareContact(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	switch u := contactUser(cmd); {
	case !auth.ValidUserID(u):
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "invalid user id"
	case u == cmd.GetUserId():
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "you cannot be your own contact"
	default:
		cmd.ConversationId = DirectID(cmd.GetUserId(), u)
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// viewOf is user's view of the pair's state. A declined request is still
// outgoing to the one who asked: nobody is told of a decline.
func (p pairContact) viewOf(user string) chatv1.ContactState {
	switch p.state {
	case contactAccepted:
		return chatv1.ContactState_CONTACT_STATE_CONTACT
	case contactPending:
		if p.from == user {
			return chatv1.ContactState_CONTACT_STATE_OUTGOING
		}
		return chatv1.ContactState_CONTACT_STATE_INCOMING
	case contactDeclined:
		if p.from == user {
			return chatv1.ContactState_CONTACT_STATE_OUTGOING
		}
	}
	return chatv1.ContactState_CONTACT_STATE_UNSPECIFIED
}

// decideContact decides a contact command of me about other. A command
// that changes nothing answers with me's view as it is, so a retry gets
// the first answer.
func decideContact(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome, now time.Time) decision {
	me, other := cmd.GetUserId(), contactUser(cmd)
	c := convs[cmd.GetConversationId()]
	refuse := func(code chatv1.ErrorCode, msg string) decision {
		out.ErrorCode, out.ErrorMessage = code, msg
		return decision{out: out}
	}
	if c.exists() && c.kind() != chatv1.ConversationKind_CONVERSATION_KIND_DIRECT || cmd.GetConversationId() != DirectID(me, other) {
		// Prepare derives the id from the pair; only a forged command
		// lands here.
		return refuse(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "contacts belong to the pair's direct conversation")
	}
	var p pairContact
	if c != nil {
		p = c.contact
	}
	view := p.viewOf(me)
	var action chatv1.ContactAction
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_ContactRequest:
		switch {
		case c.blocked():
			return refuse(chatv1.ErrorCode_ERROR_CODE_BLOCKED, "you cannot message this user")
		case view == chatv1.ContactState_CONTACT_STATE_INCOMING:
			// Both asked: that is an agreement.
			action = chatv1.ContactAction_CONTACT_ACTION_ACCEPTED
		case view == chatv1.ContactState_CONTACT_STATE_UNSPECIFIED:
			action = chatv1.ContactAction_CONTACT_ACTION_REQUESTED
		}
	case *logv1.Command_ContactResponse:
		accept := b.ContactResponse.GetAccept()
		switch {
		case view == chatv1.ContactState_CONTACT_STATE_INCOMING && accept && c.blocked():
			return refuse(chatv1.ErrorCode_ERROR_CODE_BLOCKED, "you cannot message this user")
		case view == chatv1.ContactState_CONTACT_STATE_INCOMING && accept:
			action = chatv1.ContactAction_CONTACT_ACTION_ACCEPTED
		case view == chatv1.ContactState_CONTACT_STATE_INCOMING:
			action = chatv1.ContactAction_CONTACT_ACTION_DECLINED
		case view == chatv1.ContactState_CONTACT_STATE_CONTACT && accept,
			view == chatv1.ContactState_CONTACT_STATE_UNSPECIFIED && !accept && p.state == contactDeclined && p.to == me:
			// Answered already: the same answer again.
		default:
			return refuse(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no contact request from this user")
		}
	case *logv1.Command_ContactCancel:
		switch view {
		case chatv1.ContactState_CONTACT_STATE_OUTGOING:
			action = chatv1.ContactAction_CONTACT_ACTION_CANCELLED
		case chatv1.ContactState_CONTACT_STATE_CONTACT:
			action = chatv1.ContactAction_CONTACT_ACTION_REMOVED
		}
	}
	if action == chatv1.ContactAction_CONTACT_ACTION_UNSPECIFIED {
		out.ContactState = view
		return decision{out: out}
	}
	if c == nil {
		c = newConversation(cmd.GetConversationId())
		convs[c.id] = c
	}
	// Stamped strictly after the pair's previous record, as blocks are.
	at := now.Truncate(time.Microsecond)
	if !at.After(c.contact.last) {
		at = c.contact.last.Add(time.Microsecond)
	}
	rec := &logv1.ContactChange{ConversationId: c.id, ActorId: me, OtherId: other, Action: action, Time: timestamppb.New(at)}
	wasPending := c.contact.state == contactPending
	c.applyContact(rec)
	out.ContactState = c.contact.viewOf(me)
	d := decision{out: out, recs: []*logv1.EventRecord{{Contact: rec, CommandId: cmd.GetCommandId()}}}
	if action == chatv1.ContactAction_CONTACT_ACTION_ACCEPTED {
		// Accepting opens the pair's direct conversation (a no-op if it
		// is open): a command to the same aggregate, decided after this one.
		open := derive(cmd, len(d.derived), c.id, me)
		open.DeviceId = cmd.GetDeviceId()
		open.Body = &logv1.Command_CreateConversation{CreateConversation: &logv1.CreateConversation{
			Kind: chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, MemberIds: []string{me, other}}}
		d.derived = append(d.derived, open)
	}
	// Each user is told on every device through their inbox; the other
	// one of a decline, or of the withdrawal of a request they had
	// declined, is told nothing.
	tell := func(owner, peer string, outgoing bool) {
		upd := &chatv1.ContactUpdated{UserId: peer, Action: action, Outgoing: outgoing, State: c.contact.viewOf(owner), OwnerId: owner}
		deliver := derive(cmd, len(d.derived), membership.InboxID(owner), me)
		deliver.Body = &logv1.Command_InboxDeliver{InboxDeliver: &logv1.InboxDeliver{OwnerId: owner, Item: &logv1.InboxDeliver_ContactUpdated{ContactUpdated: upd}}}
		d.derived = append(d.derived, deliver)
	}
	tell(me, other, true)
	if action != chatv1.ContactAction_CONTACT_ACTION_DECLINED && (action != chatv1.ContactAction_CONTACT_ACTION_CANCELLED || wasPending) {
		tell(other, me, false)
	}
	return d
}

// applyContact folds a pair's contact record into its aggregate, when
// deciding and when rebuilding from the log.
func (c *conversation) applyContact(r *logv1.ContactChange) {
	p := &c.contact
	if t := r.GetTime().AsTime(); t.After(p.last) {
		p.last = t
	}
	switch r.GetAction() {
	case chatv1.ContactAction_CONTACT_ACTION_REQUESTED:
		p.state, p.from, p.to = contactPending, r.GetActorId(), r.GetOtherId()
	case chatv1.ContactAction_CONTACT_ACTION_ACCEPTED:
		p.state, p.from, p.to = contactAccepted, "", ""
	case chatv1.ContactAction_CONTACT_ACTION_DECLINED:
		// The one who declines is the one who was asked.
		p.state, p.from, p.to = contactDeclined, r.GetOtherId(), r.GetActorId()
	case chatv1.ContactAction_CONTACT_ACTION_CANCELLED, chatv1.ContactAction_CONTACT_ACTION_REMOVED:
		p.state, p.from, p.to = contactNone, "", ""
	}
}

package ingest

import (
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	"github.com/parleychat/parley/pkg/server/membership"
)

// dedupKey scopes client message ids to their sender: ids are chosen by
// clients, so two users may well pick the same one.
type dedupKey struct{ user, clientMsgID string }

// conversation is the sequencer's aggregate: everything needed to decide a
// command, rebuilt from the event log alone.
type conversation struct {
	id string
	// sum is the conversation's membership, roles, kind and public flag,
	// folded by membership.Fold: the same fold the history stores'
	// summaries use. Its member list, in join order, is stamped on every
	// event for fan-out.
	sum     *chatv1.Conversation
	lastSeq uint64
	// applied maps every accepted client message id to its seq. It is what
	// makes a retry, however late, return the original answer.
	applied map[dedupKey]uint64
	// delivered is each device's position and read each member's: kept here
	// so that a Mark only ever moves them forward and a receipt is logged
	// only when something moved.
	delivered map[deviceKey]uint64
	read      map[string]uint64

	// invites holds every invite code ever created (true while valid).
	invites map[string]bool
	// blocks holds, for a direct conversation, the users of the pair who
	// block the other, and lastBlock the time of the latest block record,
	// which the next one must pass (see decideBlock).
	blocks    map[string]bool
	lastBlock time.Time
	// messages are the posted messages by seq, and lastMessage the latest
	// one's seq: what edits, deletes, reactions and replies are checked
	// against. reactions maps each user's reaction to the seq that added
	// it.
	messages    map[uint64]*message
	lastMessage uint64
	reactions   map[reactionKey]uint64
	// flags are each user's own muted and pinned flags (flags.go).
	flags map[string]*chatv1.ConversationFlags
	// contact is, for a direct conversation, the pair's contact state
	// (contacts.go).
	contact pairContact
	// invited maps each user with a pending invitation (a conversation
	// with consent) to who invited them, and invitedAt to the seq of the
	// invitation (invitations.go).
	invited   map[string]string
	invitedAt map[string]uint64
}

type deviceKey struct{ user, device string }

func newConversation(id string) *conversation {
	return &conversation{id: id, sum: &chatv1.Conversation{ConversationId: id}, applied: map[dedupKey]uint64{}, delivered: map[deviceKey]uint64{}, read: map[string]uint64{},
		invites: map[string]bool{}, blocks: map[string]bool{},
		messages: map[uint64]*message{}, reactions: map[reactionKey]uint64{}, flags: map[string]*chatv1.ConversationFlags{},
		invited: map[string]string{}, invitedAt: map[string]uint64{}}
}

// receipt is the device's position as a receipt.
func (c *conversation) receipt(user, device string) *chatv1.Receipt {
	return &chatv1.Receipt{ConversationId: c.id, UserId: user, DeviceId: device,
		DeliveredSeq: c.delivered[deviceKey{user, device}], ReadSeq: c.read[user]}
}

// move applies a position change and reports whether anything moved.
// Reading implies delivered; what a device posts it has, and its user has
// read.
func (c *conversation) move(user, device string, deliveredSeq, readSeq uint64) bool {
	moved := false
	if d := max(deliveredSeq, readSeq); device != "" && d > c.delivered[deviceKey{user, device}] {
		c.delivered[deviceKey{user, device}], moved = d, true
	}
	if readSeq > c.read[user] {
		c.read[user], moved = readSeq, true
	}
	return moved
}

func (c *conversation) isMember(user string) bool { return membership.IsMember(c.sum, user) }

// members are the conversation's members in join order; not to be
// changed by the caller.
func (c *conversation) members() []string { return c.sum.GetMemberIds() }

// replay folds a record read back from the log into the aggregate.
func replay(convs map[string]*conversation, rec *logv1.EventRecord) {
	if r := rec.GetReceipt(); r != nil {
		if c := convs[r.GetConversationId()]; c != nil {
			c.move(r.GetUserId(), r.GetDeviceId(), r.GetDeliveredSeq(), r.GetReadSeq())
		}
		return
	}
	if f := rec.GetFlags(); f != nil {
		if c := convs[f.GetConversationId()]; c != nil {
			c.applyFlags(f)
		}
		return
	}
	if d := rec.GetDeclined(); d != nil {
		if c := convs[d.GetConversationId()]; c != nil {
			c.endInvitation(d.GetUserId())
		}
		return
	}
	if r := rec.GetContact(); r != nil {
		c := convs[r.GetConversationId()]
		if c == nil {
			c = newConversation(r.GetConversationId())
			convs[c.id] = c
		}
		c.applyContact(r)
		return
	}
	if b := rec.GetBlock(); b != nil {
		c := convs[b.GetConversationId()]
		if c == nil {
			c = newConversation(b.GetConversationId())
			convs[c.id] = c
		}
		c.applyBlock(b)
		return
	}
	ev := rec.GetEvent()
	if ev == nil {
		return
	}
	c := convs[ev.GetConversationId()]
	if c == nil {
		c = newConversation(ev.GetConversationId())
		convs[c.id] = c
	}
	if ev.GetSeq() <= c.lastSeq {
		return
	}
	c.lastSeq = ev.GetSeq()
	c.move(ev.GetSenderId(), ev.GetSenderDeviceId(), ev.GetSeq(), ev.GetSeq())
	if id := ev.GetClientMsgId(); id != "" {
		c.applied[dedupKey{ev.GetSenderId(), id}] = ev.GetSeq()
	}
	c.apply(ev)
}

// apply folds an event into the aggregate. decide and replay both call
// it, so the live aggregate and the one rebuilt from the log agree.
func (c *conversation) apply(ev *chatv1.Event) {
	c.fold(ev)
	membership.Fold(c.sum, ev)
	c.applyGroupEvent(ev)
}

// decide applies one command to the aggregates of its partition. It returns
// the event to append (nil when nothing changes) and the outcome for the
// waiting Submit. It is deterministic given its inputs but for event ids and
// times, so a replayed command meets its own earlier event in applied and
// yields a duplicate outcome, never a second event.
func decide(convs map[string]*conversation, cmd *logv1.Command, maxMembers int, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
	out := &logv1.Outcome{CommandId: cmd.GetCommandId(), ConversationId: cmd.GetConversationId(), ClientMsgId: cmd.GetClientMsgId()}
	reject := func(code chatv1.ErrorCode, msg string) (*logv1.EventRecord, *logv1.Outcome) {
		out.ErrorCode, out.ErrorMessage = code, msg
		return nil, out
	}
	f := familyOf(cmd)
	if f != nil && f.decideMore != nil {
		// decideCommand's to decide: it may yield several records.
		return reject(chatv1.ErrorCode_ERROR_CODE_INTERNAL, "command needs decideCommand")
	}
	if f != nil && f.state {
		return f.decideState(convs, cmd, out, now)
	}
	key := dedupKey{cmd.GetUserId(), cmd.GetClientMsgId()}
	if c := convs[cmd.GetConversationId()]; c != nil {
		if seq, ok := c.applied[key]; ok {
			out.Seq, out.Duplicate = seq, true
			return nil, out
		}
	}
	if f == nil {
		return reject(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "command has no known body")
	}
	ev := &chatv1.Event{
		ConversationId: cmd.GetConversationId(),
		EventId:        uuid.Must(uuid.NewV7()).String(),
		SenderId:       cmd.GetUserId(),
		SenderDeviceId: cmd.GetDeviceId(),
		Time:           timestamppb.New(now),
		ClientMsgId:    cmd.GetClientMsgId(),
	}
	v := f.decideEvent(convs, cmd, maxMembers, ev)
	switch {
	case v.code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED:
		return reject(v.code, v.msg)
	case v.noop:
		// Nothing to log (a reaction already there, a direct
		// conversation opened again). Not remembered in applied either,
		// so the same id later, once the state differs, still applies.
		out.Seq, out.Duplicate = v.seq, true
		return nil, out
	}
	c := convs[cmd.GetConversationId()]
	c.lastSeq++
	ev.Seq = c.lastSeq
	c.applied[key] = ev.Seq
	c.apply(ev)
	c.move(cmd.GetUserId(), cmd.GetDeviceId(), ev.Seq, ev.Seq)
	out.Seq = ev.Seq
	recipients := append([]string(nil), c.members()...)
	if v.removed != "" {
		// Who leaves gets their own departure, then nothing more.
		recipients = append(recipients, v.removed)
	}
	rec := &logv1.EventRecord{Event: ev, RecipientIds: recipients, CommandId: cmd.GetCommandId()}
	if ev.GetMessagePosted() != nil {
		// Fan-out notifies offline recipients of messages, except those
		// who muted the conversation: only the sequencer knows who did.
		for _, u := range recipients {
			if c.flags[u].GetMuted() {
				rec.MutedIds = append(rec.MutedIds, u)
			}
		}
	}
	return rec, out
}

package ingest

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// dedupKey scopes client message ids to their sender: ids are chosen by
// clients, so two users may well pick the same one.
type dedupKey struct{ user, clientMsgID string }

// conversation is the sequencer's aggregate: everything needed to decide a
// command, rebuilt from the event log alone.
type conversation struct {
	id      string
	kind    chatv1.ConversationKind
	members []string // in join order; stamped on every event for fan-out
	lastSeq uint64
	// applied maps every accepted client message id to its seq. It is what
	// makes a retry, however late, return the original answer.
	applied map[dedupKey]uint64
	// delivered is each device's position and read each member's: kept here
	// so that a Mark only ever moves them forward and a receipt is logged
	// only when something moved.
	delivered map[deviceKey]uint64
	read      map[string]uint64

	// Groups and channels (groups.go): the owner, the admins, the muted
	// members, every invite code ever created (true while valid) and
	// whether a channel is public.
	owner   string
	admins  map[string]bool
	muted   map[string]bool
	invites map[string]bool
	public  bool
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
}

type deviceKey struct{ user, device string }

func newConversation(id string) *conversation {
	return &conversation{id: id, applied: map[dedupKey]uint64{}, delivered: map[deviceKey]uint64{}, read: map[string]uint64{},
		admins: map[string]bool{}, muted: map[string]bool{}, invites: map[string]bool{}, blocks: map[string]bool{},
		messages: map[uint64]*message{}, reactions: map[reactionKey]uint64{}, flags: map[string]*chatv1.ConversationFlags{}}
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

func (c *conversation) isMember(user string) bool {
	for _, m := range c.members {
		if m == user {
			return true
		}
	}
	return false
}

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
	c.fold(ev)
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_ConversationCreated:
		c.kind = b.ConversationCreated.GetKind()
		c.members = append([]string(nil), b.ConversationCreated.GetMemberIds()...)
		c.owner, c.public = ev.GetSenderId(), b.ConversationCreated.GetPublic()
	case *chatv1.Event_MemberAdded:
		if u := b.MemberAdded.GetUserId(); !c.isMember(u) {
			c.members = append(c.members, u)
		}
	default:
		c.applyGroupEvent(ev)
	}
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
	c := convs[cmd.GetConversationId()]
	if m, ok := cmd.GetBody().(*logv1.Command_Mark); ok {
		// Marks carry no client message id worth deduplicating: moving a
		// position is idempotent by itself.
		return decideMark(c, cmd, m.Mark, out, now)
	}
	if f, ok := cmd.GetBody().(*logv1.Command_SetFlags); ok {
		// So is setting a flag, which takes no seq either.
		return decideFlags(c, cmd, f.SetFlags, out, now)
	}
	if b, ok := cmd.GetBody().(*logv1.Command_Block); ok {
		// Blocking is idempotent by itself too, and has no seq to answer.
		return decideBlock(convs, cmd, b.Block, out, now)
	}
	key := dedupKey{cmd.GetUserId(), cmd.GetClientMsgId()}
	if c != nil {
		if seq, ok := c.applied[key]; ok {
			out.Seq, out.Duplicate = seq, true
			return nil, out
		}
	}
	ev := &chatv1.Event{
		ConversationId: cmd.GetConversationId(),
		EventId:        uuid.Must(uuid.NewV7()).String(),
		SenderId:       cmd.GetUserId(),
		SenderDeviceId: cmd.GetDeviceId(),
		Time:           timestamppb.New(now),
		ClientMsgId:    cmd.GetClientMsgId(),
	}
	var removedTo string
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_CreateConversation:
		if b.CreateConversation.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_DIRECT && c.blocked() {
			// Checked first, so that the blocked user cannot tell a block
			// of a conversation that exists from one that does not.
			return reject(chatv1.ErrorCode_ERROR_CODE_BLOCKED, "you cannot message this user")
		}
		if c.exists() {
			if c.kind == chatv1.ConversationKind_CONVERSATION_KIND_DIRECT && c.isMember(cmd.GetUserId()) {
				// Opening a direct conversation that exists finds it.
				out.Seq, out.Duplicate = 1, true
				return nil, out
			}
			return reject(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "conversation already exists")
		}
		if len(b.CreateConversation.GetMemberIds()) > maxMembers {
			return reject(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "too many members")
		}
		if c == nil {
			c = newConversation(cmd.GetConversationId())
			convs[c.id] = c
		}
		c.kind = b.CreateConversation.GetKind()
		c.members = append(c.members, b.CreateConversation.GetMemberIds()...)
		c.owner, c.public = cmd.GetUserId(), b.CreateConversation.GetPublic()
		ev.Body = &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
			Kind: b.CreateConversation.GetKind(), Title: b.CreateConversation.GetTitle(), MemberIds: c.members,
			Public: b.CreateConversation.GetPublic(),
		}}
	case *logv1.Command_AddMember:
		if !c.exists() {
			return reject(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no such conversation")
		}
		if !c.isMember(cmd.GetUserId()) {
			return reject(chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER, "you are not a member of this conversation")
		}
		if !c.managed() {
			return reject(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "members can only be added to groups and channels")
		}
		if c.kind == chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL && c.role(cmd.GetUserId()) < chatv1.MemberRole_MEMBER_ROLE_ADMIN {
			return reject(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "only the owner and admins add followers to a channel")
		}
		u := b.AddMember.GetUserId()
		if c.isMember(u) {
			return reject(chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS, u+" is already a member")
		}
		if len(c.members) >= maxMembers {
			return reject(chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL, "conversation is full")
		}
		c.members = append(c.members, u)
		ev.Body = &chatv1.Event_MemberAdded{MemberAdded: &chatv1.MemberAdded{UserId: u}}
	case *logv1.Command_PostMessage, *logv1.Command_EditMessage, *logv1.Command_DeleteMessage, *logv1.Command_React:
		if !c.exists() {
			return reject(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no such conversation")
		}
		if !c.isMember(cmd.GetUserId()) {
			return reject(chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER, "you are not a member of this conversation")
		}
		switch b.(type) {
		case *logv1.Command_PostMessage, *logv1.Command_EditMessage:
			// Editing puts words in the conversation as posting does:
			// followers of a channel, muted members and a blocked pair
			// may do neither. Reacting and deleting one's own are left
			// to them.
			if code, msg := c.mayPost(cmd.GetUserId()); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
				return reject(code, msg)
			}
		}
		seq, noop, code, msg := decideMessage(c, cmd, ev)
		if code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return reject(code, msg)
		}
		if noop {
			// A reaction already there, or one to remove that is not:
			// nothing to log. Not remembered in applied either, so the
			// same id later, once the state differs, still applies.
			out.Seq, out.Duplicate = seq, true
			return nil, out
		}
	case *logv1.Command_RemoveMember, *logv1.Command_Leave, *logv1.Command_SetRole, *logv1.Command_TransferOwnership,
		*logv1.Command_MuteMember, *logv1.Command_Rename, *logv1.Command_CreateInvite, *logv1.Command_RevokeInvite,
		*logv1.Command_JoinByInvite, *logv1.Command_Follow:
		v := decideGroup(c, cmd, maxMembers, ev)
		if v.code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return reject(v.code, v.msg)
		}
		c.applyGroupEvent(ev)
		if v.removed != "" {
			// Who leaves gets their own departure, then nothing more.
			removedTo = v.removed
		}
	default:
		return reject(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "command has no known body")
	}
	c.lastSeq++
	ev.Seq = c.lastSeq
	c.applied[key] = ev.Seq
	c.fold(ev)
	c.move(cmd.GetUserId(), cmd.GetDeviceId(), ev.Seq, ev.Seq)
	out.Seq = ev.Seq
	recipients := append([]string(nil), c.members...)
	if removedTo != "" {
		recipients = append(recipients, removedTo)
	}
	return &logv1.EventRecord{Event: ev, RecipientIds: recipients, CommandId: cmd.GetCommandId()}, out
}

// decideMark moves a device's positions. A receipt takes no seq: positions
// are state, not history, so they neither show in history nor count as
// unread for anyone. Nothing is logged when nothing moves, which makes a
// repeated Mark free and idempotent.
func decideMark(c *conversation, cmd *logv1.Command, m *logv1.Mark, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
	switch {
	case !c.exists():
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no such conversation"
		return nil, out
	case !c.isMember(cmd.GetUserId()):
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER, "you are not a member of this conversation"
		return nil, out
	case cmd.GetDeviceId() == "":
		// Prepare refuses these; a position belongs to a device.
		out.ErrorCode, out.ErrorMessage = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a mark needs a device id"
		return nil, out
	case max(m.GetDeliveredSeq(), m.GetReadSeq()) > c.lastSeq:
		out.ErrorCode = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
		out.ErrorMessage = fmt.Sprintf("seq %d is beyond the conversation's last seq %d", max(m.GetDeliveredSeq(), m.GetReadSeq()), c.lastSeq)
		return nil, out
	}
	moved := c.move(cmd.GetUserId(), cmd.GetDeviceId(), m.GetDeliveredSeq(), m.GetReadSeq())
	out.Receipt = c.receipt(cmd.GetUserId(), cmd.GetDeviceId())
	// The head: every event up to it is on the log before this outcome,
	// which is what lets a resume know where history must reach.
	out.Seq = c.lastSeq
	if !moved {
		return nil, out
	}
	r := proto.CloneOf(out.Receipt)
	r.Time = timestamppb.New(now)
	return &logv1.EventRecord{Receipt: r, RecipientIds: append([]string(nil), c.members...), CommandId: cmd.GetCommandId()}, out
}

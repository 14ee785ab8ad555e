package ingest

import (
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// family is the home of one family of commands: its shape check at Submit
// and its decision in the sequencer. What its events do to the aggregate
// is conversation.apply, shared by deciding and by the rebuild from the
// log, so the two cannot disagree.
type family struct {
	// state families change state, not history: the record they log takes
	// no seq, and their commands carry no client message id (moving a
	// position, setting a flag or a block is idempotent by itself).
	state bool
	// prepare checks the command's shape and fills what ingest derives
	// (ids, member lists); it runs before the command reaches the log.
	prepare func(cmd *logv1.Command) (chatv1.ErrorCode, string)
	// decideState decides a command of a state family: the record to log
	// (nil when nothing changes) and the outcome.
	decideState func(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome)
	// decideEvent decides a command of a history family: it sets ev's
	// body, or refuses, or finds nothing to do. It changes no aggregate
	// but for registering a conversation being created: the event is
	// folded in by the caller once it has its seq.
	decideEvent func(convs map[string]*conversation, cmd *logv1.Command, maxMembers int, ev *chatv1.Event) verdict
	// decideMore decides a command whose decision may log several
	// records or hand commands on to other conversations (contacts,
	// inboxes); see decideCommand.
	decideMore func(convs map[string]*conversation, cmd *logv1.Command, maxMembers int, out *logv1.Outcome, now time.Time) decision
	// handOn, when set, names the commands a decision of this family
	// hands on, given the record it logged (an invitation's inbox item).
	handOn func(convs map[string]*conversation, cmd *logv1.Command, rec *logv1.EventRecord) []*logv1.Command
	// internal families are written by the sequencer alone: ingest
	// refuses them at Submit.
	internal bool
}

// decision is everything one command yields: the records to log, the
// commands it hands on (produced in the same transaction, decided later
// by their own conversations' sequencer), and the outcome.
type decision struct {
	recs    []*logv1.EventRecord
	derived []*logv1.Command
	out     *logv1.Outcome
}

// decideCommand decides one command (see decide), for every family.
func decideCommand(convs map[string]*conversation, cmd *logv1.Command, maxMembers int, now time.Time) decision {
	f := familyOf(cmd)
	if f != nil && f.decideMore != nil {
		out := &logv1.Outcome{CommandId: cmd.GetCommandId(), ConversationId: cmd.GetConversationId(), ClientMsgId: cmd.GetClientMsgId()}
		return f.decideMore(convs, cmd, maxMembers, out, now)
	}
	rec, out := decide(convs, cmd, maxMembers, now)
	d := decision{out: out}
	if rec != nil {
		d.recs = []*logv1.EventRecord{rec}
		if f != nil && f.handOn != nil {
			d.derived = f.handOn(convs, cmd, rec)
		}
	}
	return d
}

// familyOf is the one place that names each command's family. A new kind
// of command is a case here, plus its prepare and decide in its family's
// file (and a fold in conversation.apply if its event changes the
// aggregate).
func familyOf(cmd *logv1.Command) *family {
	switch cmd.GetBody().(type) {
	case *logv1.Command_Mark:
		return &markFamily
	case *logv1.Command_HeadProbe:
		return &headFamily
	case *logv1.Command_SetFlags:
		return &flagFamily
	case *logv1.Command_Block:
		return &blockFamily
	case *logv1.Command_ContactRequest, *logv1.Command_ContactResponse, *logv1.Command_ContactCancel:
		return &contactFamily
	case *logv1.Command_InboxDeliver:
		return &inboxFamily
	case *logv1.Command_AnswerInvitation:
		return &answerFamily
	case *logv1.Command_Announce:
		return &announceFamily
	case *logv1.Command_SetSettings:
		return &settingsFamily
	case *logv1.Command_Notice:
		return &noticeFamily
	case *logv1.Command_CreateConversation:
		return &createFamily
	case *logv1.Command_AddMember, *logv1.Command_RemoveMember, *logv1.Command_Leave, *logv1.Command_SetRole,
		*logv1.Command_TransferOwnership, *logv1.Command_MuteMember, *logv1.Command_Rename,
		*logv1.Command_CreateInvite, *logv1.Command_RevokeInvite, *logv1.Command_JoinByInvite, *logv1.Command_Follow:
		return &memberFamily
	case *logv1.Command_PostMessage, *logv1.Command_EditMessage, *logv1.Command_DeleteMessage, *logv1.Command_React:
		return &messageFamily
	}
	return nil
}

// The families. Each is a table of functions, never changed after start.
var (
	// marks: aggregate.go.
	markFamily = family{state: true, prepare: prepareMark, decideState: func(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
		return decideMark(convs[cmd.GetConversationId()], cmd, cmd.GetMark(), out, now)
	}}
	// head probes: heads.go.
	headFamily = family{state: true, prepare: prepareHeads, decideState: func(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome, _ time.Time) (*logv1.EventRecord, *logv1.Outcome) {
		return decideHeads(convs, cmd, out)
	}}
	// flags: flags.go.
	flagFamily = family{state: true, prepare: prepareFlags, decideState: func(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
		return decideFlags(convs[cmd.GetConversationId()], cmd, cmd.GetSetFlags(), out, now)
	}}
	// blocks: groups.go.
	blockFamily = family{state: true, prepare: prepareBlock, decideState: func(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome, now time.Time) (*logv1.EventRecord, *logv1.Outcome) {
		return decideBlock(convs, cmd, cmd.GetBlock(), out, now)
	}}
	// contacts: contacts.go.
	contactFamily = family{state: true, prepare: prepareContact, decideMore: func(convs map[string]*conversation, cmd *logv1.Command, _ int, out *logv1.Outcome, now time.Time) decision {
		return decideContact(convs, cmd, out, now)
	}}
	// notices to a user's inbox: inbox.go.
	noticeFamily = family{prepare: prepareNotice, decideMore: decideNotice}
	// the user's settings: inbox.go.
	settingsFamily = family{state: true, prepare: prepareSettings, decideMore: decideSettings}
	// broadcasts: audiences.go.
	announceFamily = family{prepare: prepareAnnounce, decideMore: decideAnnounce}
	// answers to invitations: invitations.go.
	answerFamily = family{state: true, prepare: needConversation, decideMore: decideAnswer}
	// inbox items: inbox.go.
	inboxFamily = family{internal: true, decideMore: func(convs map[string]*conversation, cmd *logv1.Command, _ int, out *logv1.Outcome, now time.Time) decision {
		return decideInbox(convs, cmd, out, now)
	}}
	// creates: conversations.go.
	createFamily = family{prepare: prepareCreate, decideEvent: decideCreate}
	// membership and administration: groups.go.
	memberFamily = family{prepare: prepareMembership, decideEvent: func(convs map[string]*conversation, cmd *logv1.Command, maxMembers int, ev *chatv1.Event) verdict {
		return decideGroup(convs[cmd.GetConversationId()], cmd, maxMembers, ev)
	}, handOn: handOnInvitation}
	// messages: messages.go.
	messageFamily = family{prepare: prepareMessage, decideEvent: func(convs map[string]*conversation, cmd *logv1.Command, _ int, ev *chatv1.Event) verdict {
		return decideMessage(convs[cmd.GetConversationId()], cmd, ev)
	}}
)

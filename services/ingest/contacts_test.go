package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// contactLog decides commands as the sequencers would, handing on what
// each decision hands on until nothing is left (one map of aggregates
// stands for every partition: they are keyed by conversation), and keeps
// every record logged, in order.
type contactLog struct {
	t    *testing.T
	now  time.Time
	n    int
	recs []*logv1.EventRecord
	// convs are the live aggregates.
	convs map[string]*conversation
}

func newContactLog(t *testing.T) *contactLog {
	return &contactLog{t: t, now: time.Unix(1_700_000_000, 0), convs: map[string]*conversation{}}
}

// run submits cmd (prepared as ingest would) and decides what follows
// from it; it returns cmd's outcome and the records of the whole cascade.
func (l *contactLog) run(cmd *logv1.Command) (*logv1.Outcome, []*logv1.EventRecord) {
	l.t.Helper()
	l.n++
	cmd.CommandId = fmt.Sprintf("cmd-%d", l.n)
	if code, msg := Prepare(cmd); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return &logv1.Outcome{ErrorCode: code, ErrorMessage: msg}, nil
	}
	start := len(l.recs)
	var first *logv1.Outcome
	queue := []*logv1.Command{cmd}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		l.now = l.now.Add(time.Millisecond)
		d := decideCommand(l.convs, next, 100, l.now)
		if first == nil {
			first = d.out
		} else if d.out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			l.t.Fatalf("handed-on command %v refused: %v", next, d.out)
		}
		l.recs = append(l.recs, d.recs...)
		queue = append(queue, d.derived...)
	}
	return first, l.recs[start:]
}

func contactCmd(user string, body any) *logv1.Command {
	c := &logv1.Command{UserId: user, DeviceId: user + "-phone"}
	switch b := body.(type) {
	case *logv1.ContactRequest:
		c.Body = &logv1.Command_ContactRequest{ContactRequest: b}
	case *logv1.ContactResponse:
		c.Body = &logv1.Command_ContactResponse{ContactResponse: b}
	case *logv1.ContactCancel:
		c.Body = &logv1.Command_ContactCancel{ContactCancel: b}
	}
	return c
}

// inboxItems are the ContactUpdated items of owner's inbox among recs.
func inboxItems(recs []*logv1.EventRecord, owner string) []*chatv1.ContactUpdated {
	var items []*chatv1.ContactUpdated
	for _, r := range recs {
		if ev := r.GetEvent(); ev.GetConversationId() == membership.InboxID(owner) && ev.GetContactUpdated() != nil {
			items = append(items, ev.GetContactUpdated())
		}
	}
	return items
}

func TestContacts(t *testing.T) {
	ok := chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	const (
		none     = chatv1.ContactState_CONTACT_STATE_UNSPECIFIED
		outgoing = chatv1.ContactState_CONTACT_STATE_OUTGOING
		incoming = chatv1.ContactState_CONTACT_STATE_INCOMING
		contact  = chatv1.ContactState_CONTACT_STATE_CONTACT
	)
	type told struct {
		owner, peer string
		action      chatv1.ContactAction
		outgoing    bool
		state       chatv1.ContactState
	}
	item := func(owner, peer string, a chatv1.ContactAction, out bool, st chatv1.ContactState) told {
		return told{owner, peer, a, out, st}
	}
	req := func(from, to string) *logv1.Command { return contactCmd(from, &logv1.ContactRequest{UserId: to}) }
	answer := func(who, to string, accept bool) *logv1.Command {
		return contactCmd(who, &logv1.ContactResponse{UserId: to, Accept: accept})
	}
	cancel := func(who, to string) *logv1.Command { return contactCmd(who, &logv1.ContactCancel{UserId: to}) }
	const (
		requested = chatv1.ContactAction_CONTACT_ACTION_REQUESTED
		accepted  = chatv1.ContactAction_CONTACT_ACTION_ACCEPTED
		declined  = chatv1.ContactAction_CONTACT_ACTION_DECLINED
		cancelled = chatv1.ContactAction_CONTACT_ACTION_CANCELLED
		removed   = chatv1.ContactAction_CONTACT_ACTION_REMOVED
	)
	type step struct {
		cmd   *logv1.Command
		code  chatv1.ErrorCode
		state chatv1.ContactState
		told  []told
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"request, retry, accept", []step{
			{req("alice", "bob"), ok, outgoing, []told{item("alice", "bob", requested, true, outgoing), item("bob", "alice", requested, false, incoming)}},
			{req("alice", "bob"), ok, outgoing, nil},
			{answer("bob", "alice", true), ok, contact, []told{item("bob", "alice", accepted, true, contact), item("alice", "bob", accepted, false, contact)}},
			{answer("bob", "alice", true), ok, contact, nil},
			{req("bob", "alice"), ok, contact, nil},
		}},
		{"both ask: agreed", []step{
			{req("carol", "dave"), ok, outgoing, []told{item("carol", "dave", requested, true, outgoing), item("dave", "carol", requested, false, incoming)}},
			{req("dave", "carol"), ok, contact, []told{item("dave", "carol", accepted, true, contact), item("carol", "dave", accepted, false, contact)}},
		}},
		{"a decline is told to nobody else", []step{
			{req("erin", "frank"), ok, outgoing, []told{item("erin", "frank", requested, true, outgoing), item("frank", "erin", requested, false, incoming)}},
			{answer("frank", "erin", false), ok, none, []told{item("frank", "erin", declined, true, none)}},
			{answer("frank", "erin", false), ok, none, nil},
			{answer("frank", "erin", true), chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, none, nil},
			// The asker sees the request waiting; asking again does nothing.
			{req("erin", "frank"), ok, outgoing, nil},
			{cancel("erin", "frank"), ok, none, []told{item("erin", "frank", cancelled, true, none)}},
			// Asked anew, frank is told again.
			{req("erin", "frank"), ok, outgoing, []told{item("erin", "frank", requested, true, outgoing), item("frank", "erin", requested, false, incoming)}},
		}},
		{"cancel and remove tell both", []step{
			{req("gina", "hank"), ok, outgoing, []told{item("gina", "hank", requested, true, outgoing), item("hank", "gina", requested, false, incoming)}},
			{cancel("gina", "hank"), ok, none, []told{item("gina", "hank", cancelled, true, none), item("hank", "gina", cancelled, false, none)}},
			{cancel("gina", "hank"), ok, none, nil},
			{answer("hank", "gina", true), chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, none, nil},
			{req("hank", "gina"), ok, outgoing, []told{item("hank", "gina", requested, true, outgoing), item("gina", "hank", requested, false, incoming)}},
			{answer("gina", "hank", true), ok, contact, []told{item("gina", "hank", accepted, true, contact), item("hank", "gina", accepted, false, contact)}},
			{cancel("hank", "gina"), ok, none, []told{item("hank", "gina", removed, true, none), item("gina", "hank", removed, false, none)}},
		}},
		{"bad commands", []step{
			{req("ivy", "ivy"), chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, none, nil},
			{req("ivy", ""), chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, none, nil},
			{answer("ivy", "jack", true), chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, none, nil},
			{cancel("ivy", "jack"), ok, none, nil},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newContactLog(t)
			for i, s := range tc.steps {
				out, recs := l.run(s.cmd)
				if out.GetErrorCode() != s.code || s.code == ok && out.GetContactState() != s.state {
					t.Fatalf("step %d: outcome %v, want code %v and state %v", i, out, s.code, s.state)
				}
				var got []told
				for _, r := range recs {
					if u := r.GetEvent().GetContactUpdated(); u != nil {
						if r.GetEvent().GetSenderId() != "" || len(r.GetRecipientIds()) != 1 || r.GetRecipientIds()[0] != u.GetOwnerId() ||
							r.GetEvent().GetConversationId() != membership.InboxID(u.GetOwnerId()) {
							t.Fatalf("step %d: inbox item %v", i, r)
						}
						got = append(got, told{u.GetOwnerId(), u.GetUserId(), u.GetAction(), u.GetOutgoing(), u.GetState()})
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(s.told) {
					t.Fatalf("step %d: told %v, want %v", i, got, s.told)
				}
			}
		})
	}
}

func TestContactsRespectBlocks(t *testing.T) {
	l := newContactLog(t)
	if out, _ := l.run(cmdOf("", "bob", "", &logv1.Block{UserId: "alice", Blocked: true})); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		t.Fatal(out)
	}
	for _, who := range [][2]string{{"alice", "bob"}, {"bob", "alice"}} {
		out, recs := l.run(contactCmd(who[0], &logv1.ContactRequest{UserId: who[1]}))
		if out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_BLOCKED || len(recs) != 0 {
			t.Fatalf("%s asks %s across a block: %v, %d records", who[0], who[1], out, len(recs))
		}
	}
	// A request made before the block cannot be accepted across it.
	l = newContactLog(t)
	l.run(contactCmd("alice", &logv1.ContactRequest{UserId: "bob"}))
	l.run(cmdOf("", "alice", "", &logv1.Block{UserId: "bob", Blocked: true}))
	if out, _ := l.run(contactCmd("bob", &logv1.ContactResponse{UserId: "alice", Accept: true})); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_BLOCKED {
		t.Fatalf("accepted across a block: %v", out)
	}
}

func TestAcceptingOpensTheDirectConversation(t *testing.T) {
	l := newContactLog(t)
	l.run(contactCmd("alice", &logv1.ContactRequest{UserId: "bob"}))
	_, recs := l.run(contactCmd("bob", &logv1.ContactResponse{UserId: "alice", Accept: true}))
	dm := DirectID("alice", "bob")
	var created *chatv1.Event
	for _, r := range recs {
		if r.GetEvent().GetConversationId() == dm {
			created = r.GetEvent()
		}
	}
	if created.GetConversationCreated().GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_DIRECT || created.GetSeq() != 1 ||
		fmt.Sprint(created.GetConversationCreated().GetMemberIds()) != "[bob alice]" {
		t.Fatalf("direct conversation after accepting: %v", created)
	}
	// Opened already: accepting after a removal and a new request opens
	// nothing new.
	l.run(contactCmd("alice", &logv1.ContactCancel{UserId: "bob"}))
	l.run(contactCmd("alice", &logv1.ContactRequest{UserId: "bob"}))
	_, recs = l.run(contactCmd("bob", &logv1.ContactResponse{UserId: "alice", Accept: true}))
	for _, r := range recs {
		if r.GetEvent().GetConversationId() == dm {
			t.Fatalf("the direct conversation got %v", r)
		}
	}
}

func TestInboxes(t *testing.T) {
	l := newContactLog(t)
	l.run(contactCmd("alice", &logv1.ContactRequest{UserId: "bob"}))
	_, recs := l.run(contactCmd("carol", &logv1.ContactRequest{UserId: "bob"}))
	inbox := membership.InboxID("bob")
	// bob's inbox: created at seq 1, then alice's and carol's requests.
	var seqs []uint64
	for _, r := range l.recs {
		if ev := r.GetEvent(); ev.GetConversationId() == inbox {
			seqs = append(seqs, ev.GetSeq())
			if ev.GetSeq() == 1 && (ev.GetConversationCreated().GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_INBOX ||
				fmt.Sprint(ev.GetConversationCreated().GetMemberIds()) != "[bob]") {
				t.Fatalf("inbox seq 1: %v", ev)
			}
		}
	}
	if fmt.Sprint(seqs) != "[1 2 3]" {
		t.Fatalf("bob's inbox seqs %v, want [1 2 3]", seqs)
	}
	if got := inboxItems(recs, "bob"); len(got) != 1 || got[0].GetUserId() != "carol" {
		t.Fatalf("carol's request in bob's inbox: %v", got)
	}

	// A handed-on command decided twice (it cannot be, short of a bug)
	// logs nothing the second time.
	var deliver *logv1.Command
	l2 := newContactLog(t)
	cmd := contactCmd("alice", &logv1.ContactRequest{UserId: "bob"})
	cmd.CommandId = "x"
	if code, msg := Prepare(cmd); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		t.Fatal(msg)
	}
	d := decideCommand(l2.convs, cmd, 100, l2.now)
	deliver = d.derived[1]
	if first := decideCommand(l2.convs, deliver, 100, l2.now); len(first.recs) != 2 {
		t.Fatalf("first inbox item: %d records, want creation and item", len(first.recs))
	}
	if again := decideCommand(l2.convs, proto.CloneOf(deliver), 100, l2.now); len(again.recs) != 0 || !again.out.GetDuplicate() || again.out.GetSeq() != 2 {
		t.Fatalf("the same item again: %v, %d records", again.out, len(again.recs))
	}

	// Nobody writes to an inbox but the sequencer: clients cannot hand
	// items to it, and its owner cannot post in it.
	forged := &logv1.Command{UserId: "bob", ClientMsgId: "f", ConversationId: inbox,
		Body: &logv1.Command_InboxDeliver{InboxDeliver: &logv1.InboxDeliver{OwnerId: "bob", Item: &logv1.InboxDeliver_ContactUpdated{ContactUpdated: &chatv1.ContactUpdated{}}}}}
	if code, _ := Prepare(forged); code != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("a client's inbox item: %v", code)
	}
	if out, _ := l.run(postCmd(inbox, "bob", "m1", "hi")); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("posting in an inbox: %v", out)
	}
	post := postCmd(inbox, "app", "m2", "notice")
	post.GetPostMessage().System = true
	if out, _ := l.run(post); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("a system post in an inbox: %v", out)
	}
	// Its owner marks it read like any conversation.
	if out, _ := l.run(markCmd(inbox, "bob", "bob-phone", 3, 3)); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || out.GetSeq() != 3 {
		t.Fatalf("marking the inbox: %v", out)
	}
}

// TestContactsReplay checks that the aggregates rebuilt from the log
// decide as the live ones: every pair's state and every inbox's head.
func TestContactsReplay(t *testing.T) {
	l := newContactLog(t)
	for _, c := range []*logv1.Command{
		contactCmd("alice", &logv1.ContactRequest{UserId: "bob"}),
		contactCmd("bob", &logv1.ContactResponse{UserId: "alice", Accept: true}),
		contactCmd("carol", &logv1.ContactRequest{UserId: "alice"}),
		contactCmd("alice", &logv1.ContactResponse{UserId: "carol"}),
		contactCmd("dave", &logv1.ContactRequest{UserId: "alice"}),
		contactCmd("erin", &logv1.ContactRequest{UserId: "bob"}),
		contactCmd("erin", &logv1.ContactCancel{UserId: "bob"}),
	} {
		l.run(c)
	}
	rebuilt := map[string]*conversation{}
	for _, r := range l.recs {
		replay(rebuilt, r)
	}
	if len(rebuilt) != len(l.convs) {
		t.Fatalf("rebuilt %d aggregates, live %d", len(rebuilt), len(l.convs))
	}
	for id, live := range l.convs {
		got := rebuilt[id]
		if got.contact != live.contact || got.lastSeq != live.lastSeq || got.kind() != live.kind() {
			t.Fatalf("%s rebuilt as %+v (seq %d), live %+v (seq %d)", id, got.contact, got.lastSeq, live.contact, live.lastSeq)
		}
	}
}

// TestSequencerHandsOnInboxItems runs a contact request through a
// sequencer on Kafka (kfake, 8 partitions): the pair's record lands in the
// pair's partition, and each user's item in their inbox's partition, where
// the inbox is created and the item sequenced, all read committed.
func TestSequencerHandsOnInboxItems(t *testing.T) {
	const partitions = 8
	brokers, cl := topicstest.Cluster(t, partitions)
	seq, err := NewSequencer(topics.ClientOpts(brokers), "", 10, slog.New(slog.DiscardHandler), newDeadLetters(metrics.NewRegistry()), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- seq.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cmd := contactCmd("alice", &logv1.ContactRequest{UserId: "bob"})
	cmd.CommandId = "request-1"
	if code, msg := Prepare(cmd); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		t.Fatal(msg)
	}
	v, _ := proto.Marshal(cmd)
	topicstest.Produce(t, cl, topics.Commands, cmd.GetConversationId(), v)

	partOf := commandPartitioner(partitions)
	if partOf(cmd.GetConversationId()) == partOf(membership.InboxID("bob")) {
		t.Fatal("pick users whose inbox is on another partition than their pair")
	}
	// The pair's record, then per inbox its creation and its item.
	recs := readAtLeast(t, brokers, topics.Events, 5)
	items := map[string]bool{}
	for _, r := range recs {
		rec := &logv1.EventRecord{}
		if err := proto.Unmarshal(r.Value, rec); err != nil {
			t.Fatal(err)
		}
		var conv string
		switch {
		case rec.GetContact() != nil:
			conv = rec.GetContact().GetConversationId()
		case rec.GetEvent() != nil:
			conv = rec.GetEvent().GetConversationId()
			if u := rec.GetEvent().GetContactUpdated(); u != nil {
				items[u.GetOwnerId()] = true
				if rec.GetEvent().GetSeq() != 2 {
					t.Fatalf("%s's item at seq %d, want 2 (after the inbox's creation)", u.GetOwnerId(), rec.GetEvent().GetSeq())
				}
			}
		}
		if r.Partition != partOf(conv) {
			t.Fatalf("record of %s in partition %d, want %d", conv, r.Partition, partOf(conv))
		}
	}
	if !items["alice"] || !items["bob"] {
		t.Fatalf("inbox items for %v, want alice and bob", items)
	}
}

func TestSettings(t *testing.T) {
	l := newContactLog(t)
	on, off := true, false
	set := func(v *bool) *logv1.Command {
		return &logv1.Command{UserId: "bob", DeviceId: "b1", Body: &logv1.Command_SetSettings{SetSettings: &logv1.SetSettings{ContactsOnly: v}}}
	}
	out, recs := l.run(set(&on))
	inbox := membership.InboxID("bob")
	if out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || out.GetConversationId() != inbox || len(recs) != 2 ||
		!recs[1].GetEvent().GetSettingsChanged().GetContactsOnly() || fmt.Sprint(recs[1].GetRecipientIds()) != "[bob]" {
		t.Fatalf("turning contacts-only on: %v, %v", out, recs)
	}
	if !l.convs[inbox].sum.GetContactsOnly() {
		t.Fatal("the inbox's summary does not hold the setting")
	}
	if out, recs := l.run(set(&on)); !out.GetDuplicate() || len(recs) != 0 {
		t.Fatalf("setting it again: %v, %d records", out, len(recs))
	}
	if out, recs := l.run(set(&off)); out.GetSeq() != 3 || len(recs) != 1 {
		t.Fatalf("turning it off: %v, %d records", out, len(recs))
	}
	if out, _ := l.run(set(nil)); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("setting nothing: %v", out)
	}
	rebuilt := map[string]*conversation{}
	for _, r := range l.recs {
		replay(rebuilt, r)
	}
	if rebuilt[inbox].sum.GetContactsOnly() || rebuilt[inbox].lastSeq != 3 {
		t.Fatalf("rebuilt: %v", rebuilt[inbox].sum)
	}
}

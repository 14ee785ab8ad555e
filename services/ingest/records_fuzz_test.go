package ingest

import (
	"fmt"
	"github.com/parleychat/parley/pkg/server/membership"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// FuzzSequencerRecords feeds arbitrary bytes to the sequencer's two Kafka
// decoders: as a command record it is decided against an aggregate that
// already holds a group, as an event record it is replayed into one. Beyond
// "no panic" it checks the sequencing invariants on whatever decodes: an
// accepted command takes exactly the next seq, and deciding it again is a
// duplicate with the same seq and no new event.
func FuzzSequencerRecords(f *testing.F) {
	group := chatv1.ConversationKind_CONVERSATION_KIND_GROUP
	seedCmds := []*logv1.Command{
		createCmd("g2", "alice", "c1", group, "alice", "bob"),
		postCmd("g1", "alice", "p1", "hello"),
		postCmd("g1", "mallory", "p2", "let me in"),
		addCmd("g1", "alice", "a1", "carol"),
		{CommandId: "x", ConversationId: "g1", UserId: "alice", ClientMsgId: "e"},
		markCmd("g1", "bob", "phone", 1, 1),
		markCmd("g1", "bob", "phone", 0, 7),
		cmdOf("g1", "alice", "r1", &logv1.RemoveMember{UserId: "bob"}),
		cmdOf("g1", "bob", "l1", &logv1.Leave{}),
		cmdOf("g1", "alice", "s1", &logv1.SetRole{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN}),
		cmdOf("g1", "alice", "t1", &logv1.TransferOwnership{UserId: "bob"}),
		cmdOf("g1", "alice", "m1", &logv1.MuteMember{UserId: "bob", Muted: true}),
		cmdOf("g1", "alice", "n1", &logv1.Rename{Title: "renamed"}),
		cmdOf("g1", "alice", "i1", &logv1.CreateInvite{Code: code1}),
		cmdOf("g1", "alice", "v1", &logv1.RevokeInvite{Code: code1}),
		cmdOf("g1", "carol", "j1", &logv1.JoinByInvite{Code: code1}),
		cmdOf("g1", "carol", "f1", &logv1.Follow{}),
		cmdOf(DirectID("alice", "bob"), "alice", "", &logv1.Block{UserId: "bob", Blocked: true}),
		channelCmd("018f0000-0000-7000-8000-000000000001", "alice", "c2", true, "alice"),
		richCmd("g1", "bob", "p3", &logv1.PostMessage{Text: "see https://a.b/c", ReplyToSeq: 2, MentionIds: []string{"alice"},
			Attachments: []*chatv1.Attachment{image("https://cdn.example/a.png")}}),
		richCmd("g1", "bob", "p4", &logv1.PostMessage{Contact: &chatv1.ContactCard{DisplayName: "Al", UserId: "alice"}}),
		editCmd("g1", "alice", "e1", 2, "edited http://x.y"),
		editCmd("g1", "bob", "e2", 2, "not mine"),
		deleteCmd("g1", "alice", "d1", 2),
		deleteCmd("g1", "bob", "d2", 2),
		reactCmd("g1", "bob", "r1", 2, "👍", false),
		reactCmd("g1", "alice", "r2", 2, "👍", true),
		contactCmd("alice", &logv1.ContactRequest{UserId: "bob"}),
		contactCmd("bob", &logv1.ContactResponse{UserId: "alice", Accept: true}),
		contactCmd("alice", &logv1.ContactCancel{UserId: "bob"}),
		answerCmd("g1", "carol", true),
		announceCmd("b-1", "region=eu", "maintenance"),
		{CommandId: "n", UserId: "system", ClientMsgId: "n-1", Body: &logv1.Command_Notice{Notice: &logv1.Notice{OwnerId: "dave", Text: "hi"}}},
		{CommandId: "s", UserId: "bob", Body: &logv1.Command_SetSettings{SetSettings: &logv1.SetSettings{ContactsOnly: proto.Bool(true)}}},
		{CommandId: "i", ConversationId: membership.InboxID("bob"), UserId: "alice", ClientMsgId: "parley:x", Body: &logv1.Command_InboxDeliver{InboxDeliver: &logv1.InboxDeliver{
			OwnerId: "bob", Item: &logv1.InboxDeliver_ContactUpdated{ContactUpdated: &chatv1.ContactUpdated{UserId: "alice", OwnerId: "bob"}}}}},
	}
	for _, c := range seedCmds[len(seedCmds)-8:] {
		// As ingest would have them: ids derived.
		Prepare(c)
	}
	for _, c := range seedCmds {
		b, _ := proto.Marshal(c)
		f.Add(b, true)
	}
	rec, _ := decide(map[string]*conversation{}, createCmd("g3", "alice", "c3", group, "alice"), 10, time.Unix(0, 0))
	b, _ := proto.Marshal(rec)
	f.Add(b, false)
	block, _ := decide(map[string]*conversation{}, cmdOf("d", "alice", "", &logv1.Block{UserId: "bob", Blocked: true}), 10, time.Unix(0, 0))
	b, _ = proto.Marshal(block)
	f.Add(b, false)
	f.Add([]byte{0xff, 0x00}, true)

	f.Fuzz(func(t *testing.T, data []byte, asCommand bool) {
		convs := map[string]*conversation{}
		if _, out := decide(convs, createCmd("g1", "alice", "c0", group, "alice", "bob"), 10, time.Unix(0, 0)); out.GetSeq() != 1 {
			t.Fatalf("setup: %v", out)
		}
		// A message and a reaction, for the seeds that edit, delete and
		// react to seq 2.
		decide(convs, postCmd("g1", "alice", "p0", "first"), 10, time.Unix(0, 0))
		if _, out := decide(convs, reactCmd("g1", "alice", "r0", 2, "👍", false), 10, time.Unix(0, 0)); out.GetSeq() != 3 {
			t.Fatalf("setup: %v", out)
		}
		if !asCommand {
			rec := &logv1.EventRecord{}
			if proto.Unmarshal(data, rec) != nil {
				return
			}
			before := map[string]uint64{}
			for id, c := range convs {
				before[id] = c.lastSeq
			}
			pos := fmt.Sprint(convs["g1"].delivered, convs["g1"].read)
			replay(convs, rec)
			for id, c := range convs {
				if c.lastSeq < before[id] {
					t.Fatalf("replay moved %s back from seq %d to %d", id, before[id], c.lastSeq)
				}
			}
			if rec.GetEvent() == nil && rec.GetReceipt() == nil && fmt.Sprint(convs["g1"].delivered, convs["g1"].read) != pos {
				t.Fatalf("an empty record moved positions")
			}
			return
		}
		cmd := &logv1.Command{}
		if proto.Unmarshal(data, cmd) != nil {
			return
		}
		var last uint64
		if c := convs[cmd.GetConversationId()]; c != nil {
			last = c.lastSeq
		}
		ev, out := decide(convs, cmd, 10, time.Unix(0, 0))
		if out == nil {
			t.Fatal("no outcome")
		}
		if _, ok := cmd.GetBody().(*logv1.Command_Mark); ok {
			checkMark(t, convs, cmd, last, ev, out)
			return
		}
		if _, ok := cmd.GetBody().(*logv1.Command_Block); ok {
			checkBlock(t, convs, cmd, last, ev, out)
			return
		}
		if f := familyOf(cmd); f != nil && (f.decideMore != nil || f.handOn != nil) {
			checkDecision(t, convs, cmd)
			return
		}
		if ev == nil {
			if out.GetErrorCode() == chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED && !out.GetDuplicate() {
				t.Fatalf("no event, no error and no duplicate: %v", out)
			}
			return
		}
		if ev.GetEvent().GetSeq() != last+1 || out.GetSeq() != last+1 {
			t.Fatalf("accepted at seq %d (outcome %d) after %d", ev.GetEvent().GetSeq(), out.GetSeq(), last)
		}
		again, dup := decide(convs, cmd, 10, time.Unix(0, 0))
		if again != nil || !dup.GetDuplicate() || dup.GetSeq() != out.GetSeq() {
			t.Fatalf("second decision of the same command: event %v outcome %v, want a duplicate of seq %d", again, dup, out.GetSeq())
		}
	})
}

// checkDecision is the oracle for a command whose decision may log
// several records and hand commands on (contacts, inboxes, invitations,
// audiences, settings, notices): every event it logs, and every event
// the commands it hands on log in turn, takes its conversation's next
// seq; deciding the command again logs no event; and nothing panics.
func checkDecision(t *testing.T, convs map[string]*conversation, cmd *logv1.Command) {
	t.Helper()
	queue := []*logv1.Command{cmd}
	for n := 0; len(queue) > 0 && n < 50; n++ {
		next := queue[0]
		queue = queue[1:]
		last := map[string]uint64{}
		for id, c := range convs {
			last[id] = c.lastSeq
		}
		d := decideCommand(convs, next, 10, time.Unix(0, 0))
		if d.out == nil {
			t.Fatal("no outcome")
		}
		for _, r := range d.recs {
			ev := r.GetEvent()
			if ev == nil {
				continue
			}
			if ev.GetSeq() != last[ev.GetConversationId()]+1 {
				t.Fatalf("%T logged seq %d of %s after %d", next.GetBody(), ev.GetSeq(), ev.GetConversationId(), last[ev.GetConversationId()])
			}
			last[ev.GetConversationId()] = ev.GetSeq()
		}
		if len(d.recs) > 0 && d.out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			t.Fatalf("refused (%v) yet logged %v", d.out, d.recs)
		}
		if len(d.recs) > 0 {
			again := decideCommand(convs, next, 10, time.Unix(0, 0))
			for _, r := range again.recs {
				if r.GetEvent() != nil {
					t.Fatalf("%T decided twice logged %v", next.GetBody(), r)
				}
			}
		}
		queue = append(queue, d.derived...)
	}
}

// checkMark is the oracle for a decided mark: it never takes a seq, logs a
// receipt only when a position moved, never names a seq beyond the last,
// and deciding it again logs nothing and answers the same positions.
func checkMark(t *testing.T, convs map[string]*conversation, cmd *logv1.Command, last uint64, rec *logv1.EventRecord, out *logv1.Outcome) {
	t.Helper()
	if c := convs[cmd.GetConversationId()]; c != nil && c.lastSeq != last {
		t.Fatalf("a mark moved the seq from %d to %d", last, c.lastSeq)
	}
	if out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		if rec != nil || out.GetReceipt() != nil {
			t.Fatalf("rejected mark logged %v / answered %v", rec, out.GetReceipt())
		}
		return
	}
	r := out.GetReceipt()
	if out.GetSeq() != last {
		t.Fatalf("mark answered head %d, want %d", out.GetSeq(), last)
	}
	if r.GetDeliveredSeq() > last || r.GetReadSeq() > last || r.GetReadSeq() > 0 && r.GetDeliveredSeq() == 0 {
		t.Fatalf("positions %v beyond last seq %d", r, last)
	}
	if rec != nil && (rec.GetEvent() != nil || rec.GetReceipt().GetDeliveredSeq() != r.GetDeliveredSeq() || rec.GetReceipt().GetReadSeq() != r.GetReadSeq()) {
		t.Fatalf("logged %v for answer %v", rec, r)
	}
	again, out2 := decide(convs, cmd, 10, time.Unix(0, 0))
	if again != nil || !proto.Equal(out2.GetReceipt(), r) {
		t.Fatalf("second decision of the same mark logged %v, answered %v (first %v)", again, out2.GetReceipt(), r)
	}
}

// checkBlock is the oracle for a decided block: it never takes a seq, its
// record names no recipients and holds no event (nobody is told), and
// deciding it again logs nothing.
func checkBlock(t *testing.T, convs map[string]*conversation, cmd *logv1.Command, last uint64, rec *logv1.EventRecord, out *logv1.Outcome) {
	t.Helper()
	if c := convs[cmd.GetConversationId()]; c != nil && c.lastSeq != last || out.GetSeq() != 0 {
		t.Fatalf("a block took a seq: %v", out)
	}
	if rec != nil && (rec.GetEvent() != nil || rec.GetReceipt() != nil || len(rec.GetRecipientIds()) > 0 || rec.GetBlock() == nil) {
		t.Fatalf("a block logged %v", rec)
	}
	if again, _ := decide(convs, cmd, 10, time.Unix(0, 0)); again != nil {
		t.Fatalf("the same block decided twice logged %v", again)
	}
}

// FuzzOutcomeRecords feeds arbitrary bytes, twice, to the outcome reader
// of Submit: it never blocks or panics, and a waiter is answered at most
// once, only by an outcome of its own command.
func FuzzOutcomeRecords(f *testing.F) {
	for _, o := range []*logv1.Outcome{
		{CommandId: "a", ConversationId: "g", Seq: 3},
		{CommandId: "b", ErrorCode: chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER, ErrorMessage: "no"},
		{CommandId: ""},
	} {
		b, _ := proto.Marshal(o)
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Service{waiters: map[string]chan *logv1.Outcome{}}
		for _, id := range []string{"a", "b", ""} {
			s.waiters[id] = make(chan *logv1.Outcome, 1)
		}
		chans := map[string]chan *logv1.Outcome{}
		for id, ch := range s.waiters {
			chans[id] = ch
		}
		err := s.resolve(data)
		_ = s.resolve(data) // a second copy must not block
		for id, ch := range chans {
			select {
			case o := <-ch:
				if err != nil || o.GetCommandId() != id {
					t.Fatalf("waiter %q answered with %v (decode error %v)", id, o, err)
				}
				if _, still := s.waiters[id]; still {
					t.Fatalf("waiter %q answered but still waiting", id)
				}
			default:
			}
		}
	})
}

package ingest

import (
	"fmt"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func createCmd(conv, user, id string, kind chatv1.ConversationKind, members ...string) *logv1.Command {
	return &logv1.Command{CommandId: "cmd-" + id, ConversationId: conv, UserId: user, ClientMsgId: id,
		Body: &logv1.Command_CreateConversation{CreateConversation: &logv1.CreateConversation{Kind: kind, Title: "t", MemberIds: members}}}
}

func postCmd(conv, user, id, text string) *logv1.Command {
	return &logv1.Command{CommandId: "cmd-" + id, ConversationId: conv, UserId: user, ClientMsgId: id,
		Body: &logv1.Command_PostMessage{PostMessage: &logv1.PostMessage{Text: text}}}
}

func addCmd(conv, user, id, who string) *logv1.Command {
	return &logv1.Command{CommandId: "cmd-" + id, ConversationId: conv, UserId: user, ClientMsgId: id,
		Body: &logv1.Command_AddMember{AddMember: &logv1.AddMember{UserId: who}}}
}

func markCmd(conv, user, device string, delivered, read uint64) *logv1.Command {
	return &logv1.Command{CommandId: "mark", ConversationId: conv, UserId: user, DeviceId: device,
		Body: &logv1.Command_Mark{Mark: &logv1.Mark{DeliveredSeq: delivered, ReadSeq: read}}}
}

func TestDecide(t *testing.T) {
	group := chatv1.ConversationKind_CONVERSATION_KIND_GROUP
	direct := chatv1.ConversationKind_CONVERSATION_KIND_DIRECT
	type step struct {
		cmd  *logv1.Command
		seq  uint64
		dup  bool
		code chatv1.ErrorCode
	}
	ok := chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	tests := []struct {
		name  string
		steps []step
	}{
		{"contiguous seq from 1", []step{
			{createCmd("g", "alice", "c1", group, "alice", "bob"), 1, false, ok},
			{postCmd("g", "alice", "m1", "a"), 2, false, ok},
			{postCmd("g", "bob", "m1", "b"), 3, false, ok}, // same id, other user: new message
			{postCmd("g", "alice", "m2", "c"), 4, false, ok},
		}},
		{"duplicate returns the original seq and emits nothing", []step{
			{createCmd("g", "alice", "c1", group, "alice"), 1, false, ok},
			{postCmd("g", "alice", "m1", "a"), 2, false, ok},
			{postCmd("g", "alice", "m2", "b"), 3, false, ok},
			{postCmd("g", "alice", "m1", "a"), 2, true, ok},
			{createCmd("g", "alice", "c1", group, "alice"), 1, true, ok},
			{postCmd("g", "alice", "m3", "c"), 4, false, ok},
		}},
		{"authorisation", []step{
			{createCmd("g", "alice", "c1", group, "alice"), 1, false, ok},
			{postCmd("g", "mallory", "m1", "x"), 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
			{addCmd("g", "mallory", "a1", "mallory"), 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
			{postCmd("missing", "alice", "m2", "x"), 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
			{addCmd("g", "alice", "a2", "bob"), 2, false, ok},
			{addCmd("g", "alice", "a3", "bob"), 0, false, chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS},
			{postCmd("g", "bob", "m3", "now a member"), 3, false, ok},
			// A rejected id is not remembered: a later valid retry applies.
			{postCmd("g", "mallory", "m1", "x"), 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		}},
		{"direct conversations", []step{
			{createCmd("d", "alice", "c1", direct, "alice", "bob"), 1, false, ok},
			{createCmd("d", "bob", "c9", direct, "bob", "alice"), 1, true, ok},
			{addCmd("d", "alice", "a1", "carol"), 0, false, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
			{createCmd("d", "mallory", "c2", direct, "mallory", "alice"), 0, false, chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS},
		}},
		{"size limit", []step{
			{createCmd("g", "alice", "c1", group, "alice", "bob", "carol"), 1, false, ok},
			{addCmd("g", "alice", "a1", "dave"), 0, false, chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL},
			{createCmd("h", "alice", "c2", group, "alice", "bob", "carol", "dave"), 0, false, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			convs := map[string]*conversation{}
			for i, s := range tc.steps {
				rec, out := decide(convs, s.cmd, 3, time.Unix(0, 0))
				if out.GetErrorCode() != s.code || out.GetSeq() != s.seq || out.GetDuplicate() != s.dup {
					t.Fatalf("step %d: outcome %v, want seq %d dup %v code %v", i, out, s.seq, s.dup, s.code)
				}
				if out.GetCommandId() != s.cmd.GetCommandId() || out.GetClientMsgId() != s.cmd.GetClientMsgId() {
					t.Fatalf("step %d: outcome does not answer its command: %v", i, out)
				}
				wantEvent := s.code == ok && !s.dup
				if (rec != nil) != wantEvent {
					t.Fatalf("step %d: event %v, want one: %v", i, rec, wantEvent)
				}
				if rec != nil && (rec.GetEvent().GetSeq() != s.seq || rec.GetCommandId() != s.cmd.GetCommandId()) {
					t.Fatalf("step %d: event %v", i, rec)
				}
			}
		})
	}
}

// TestReplayRebuildsTheAggregate checks the restart path: replaying the
// events a sequencer emitted yields an aggregate that decides the same way.
func TestReplayRebuildsTheAggregate(t *testing.T) {
	group := chatv1.ConversationKind_CONVERSATION_KIND_GROUP
	live := map[string]*conversation{}
	var log []*logv1.EventRecord
	for _, cmd := range []*logv1.Command{
		createCmd("g", "alice", "c1", group, "alice", "bob"),
		postCmd("g", "bob", "m1", "hi"),
		markCmd("g", "alice", "phone", 2, 0),
		addCmd("g", "alice", "a1", "carol"),
		postCmd("g", "carol", "m1", "hello"),
		markCmd("g", "bob", "laptop", 0, 4),
	} {
		if rec, _ := decide(live, cmd, 10, time.Now()); rec != nil {
			log = append(log, rec)
		}
	}
	rebuilt := map[string]*conversation{}
	for _, rec := range log {
		replay(rebuilt, rec)
		replay(rebuilt, rec) // a replay twice changes nothing
	}
	a, b := live["g"], rebuilt["g"]
	if fmt.Sprint(a.kind(), a.members(), a.lastSeq, a.applied, a.delivered, a.read) != fmt.Sprint(b.kind(), b.members(), b.lastSeq, b.applied, b.delivered, b.read) {
		t.Fatalf("rebuilt aggregate differs:\n live    %+v\n rebuilt %+v", a, b)
	}
	_, out := decide(rebuilt, postCmd("g", "carol", "m1", "hello"), 10, time.Now())
	if !out.GetDuplicate() || out.GetSeq() != 4 {
		t.Fatalf("retry after rebuild = %v", out)
	}
}

func TestPrepare(t *testing.T) {
	long := string(make([]byte, MaxTextBytes+1))
	tests := []struct {
		name string
		cmd  *logv1.Command
		ok   bool
	}{
		{"post", postCmd("g", "alice", "m", "hi"), true},
		{"empty text", postCmd("g", "alice", "m", "  "), false},
		{"text too long", postCmd("g", "alice", "m", long), false},
		{"invalid utf-8", postCmd("g", "alice", "m", "\xff"), false},
		{"no client id", postCmd("g", "alice", "", "hi"), false},
		{"bad user", postCmd("g", "al ice", "m", "hi"), false},
		{"no conversation", postCmd("", "alice", "m", "hi"), false},
		{"direct", createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "bob"), true},
		{"direct with self only", createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "alice"), false},
		{"direct with two", createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "bob", "carol"), false},
		{"group", createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "bob"), true},
		{"group with client id", createCmd("01a20618-61df-73ef-ae9f-6f89cc11f467", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_GROUP), true},
		{"group with bad id", createCmd("not-a-uuid", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_GROUP), false},
		{"unknown kind", createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_UNSPECIFIED, "bob"), false},
		{"bad member", createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "b b"), false},
		{"no body", &logv1.Command{ConversationId: "g", UserId: "alice", ClientMsgId: "m"}, false},
		{"mark", markCmd("g", "alice", "phone", 3, 0), true},
		{"mark without device", markCmd("g", "alice", "", 3, 0), false},
		{"device with a NUL", markCmd("g", "alice", "ph\x00ne", 3, 0), false},
		{"mark of nothing asks for the head", markCmd("g", "alice", "phone", 0, 0), true},
		{"mark without conversation", markCmd("", "alice", "phone", 0, 1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := Prepare(tc.cmd)
			if ok := code == chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED; ok != tc.ok {
				t.Fatalf("Prepare = %v %q, want ok=%v", code, msg, tc.ok)
			}
		})
	}
	t.Run("direct ids are symmetric and members canonical", func(t *testing.T) {
		a := createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "bob")
		b := createCmd("", "bob", "c", chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "alice", "bob")
		Prepare(a)
		Prepare(b)
		if a.ConversationId != b.ConversationId || a.ConversationId != DirectID("bob", "alice") {
			t.Fatalf("direct ids differ: %s %s", a.ConversationId, b.ConversationId)
		}
		if got := a.GetCreateConversation().GetMemberIds(); fmt.Sprint(got) != "[alice bob]" {
			t.Fatalf("members = %v, creator first", got)
		}
	})
}

// TestDecideMark covers positions: forward only, reading implies
// delivered, posting moves the poster's own, nothing logged when nothing
// moves, and the authorisation and bounds errors.
func TestDecideMark(t *testing.T) {
	convs := map[string]*conversation{}
	now := time.Unix(100, 0)
	for _, cmd := range []*logv1.Command{
		createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"),
		postCmd("g", "bob", "m1", "one"),
		postCmd("g", "bob", "m2", "two"),
		postCmd("g", "alice", "m3", "three"),
	} {
		if _, out := decide(convs, cmd, 10, now); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			t.Fatalf("setup %v: %v", cmd, out)
		}
	}
	type want struct {
		logged          bool
		code            chatv1.ErrorCode
		delivered, read uint64
	}
	steps := []struct {
		name string
		cmd  *logv1.Command
		want want
	}{
		{"delivered moves", markCmd("g", "bob", "phone", 2, 0), want{true, 0, 2, 3}},
		{"lower delivered changes nothing", markCmd("g", "bob", "phone", 1, 0), want{false, 0, 2, 3}},
		{"same again changes nothing", markCmd("g", "bob", "phone", 2, 0), want{false, 0, 2, 3}},
		{"read implies delivered", markCmd("g", "alice", "tablet", 0, 2), want{true, 0, 2, 4}},
		{"read below the poster's own post", markCmd("g", "alice", "laptop", 0, 4), want{true, 0, 4, 4}},
		{"another device of bob reads", markCmd("g", "bob", "laptop", 0, 4), want{true, 0, 4, 4}},
		{"beyond the last seq", markCmd("g", "bob", "phone", 5, 0), want{false, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, 0, 0}},
		{"not a member", markCmd("g", "mallory", "phone", 1, 0), want{false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, 0, 0}},
		{"no conversation", markCmd("nope", "bob", "phone", 1, 0), want{false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, 0, 0}},
	}
	for _, st := range steps {
		before := convs["g"].lastSeq
		rec, out := decide(convs, st.cmd, 10, now)
		if convs["g"].lastSeq != before {
			t.Fatalf("%s: a mark moved the seq from %d to %d", st.name, before, convs["g"].lastSeq)
		}
		if got := out.GetErrorCode(); got != st.want.code {
			t.Fatalf("%s: code %v (%s), want %v", st.name, got, out.GetErrorMessage(), st.want.code)
		}
		if (rec != nil) != st.want.logged {
			t.Fatalf("%s: logged %v, want %v", st.name, rec, st.want.logged)
		}
		if st.want.code != 0 {
			continue
		}
		if out.GetSeq() != 4 {
			t.Fatalf("%s: outcome seq %d, want the head 4", st.name, out.GetSeq())
		}
		if r := out.GetReceipt(); r.GetDeliveredSeq() != st.want.delivered || r.GetReadSeq() != st.want.read {
			t.Fatalf("%s: receipt %v, want delivered %d read %d", st.name, r, st.want.delivered, st.want.read)
		}
		if rec != nil {
			if rec.GetEvent() != nil || rec.GetReceipt().GetDeliveredSeq() != st.want.delivered || len(rec.GetRecipientIds()) != 2 {
				t.Fatalf("%s: record %v", st.name, rec)
			}
		}
	}
	// Bob read up to 4 on his laptop: the read position is his, on every
	// device; delivered stays per device.
	if r := convs["g"].receipt("bob", "phone"); r.GetReadSeq() != 4 || r.GetDeliveredSeq() != 2 {
		t.Fatalf("bob's phone: %v", r)
	}
}

func BenchmarkDecidePost(b *testing.B) {
	convs := map[string]*conversation{}
	decide(convs, createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob", "carol"), 100, time.Now())
	cmds := make([]*logv1.Command, b.N)
	for i := range cmds {
		cmds[i] = postCmd("g", "alice", fmt.Sprintf("m%d", i), "hello world")
	}
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		decide(convs, cmds[i], 100, now)
	}
}

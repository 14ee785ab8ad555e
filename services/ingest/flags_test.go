package ingest

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func flagsCmd(conv, user string, muted, pinned *bool) *logv1.Command {
	return &logv1.Command{CommandId: "flags-" + user, ConversationId: conv, UserId: user, DeviceId: user + "-phone",
		Body: &logv1.Command_SetFlags{SetFlags: &logv1.SetFlags{Muted: muted, Pinned: pinned}}}
}

func TestDecideFlags(t *testing.T) {
	convs := map[string]*conversation{}
	now := time.Unix(1_700_000_000, 0)
	var log []*logv1.EventRecord
	run := func(cmd *logv1.Command) (*logv1.EventRecord, *logv1.Outcome) {
		t.Helper()
		rec, out := decide(convs, cmd, 10, now)
		if rec != nil {
			log = append(log, rec)
		}
		return rec, out
	}
	run(createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"))
	run(postCmd("g", "bob", "m1", "hi"))

	type want struct {
		logged         bool
		muted, pinned  bool
		version        uint64
		code           chatv1.ErrorCode
		recipientsUser string
	}
	steps := []struct {
		name string
		cmd  *logv1.Command
		want want
	}{
		{"mute", flagsCmd("g", "alice", proto.Bool(true), nil), want{logged: true, muted: true, version: 1}},
		{"mute again changes nothing", flagsCmd("g", "alice", proto.Bool(true), nil), want{muted: true, version: 1}},
		{"pin keeps muted", flagsCmd("g", "alice", nil, proto.Bool(true)), want{logged: true, muted: true, pinned: true, version: 2}},
		{"both at once", flagsCmd("g", "alice", proto.Bool(false), proto.Bool(false)), want{logged: true, version: 3}},
		{"another member's flags are their own", flagsCmd("g", "bob", nil, proto.Bool(true)), want{logged: true, pinned: true, version: 1}},
		{"non-member", flagsCmd("g", "mallory", proto.Bool(true), nil), want{code: chatv1.ErrorCode_ERROR_CODE_NOT_FOUND}},
		{"no such conversation", flagsCmd("nope", "alice", proto.Bool(true), nil), want{code: chatv1.ErrorCode_ERROR_CODE_NOT_FOUND}},
		{"nothing to set", flagsCmd("g", "alice", nil, nil), want{code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT}},
	}
	for _, s := range steps {
		before := len(log)
		rec, out := run(s.cmd)
		if out.GetErrorCode() != s.want.code {
			t.Fatalf("%s: code %v (%s), want %v", s.name, out.GetErrorCode(), out.GetErrorMessage(), s.want.code)
		}
		if (rec != nil) != s.want.logged || len(log)-before != map[bool]int{true: 1}[s.want.logged] {
			t.Fatalf("%s: logged %v, want %v", s.name, rec, s.want.logged)
		}
		if s.want.code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			continue
		}
		f := out.GetFlags()
		if f.GetMuted() != s.want.muted || f.GetPinned() != s.want.pinned || f.GetVersion() != s.want.version ||
			f.GetUserId() != s.cmd.GetUserId() || f.GetConversationId() != "g" {
			t.Fatalf("%s: outcome flags %v, want muted=%v pinned=%v v%d", s.name, f, s.want.muted, s.want.pinned, s.want.version)
		}
		if out.GetSeq() != 0 {
			t.Fatalf("%s: a flag change took seq %d", s.name, out.GetSeq())
		}
		if rec != nil {
			// Only the user's own devices are told: they are the one
			// recipient, and the record is no event (no seq, no history).
			if rec.GetEvent() != nil || len(rec.GetRecipientIds()) != 1 || rec.GetRecipientIds()[0] != s.cmd.GetUserId() ||
				!proto.Equal(rec.GetFlags(), f) || rec.GetFlags().GetTime() == nil {
				t.Fatalf("%s: record %v", s.name, rec)
			}
		}
	}
	if c := convs["g"]; c.lastSeq != 2 {
		t.Fatalf("flag changes moved the conversation's seq to %d", c.lastSeq)
	}

	// Leaving keeps the flags: coming back finds them.
	run(cmdOf("g", "bob", "l1", &logv1.Leave{}))
	run(addCmd("g", "alice", "a1", "bob"))
	if _, out := run(flagsCmd("g", "bob", nil, proto.Bool(true))); out.GetFlags().GetVersion() != 1 || !out.GetFlags().GetPinned() {
		t.Fatalf("bob's flags after leaving and coming back: %v", out.GetFlags())
	}

	// The log rebuilds the same flags, replayed twice or not.
	rebuilt := map[string]*conversation{}
	for _, rec := range log {
		replay(rebuilt, rec)
		replay(rebuilt, rec)
	}
	for _, u := range []string{"alice", "bob"} {
		if got, want := rebuilt["g"].flagsOf(u), convs["g"].flagsOf(u); !proto.Equal(got, want) {
			t.Fatalf("replayed flags of %s: %v, want %v", u, got, want)
		}
	}
	// An older record replayed after a newer one does not win.
	replay(rebuilt, log[2])
	if got := rebuilt["g"].flagsOf("alice"); got.GetVersion() != 3 {
		t.Fatalf("an older flags record won on replay: %v", got)
	}
}

func TestPrepareFlags(t *testing.T) {
	cmd := flagsCmd("g", "alice", proto.Bool(true), nil)
	cmd.ClientMsgId = "ignored"
	if code, msg := Prepare(cmd); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || cmd.GetClientMsgId() != "" {
		t.Fatalf("prepare: %v %s, client msg id %q", code, msg, cmd.GetClientMsgId())
	}
	for name, cmd := range map[string]*logv1.Command{
		"nothing set":     flagsCmd("g", "alice", nil, nil),
		"no conversation": flagsCmd("", "alice", proto.Bool(true), nil),
	} {
		if code, _ := Prepare(cmd); code != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Fatalf("%s: %v, want INVALID_ARGUMENT", name, code)
		}
	}
}

// TestMessagesNameWhoMuted: a message's record names the recipients who
// muted the conversation (fan-out sends them no offline notification),
// and no other record does.
func TestMessagesNameWhoMuted(t *testing.T) {
	convs := map[string]*conversation{}
	now := time.Unix(1_700_000_000, 0)
	decide(convs, createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob", "carol"), 10, now)
	if rec, _ := decide(convs, postCmd("g", "alice", "m1", "hi"), 10, now); len(rec.GetMutedIds()) != 0 {
		t.Fatalf("before any mute: muted %v", rec.GetMutedIds())
	}
	decide(convs, flagsCmd("g", "bob", proto.Bool(true), nil), 10, now)
	decide(convs, flagsCmd("g", "carol", nil, proto.Bool(true)), 10, now) // pinned, not muted
	rec, _ := decide(convs, postCmd("g", "alice", "m2", "again"), 10, now)
	if got := rec.GetMutedIds(); len(got) != 1 || got[0] != "bob" {
		t.Fatalf("after bob muted: muted %v, want [bob]", got)
	}
	if rec, _ := decide(convs, flagsCmd("g", "bob", proto.Bool(false), nil), 10, now); len(rec.GetMutedIds()) != 0 {
		t.Fatalf("a flags record names muted %v", rec.GetMutedIds())
	}
	if rec, _ := decide(convs, postCmd("g", "carol", "m3", "unmuted"), 10, now); len(rec.GetMutedIds()) != 0 {
		t.Fatalf("after bob unmuted: muted %v", rec.GetMutedIds())
	}
}

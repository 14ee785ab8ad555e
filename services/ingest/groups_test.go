package ingest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// cmdOf builds a command of user in conv with client message id id.
func cmdOf(conv, user, id string, body any) *logv1.Command {
	c := &logv1.Command{CommandId: "cmd-" + user + "-" + id, ConversationId: conv, UserId: user, ClientMsgId: id}
	switch b := body.(type) {
	case *logv1.RemoveMember:
		c.Body = &logv1.Command_RemoveMember{RemoveMember: b}
	case *logv1.Leave:
		c.Body = &logv1.Command_Leave{Leave: b}
	case *logv1.SetRole:
		c.Body = &logv1.Command_SetRole{SetRole: b}
	case *logv1.TransferOwnership:
		c.Body = &logv1.Command_TransferOwnership{TransferOwnership: b}
	case *logv1.MuteMember:
		c.Body = &logv1.Command_MuteMember{MuteMember: b}
	case *logv1.Rename:
		c.Body = &logv1.Command_Rename{Rename: b}
	case *logv1.CreateInvite:
		c.Body = &logv1.Command_CreateInvite{CreateInvite: b}
	case *logv1.RevokeInvite:
		c.Body = &logv1.Command_RevokeInvite{RevokeInvite: b}
	case *logv1.JoinByInvite:
		c.Body = &logv1.Command_JoinByInvite{JoinByInvite: b}
	case *logv1.Follow:
		c.Body = &logv1.Command_Follow{Follow: b}
	case *logv1.Block:
		c.Body = &logv1.Command_Block{Block: b}
	default:
		panic(fmt.Sprintf("cmdOf: %T", body))
	}
	return c
}

func channelCmd(conv, user, id string, public bool, members ...string) *logv1.Command {
	c := createCmd(conv, user, id, chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL, members...)
	c.GetCreateConversation().Public = public
	return c
}

const code1 = "invite-code-0001"

var (
	okCode     = chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	notMem     = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND // a non-member is told what a missing conversation tells
	denied     = chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED
	invalidArg = chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	missing    = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND
	exists     = chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS
)

type gstep struct {
	cmd  *logv1.Command
	code chatv1.ErrorCode
	// to, when set, are the recipients the event must name (sorted).
	to []string
}

func runSteps(t *testing.T, convs map[string]*conversation, maxMembers int, steps []gstep) []*logv1.EventRecord {
	t.Helper()
	var log []*logv1.EventRecord
	for i, s := range steps {
		rec, out := decide(convs, s.cmd, maxMembers, time.Unix(0, 0))
		if out.GetErrorCode() != s.code {
			t.Fatalf("step %d (%T by %s): outcome %v, want %v", i, s.cmd.GetBody(), s.cmd.GetUserId(), out, s.code)
		}
		if (rec != nil) != (s.code == okCode && !out.GetDuplicate()) {
			if _, block := s.cmd.GetBody().(*logv1.Command_Block); !block {
				t.Fatalf("step %d: record %v for outcome %v", i, rec, out)
			}
		}
		if s.to != nil {
			got := slices.Clone(rec.GetRecipientIds())
			slices.Sort(got)
			if fmt.Sprint(got) != fmt.Sprint(s.to) {
				t.Fatalf("step %d: recipients %v, want %v", i, got, s.to)
			}
		}
		if rec != nil {
			log = append(log, rec)
		}
	}
	return log
}

func TestDecideGroups(t *testing.T) {
	group := chatv1.ConversationKind_CONVERSATION_KIND_GROUP
	admin, member := chatv1.MemberRole_MEMBER_ROLE_ADMIN, chatv1.MemberRole_MEMBER_ROLE_MEMBER
	tests := []struct {
		name  string
		steps []gstep
	}{
		{"remove: owner and admins only, never the owner, the removed get their removal", []gstep{
			{createCmd("g", "alice", "c1", group, "alice", "bob", "carol", "dave"), okCode, nil},
			{cmdOf("g", "bob", "r1", &logv1.RemoveMember{UserId: "carol"}), denied, nil},
			{cmdOf("g", "mallory", "r1", &logv1.RemoveMember{UserId: "carol"}), notMem, nil},
			{cmdOf("missing", "alice", "r1", &logv1.RemoveMember{UserId: "carol"}), missing, nil},
			{cmdOf("g", "alice", "r2", &logv1.RemoveMember{UserId: "erin"}), missing, nil},
			{cmdOf("g", "alice", "r3", &logv1.RemoveMember{UserId: "alice"}), invalidArg, nil},
			{cmdOf("g", "alice", "s1", &logv1.SetRole{UserId: "bob", Role: admin}), okCode, nil},
			{cmdOf("g", "bob", "r4", &logv1.RemoveMember{UserId: "alice"}), denied, nil},
			{cmdOf("g", "alice", "s2", &logv1.SetRole{UserId: "carol", Role: admin}), okCode, nil},
			{cmdOf("g", "bob", "r5", &logv1.RemoveMember{UserId: "carol"}), denied, nil}, // admin vs admin
			{cmdOf("g", "bob", "r6", &logv1.RemoveMember{UserId: "dave"}), okCode, []string{"alice", "bob", "carol", "dave"}},
			{postCmd("g", "dave", "p1", "still here?"), notMem, nil},
			{cmdOf("g", "bob", "r7", &logv1.RemoveMember{UserId: "dave"}), missing, nil},
			{cmdOf("g", "alice", "r8", &logv1.RemoveMember{UserId: "carol"}), okCode, []string{"alice", "bob", "carol"}},
			{postCmd("g", "carol", "p2", "x"), notMem, nil},
		}},
		{"leave: members and admins, not the owner; then nothing more", []gstep{
			{createCmd("g", "alice", "c1", group, "alice", "bob"), okCode, nil},
			{cmdOf("g", "alice", "l1", &logv1.Leave{}), denied, nil},
			{cmdOf("g", "mallory", "l1", &logv1.Leave{}), notMem, nil},
			{cmdOf("g", "bob", "l1", &logv1.Leave{}), okCode, []string{"alice", "bob"}},
			{postCmd("g", "alice", "p1", "alone"), okCode, []string{"alice"}},
			{cmdOf("g", "bob", "l2", &logv1.Leave{}), notMem, nil},
		}},
		{"roles: owner only, ADMIN or MEMBER, never the owner's", []gstep{
			{createCmd("g", "alice", "c1", group, "alice", "bob", "carol"), okCode, nil},
			{cmdOf("g", "bob", "s1", &logv1.SetRole{UserId: "carol", Role: admin}), denied, nil},
			{cmdOf("g", "mallory", "s1", &logv1.SetRole{UserId: "carol", Role: admin}), notMem, nil},
			{cmdOf("g", "alice", "s2", &logv1.SetRole{UserId: "erin", Role: admin}), missing, nil},
			{cmdOf("g", "alice", "s3", &logv1.SetRole{UserId: "alice", Role: member}), invalidArg, nil},
			{cmdOf("g", "alice", "s4", &logv1.SetRole{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_OWNER}), invalidArg, nil},
			{cmdOf("g", "alice", "s5", &logv1.SetRole{UserId: "bob", Role: member}), exists, nil},
			{cmdOf("g", "alice", "s6", &logv1.SetRole{UserId: "bob", Role: admin}), okCode, nil},
			{cmdOf("g", "bob", "s7", &logv1.SetRole{UserId: "carol", Role: admin}), denied, nil}, // admins do not set roles
			{cmdOf("g", "alice", "s8", &logv1.SetRole{UserId: "bob", Role: member}), okCode, nil},
			{cmdOf("g", "bob", "r1", &logv1.RemoveMember{UserId: "carol"}), denied, nil}, // demoted
		}},
		{"transfer: owner only, to a member; the old owner becomes an admin", []gstep{
			{createCmd("g", "alice", "c1", group, "alice", "bob", "carol"), okCode, nil},
			{cmdOf("g", "bob", "t1", &logv1.TransferOwnership{UserId: "bob"}), denied, nil},
			{cmdOf("g", "alice", "t2", &logv1.TransferOwnership{UserId: "erin"}), missing, nil},
			{cmdOf("g", "alice", "t3", &logv1.TransferOwnership{UserId: "alice"}), invalidArg, nil},
			{cmdOf("g", "alice", "t4", &logv1.TransferOwnership{UserId: "bob"}), okCode, nil},
			{cmdOf("g", "alice", "t5", &logv1.TransferOwnership{UserId: "carol"}), denied, nil},
			{cmdOf("g", "alice", "r1", &logv1.RemoveMember{UserId: "bob"}), denied, nil},   // the new owner
			{cmdOf("g", "alice", "r2", &logv1.RemoveMember{UserId: "carol"}), okCode, nil}, // still an admin
			{cmdOf("g", "bob", "l1", &logv1.Leave{}), denied, nil},
			{cmdOf("g", "alice", "l2", &logv1.Leave{}), okCode, nil},
		}},
		{"mute: admins mute those below them; the muted cannot post", []gstep{
			{createCmd("g", "alice", "c1", group, "alice", "bob", "carol"), okCode, nil},
			{cmdOf("g", "bob", "m1", &logv1.MuteMember{UserId: "carol", Muted: true}), denied, nil},
			{cmdOf("g", "mallory", "m1", &logv1.MuteMember{UserId: "carol", Muted: true}), notMem, nil},
			{cmdOf("g", "alice", "m2", &logv1.MuteMember{UserId: "erin", Muted: true}), missing, nil},
			{cmdOf("g", "alice", "m3", &logv1.MuteMember{UserId: "alice", Muted: true}), invalidArg, nil},
			{cmdOf("g", "alice", "m4", &logv1.MuteMember{UserId: "carol", Muted: false}), invalidArg, nil},
			{cmdOf("g", "alice", "m5", &logv1.MuteMember{UserId: "carol", Muted: true}), okCode, nil},
			{cmdOf("g", "alice", "m6", &logv1.MuteMember{UserId: "carol", Muted: true}), exists, nil},
			{postCmd("g", "carol", "p1", "hey"), chatv1.ErrorCode_ERROR_CODE_MUTED, nil},
			{cmdOf("g", "alice", "s1", &logv1.SetRole{UserId: "bob", Role: admin}), okCode, nil},
			{cmdOf("g", "bob", "m7", &logv1.MuteMember{UserId: "alice", Muted: true}), denied, nil},
			{cmdOf("g", "bob", "m8", &logv1.MuteMember{UserId: "carol", Muted: false}), okCode, nil},
			{postCmd("g", "carol", "p1", "hey"), okCode, nil}, // a refused id is not remembered
		}},
		{"rename: owner and admins", []gstep{
			{createCmd("g", "alice", "c1", group, "alice", "bob"), okCode, nil},
			{cmdOf("g", "bob", "n1", &logv1.Rename{Title: "x"}), denied, nil},
			{cmdOf("g", "mallory", "n1", &logv1.Rename{Title: "x"}), notMem, nil},
			{cmdOf("g", "alice", "n2", &logv1.Rename{Title: "new"}), okCode, []string{"alice", "bob"}},
		}},
		{"invites: admins create and revoke; anyone holding one joins, up to the limit", []gstep{
			{createCmd("g", "alice", "c1", group, "alice", "bob"), okCode, nil},
			{cmdOf("g", "bob", "i1", &logv1.CreateInvite{Code: code1}), denied, nil},
			{cmdOf("g", "mallory", "i1", &logv1.CreateInvite{Code: code1}), notMem, nil},
			{cmdOf("g", "carol", "j0", &logv1.JoinByInvite{Code: code1}), missing, nil},
			{cmdOf("g", "alice", "i2", &logv1.CreateInvite{Code: code1}), okCode, nil},
			{cmdOf("g", "alice", "i3", &logv1.CreateInvite{Code: code1}), exists, nil},
			{cmdOf("g", "carol", "j1", &logv1.JoinByInvite{Code: "wrong-code-00000"}), missing, nil},
			{cmdOf("missing", "carol", "j1", &logv1.JoinByInvite{Code: code1}), missing, nil},
			{cmdOf("g", "bob", "j1", &logv1.JoinByInvite{Code: code1}), exists, nil},
			{cmdOf("g", "carol", "j2", &logv1.JoinByInvite{Code: code1}), okCode, []string{"alice", "bob", "carol"}},
			{cmdOf("g", "dave", "j3", &logv1.JoinByInvite{Code: code1}), okCode, nil},
			{cmdOf("g", "erin", "j3", &logv1.JoinByInvite{Code: code1}), chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL, nil},
			{cmdOf("g", "bob", "v1", &logv1.RevokeInvite{Code: code1}), denied, nil},
			{cmdOf("g", "alice", "v2", &logv1.RevokeInvite{Code: "wrong-code-00000"}), missing, nil},
			{cmdOf("g", "alice", "v3", &logv1.RevokeInvite{Code: code1}), okCode, nil},
			{cmdOf("g", "alice", "r1", &logv1.RemoveMember{UserId: "carol"}), okCode, nil},
			{cmdOf("g", "carol", "j4", &logv1.JoinByInvite{Code: code1}), missing, nil},
			{cmdOf("g", "alice", "i4", &logv1.CreateInvite{Code: code1}), exists, nil}, // revoked for good
		}},
		{"groups cannot be followed, direct ones have no roles", []gstep{
			{createCmd("g", "alice", "c1", group, "alice"), okCode, nil},
			// To a non-member a group is not there to follow; its
			// member is told why.
			{cmdOf("g", "bob", "f1", &logv1.Follow{}), missing, nil},
			{cmdOf("g", "alice", "f2", &logv1.Follow{}), invalidArg, nil},
			{createCmd("d", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "alice", "bob"), okCode, nil},
			{cmdOf("d", "alice", "n1", &logv1.Rename{Title: "x"}), invalidArg, nil},
			{cmdOf("d", "alice", "l1", &logv1.Leave{}), invalidArg, nil},
			{cmdOf("d", "alice", "i1", &logv1.CreateInvite{Code: code1}), invalidArg, nil},
			{cmdOf("d", "carol", "j1", &logv1.JoinByInvite{Code: code1}), missing, nil},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, map[string]*conversation{}, 4, tc.steps)
		})
	}
}

func TestDecideChannels(t *testing.T) {
	admin := chatv1.MemberRole_MEMBER_ROLE_ADMIN
	runSteps(t, map[string]*conversation{}, 4, []gstep{
		{channelCmd("ch", "alice", "c1", true, "alice"), okCode, nil},
		{postCmd("ch", "alice", "p1", "news"), okCode, []string{"alice"}},
		{cmdOf("ch", "bob", "f1", &logv1.Follow{}), okCode, []string{"alice", "bob"}},
		{cmdOf("ch", "bob", "f2", &logv1.Follow{}), exists, nil},
		{postCmd("ch", "bob", "p1", "me too"), denied, nil},
		{addCmd("ch", "bob", "a1", "carol"), denied, nil},
		{cmdOf("ch", "carol", "f3", &logv1.Follow{}), okCode, nil},
		{cmdOf("ch", "alice", "s1", &logv1.SetRole{UserId: "bob", Role: admin}), okCode, nil},
		{postCmd("ch", "bob", "p1", "now I can"), okCode, nil},
		{cmdOf("ch", "dave", "f4", &logv1.Follow{}), okCode, nil},
		{cmdOf("ch", "erin", "f5", &logv1.Follow{}), chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL, nil},
		{cmdOf("ch", "carol", "u1", &logv1.Leave{}), okCode, []string{"alice", "bob", "carol", "dave"}},
		{cmdOf("ch", "erin", "f5", &logv1.Follow{}), okCode, nil},
		{cmdOf("missing", "erin", "f6", &logv1.Follow{}), missing, nil},
		// A private channel is joined by invite only: to a non-member
		// it answers as one that does not exist.
		{channelCmd("pc", "alice", "c2", false, "alice"), okCode, nil},
		{cmdOf("pc", "bob", "f1", &logv1.Follow{}), missing, nil},
		{cmdOf("pc", "alice", "i1", &logv1.CreateInvite{Code: code1}), okCode, nil},
		{cmdOf("pc", "bob", "j1", &logv1.JoinByInvite{Code: code1}), okCode, nil},
		{postCmd("pc", "bob", "p2", "follower"), denied, nil},
	})
}

func TestDecideBlocks(t *testing.T) {
	direct := chatv1.ConversationKind_CONVERSATION_KIND_DIRECT
	block := func(user, who string, blocked bool) *logv1.Command {
		c := cmdOf("", user, "", &logv1.Block{UserId: who, Blocked: blocked})
		if code, msg := Prepare(c); code != okCode {
			t.Fatalf("Prepare(block) = %v %s", code, msg)
		}
		return c
	}
	open := func(user, other, id string) *logv1.Command {
		c := createCmd("", user, id, direct, other)
		Prepare(c)
		return c
	}
	post := func(user, other, id string) *logv1.Command { return postCmd(DirectID(user, other), user, id, "hi") }
	blocked := chatv1.ErrorCode_ERROR_CODE_BLOCKED

	t.Run("a block in an existing conversation stops both, privately", func(t *testing.T) {
		convs := map[string]*conversation{}
		log := runSteps(t, convs, 10, []gstep{
			{open("alice", "bob", "o1"), okCode, nil},
			{post("bob", "alice", "p1"), okCode, nil},
			{block("alice", "bob", true), okCode, nil},
			{post("bob", "alice", "p2"), blocked, nil},
			{post("alice", "bob", "p3"), blocked, nil},
			{open("bob", "alice", "o2"), blocked, nil},
			{block("bob", "alice", true), okCode, nil},
			{block("alice", "bob", false), okCode, nil},
			{post("alice", "bob", "p3"), blocked, nil}, // bob still blocks alice
			{block("bob", "alice", false), okCode, nil},
			{post("bob", "alice", "p2"), okCode, nil},
		})
		for _, rec := range log {
			if b := rec.GetBlock(); b != nil && (len(rec.GetRecipientIds()) > 0 || rec.GetEvent() != nil) {
				t.Fatalf("a block record names recipients or takes a seq: %v", rec)
			}
		}
		if n := convs[DirectID("alice", "bob")].lastSeq; n != 3 {
			t.Fatalf("blocks took seqs: last seq %d, want 3", n)
		}
		// The clock stands still in runSteps; persistence ranks a pair's
		// records by their time, so each must still be after the last.
		var prev time.Time
		for _, rec := range log {
			if b := rec.GetBlock(); b != nil {
				if at := b.GetTime().AsTime(); !at.After(prev) || at.Truncate(time.Microsecond) != at {
					t.Fatalf("block record at %v follows one at %v", at, prev)
				} else {
					prev = at
				}
			}
		}
		rebuilt := map[string]*conversation{}
		for _, rec := range log {
			replay(rebuilt, rec)
		}
		if _, out := decide(rebuilt, post("bob", "alice", "p9"), 10, time.Unix(0, 0)); out.GetErrorCode() != okCode {
			t.Fatalf("after replay of the unblocks: %v", out)
		}
		again := block("alice", "bob", true)
		if rec, out := decide(rebuilt, again, 10, time.Unix(0, 0)); out.GetErrorCode() != okCode || !rec.GetBlock().GetTime().AsTime().After(prev) {
			t.Fatalf("a block after the replay: %v at %v, want after %v", out, rec.GetBlock().GetTime().AsTime(), prev)
		}
	})
	t.Run("blocking someone never talked to", func(t *testing.T) {
		convs := map[string]*conversation{}
		log := runSteps(t, convs, 10, []gstep{
			{block("alice", "bob", true), okCode, nil},
			{block("alice", "bob", true), okCode, nil}, // idempotent
			{open("bob", "alice", "o1"), blocked, nil},
			{open("alice", "bob", "o2"), blocked, nil},
			// Nothing exists for anyone: the same answers as with no block.
			{post("bob", "alice", "p1"), missing, nil},
			{markCmd(DirectID("alice", "bob"), "bob", "phone", 0, 0), missing, nil},
		})
		if len(log) != 1 {
			t.Fatalf("records %v, want the one block", log)
		}
		rebuilt := map[string]*conversation{}
		replay(rebuilt, log[0])
		if _, out := decide(rebuilt, open("bob", "alice", "o1"), 10, time.Unix(0, 0)); out.GetErrorCode() != blocked {
			t.Fatalf("after replay: %v", out)
		}
		runSteps(t, rebuilt, 10, []gstep{
			{block("alice", "bob", false), okCode, nil},
			{open("bob", "alice", "o1"), okCode, nil},
			{post("alice", "bob", "p1"), okCode, nil},
		})
	})
}

// TestReplayRebuildsGroups checks that roles, mutes, invites and owner
// come back from the log as they were decided.
func TestReplayRebuildsGroups(t *testing.T) {
	group := chatv1.ConversationKind_CONVERSATION_KIND_GROUP
	live := map[string]*conversation{}
	log := runSteps(t, live, 10, []gstep{
		{createCmd("g", "alice", "c1", group, "alice", "bob", "carol", "dave"), okCode, nil},
		{cmdOf("g", "alice", "s1", &logv1.SetRole{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN}), okCode, nil},
		{cmdOf("g", "bob", "m1", &logv1.MuteMember{UserId: "carol", Muted: true}), okCode, nil},
		{cmdOf("g", "alice", "i1", &logv1.CreateInvite{Code: code1}), okCode, nil},
		{cmdOf("g", "alice", "i2", &logv1.CreateInvite{Code: "second-code-0002"}), okCode, nil},
		{cmdOf("g", "bob", "v1", &logv1.RevokeInvite{Code: code1}), okCode, nil},
		{cmdOf("g", "erin", "j1", &logv1.JoinByInvite{Code: "second-code-0002"}), okCode, nil},
		{cmdOf("g", "alice", "t1", &logv1.TransferOwnership{UserId: "dave"}), okCode, nil},
		{cmdOf("g", "alice", "r1", &logv1.RemoveMember{UserId: "carol"}), okCode, nil},
		{cmdOf("g", "bob", "l1", &logv1.Leave{}), okCode, nil},
		{cmdOf("g", "dave", "n1", &logv1.Rename{Title: "renamed"}), okCode, nil},
	})
	rebuilt := map[string]*conversation{}
	for _, rec := range log {
		replay(rebuilt, rec)
		replay(rebuilt, rec)
	}
	state := func(c *conversation) string {
		return fmt.Sprint(c.members(), c.sum.GetOwnerId(), c.sum.GetAdminIds(), c.sum.GetMutedIds(), c.invites, c.sum.GetPublic(), c.lastSeq)
	}
	if a, b := state(live["g"]), state(rebuilt["g"]); a != b {
		t.Fatalf("rebuilt aggregate differs:\n live    %s\n rebuilt %s", a, b)
	}
	if want := "[alice dave erin]dave[alice] [] map[invite-code-0001:false second-code-0002:true] false 11"; state(live["g"]) != want {
		t.Fatalf("state %s, want %s", state(live["g"]), want)
	}
}

func TestPrepareGroups(t *testing.T) {
	tests := []struct {
		name string
		cmd  *logv1.Command
		ok   bool
	}{
		{"remove", cmdOf("g", "alice", "m", &logv1.RemoveMember{UserId: "bob"}), true},
		{"remove bad user", cmdOf("g", "alice", "m", &logv1.RemoveMember{UserId: "b b"}), false},
		{"remove without client id", cmdOf("g", "alice", "", &logv1.RemoveMember{UserId: "bob"}), false},
		{"leave", cmdOf("g", "alice", "m", &logv1.Leave{}), true},
		{"leave without conversation", cmdOf("", "alice", "m", &logv1.Leave{}), false},
		{"role admin", cmdOf("g", "alice", "m", &logv1.SetRole{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN}), true},
		{"role owner", cmdOf("g", "alice", "m", &logv1.SetRole{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_OWNER}), false},
		{"role unspecified", cmdOf("g", "alice", "m", &logv1.SetRole{UserId: "bob"}), false},
		{"transfer bad user", cmdOf("g", "alice", "m", &logv1.TransferOwnership{UserId: ""}), false},
		{"mute bad user", cmdOf("g", "alice", "m", &logv1.MuteMember{UserId: ""}), false},
		{"rename", cmdOf("g", "alice", "m", &logv1.Rename{Title: "t"}), true},
		{"rename empty", cmdOf("g", "alice", "m", &logv1.Rename{Title: " "}), false},
		{"rename too long", cmdOf("g", "alice", "m", &logv1.Rename{Title: string(make([]byte, MaxTitleBytes+1))}), false},
		{"rename bad utf-8", cmdOf("g", "alice", "m", &logv1.Rename{Title: "\xff"}), false},
		{"invite", cmdOf("g", "alice", "m", &logv1.CreateInvite{Code: code1}), true},
		{"invite too short", cmdOf("g", "alice", "m", &logv1.CreateInvite{Code: "short"}), false},
		{"invite bad chars", cmdOf("g", "alice", "m", &logv1.CreateInvite{Code: "invite code 0001"}), false},
		{"revoke bad code", cmdOf("g", "alice", "m", &logv1.RevokeInvite{Code: ""}), false},
		{"join bad code", cmdOf("g", "alice", "m", &logv1.JoinByInvite{Code: "x"}), false},
		{"follow", cmdOf("g", "alice", "m", &logv1.Follow{}), true},
		{"block", cmdOf("", "alice", "", &logv1.Block{UserId: "bob", Blocked: true}), true},
		{"block yourself", cmdOf("", "alice", "", &logv1.Block{UserId: "alice", Blocked: true}), false},
		{"block bad user", cmdOf("", "alice", "", &logv1.Block{UserId: ""}), false},
		{"channel", channelCmd("", "alice", "c", true), true},
		{"channel without title", func() *logv1.Command {
			c := channelCmd("", "alice", "c", true)
			c.GetCreateConversation().Title = ""
			return c
		}(), false},
		{"group with a direct id", createCmd(DirectID("bob", "carol"), "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_GROUP), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := Prepare(tc.cmd)
			if ok := code == okCode; ok != tc.ok {
				t.Fatalf("Prepare = %v %q, want ok=%v", code, msg, tc.ok)
			}
		})
	}
	b := cmdOf("whatever", "bob", "x", &logv1.Block{UserId: "alice", Blocked: true})
	Prepare(b)
	if b.GetConversationId() != DirectID("alice", "bob") || b.GetClientMsgId() != "" {
		t.Fatalf("a block's conversation is the pair's direct one: %v", b)
	}
	g := createCmd("", "alice", "c", chatv1.ConversationKind_CONVERSATION_KIND_GROUP)
	g.GetCreateConversation().Public = true
	Prepare(g)
	if g.GetCreateConversation().GetPublic() {
		t.Fatal("a group kept public")
	}
}

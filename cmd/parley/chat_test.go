package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/services/ingest"
	"github.com/parleychat/parley/services/platform"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

func TestChatDescribe(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 3, 1, 9, 30, 5, 0, time.UTC))
	created := func(kind chatv1.ConversationKind, title string, members ...string) *chatv1.Event {
		return &chatv1.Event{ConversationId: "c1", Seq: 1, SenderId: "alice", Time: at, Body: &chatv1.Event_ConversationCreated{
			ConversationCreated: &chatv1.ConversationCreated{Kind: kind, Title: title, MemberIds: members}}}
	}
	for _, tc := range []struct {
		name string
		ev   *chatv1.Event
		want string
	}{
		{"direct: the creator is not among the others", created(chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "", "alice", "bob"),
			"09:30:05 * alice started this conversation with bob"},
		{"group", created(chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "team", "alice", "bob", "carol"),
			`09:30:05 * alice created the group "team" with bob, carol`},
		{"group of one", created(chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "notes", "alice"),
			`09:30:05 * alice created the group "notes"`},
		{"channel", created(chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL, "news", "alice"),
			`09:30:05 * alice created the channel "news"`},
		{"message", &chatv1.Event{ConversationId: "c1", Seq: 2, SenderId: "bob", Time: at,
			Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: "hi"}}}, "09:30:05 bob: hi"},
		{"member added", &chatv1.Event{ConversationId: "c1", Seq: 3, SenderId: "bob", Time: at,
			Body: &chatv1.Event_MemberAdded{MemberAdded: &chatv1.MemberAdded{UserId: "dave"}}}, "09:30:05 * bob added dave"},
		{"left", &chatv1.Event{ConversationId: "c1", Seq: 4, SenderId: "dave", Time: at,
			Body: &chatv1.Event_MemberLeft{MemberLeft: &chatv1.MemberLeft{UserId: "dave"}}}, "09:30:05 * dave left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describe(tc.ev, "bob", time.UTC); got != tc.want {
				t.Errorf("describe = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestChatEventLine(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 3, 1, 9, 30, 5, 0, time.UTC))
	ev := &chatv1.Event{ConversationId: "0199a3c2-7a1e-7b51-9c1e-2f1f5c1d0a01", Seq: 2, SenderId: "bob", Time: at,
		Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: "hi"}}}
	for _, tc := range []struct {
		name, open, label, want string
	}{
		{"the open conversation is not labelled", ev.GetConversationId(), "team", "09:30:05 bob: hi"},
		{"another is labelled by name", "other", "team", "[team] 09:30:05 bob: hi"},
		{"an id prefix only when no name is known", "other", "", "[0199a3c2] 09:30:05 bob: hi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := eventLine(ev, tc.open, tc.label, "alice", time.UTC); got != tc.want {
				t.Errorf("eventLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestChatNameFromEvent(t *testing.T) {
	direct := &chatv1.Event{SenderId: "alice", Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
		Kind: chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, MemberIds: []string{"alice", "bob"}}}}
	group := &chatv1.Event{SenderId: "alice", Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
		Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "team", MemberIds: []string{"alice", "bob"}}}}
	renamed := &chatv1.Event{SenderId: "alice", Body: &chatv1.Event_ConversationRenamed{ConversationRenamed: &chatv1.ConversationRenamed{Title: "crew"}}}
	message := &chatv1.Event{SenderId: "alice", Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: "x"}}}
	for _, tc := range []struct {
		name, me string
		ev       *chatv1.Event
		want     string
		ok       bool
	}{
		{"a direct conversation is the other user, for bob", "bob", direct, "alice", true},
		{"a direct conversation is the other user, for alice", "alice", direct, "bob", true},
		{"a group is its title", "bob", group, "team", true},
		{"a rename", "bob", renamed, "crew", true},
		{"a message names nothing", "bob", message, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := nameFromEvent(tc.ev, tc.me)
			if got != tc.want || ok != tc.ok {
				t.Errorf("nameFromEvent = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestChatDirectID: the client's derivation is the server's.
func TestChatDirectID(t *testing.T) {
	for _, pair := range [][2]string{{"alice", "bob"}, {"bob", "alice"}, {"a@example.com", "Z_9"}} {
		if got, want := directID(pair[0], pair[1]), ingest.DirectID(pair[0], pair[1]); got != want {
			t.Errorf("directID(%q, %q) = %s, want the server's %s", pair[0], pair[1], got, want)
		}
	}
}

// syncBuffer is an io.Writer the printer and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until out holds every one of want.
func waitFor(t *testing.T, who string, out *syncBuffer, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, missing := out.String(), ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's terminal never showed %q; it shows:\n%s", who, missing, s)
		}
	}
}

// TestChatEndToEnd runs the terminal client's state machine against an
// in-process platform: a new direct conversation prints its header, then
// its creation without the creator among the others; a line sent shows
// once (its delivery); other conversations are labelled by name, also
// one the client learns of from a memberAdded.
func TestChatEndToEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p, err := platform.Start(ctx, platform.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", JWTSecret: secret(), Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(20 * time.Second); !p.Ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("platform not ready in 20s")
		}
	}
	term := map[string]*syncBuffer{}
	chats := map[string]*chat{}
	for _, u := range []string{"alice", "bob", "carol"} {
		term[u] = &syncBuffer{}
		ch, err := newChat(ctx, p.URL(), u, u+"-term", term[u])
		if err != nil {
			t.Fatal(err)
		}
		defer ch.c.Close()
		chats[u] = ch
	}

	chats["alice"].command(ctx, "/to bob")
	waitFor(t, "alice", term["alice"], "started this conversation")
	out := term["alice"].String()
	header, creation := strings.Index(out, "-- bob --"), strings.Index(out, "* alice started this conversation with bob\n")
	if header < 0 || creation < 0 || header > creation {
		t.Fatalf("alice's terminal, want the header, then the creation naming only bob:\n%s", out)
	}
	waitFor(t, "bob", term["bob"], "[alice] ", "* alice started this conversation with bob\n")

	chats["alice"].command(ctx, "hello bob")
	waitFor(t, "bob", term["bob"], "alice: hello bob")
	waitFor(t, "alice", term["alice"], "alice: hello bob")
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(term["alice"].String(), "hello bob"); n != 1 {
		t.Errorf("alice's own line shows %d times, want once:\n%s", n, term["alice"])
	}
	if s := term["bob"].String(); !strings.Contains(s, "[alice] ") || strings.Contains(s, "["+directID("alice", "bob")[:8]+"]") {
		t.Errorf("bob's terminal labels the direct conversation by id, not by name:\n%s", s)
	}

	chats["bob"].command(ctx, "/group team alice")
	waitFor(t, "alice", term["alice"], `[team] `, `bob created the group "team" with alice`)
	chats["bob"].command(ctx, "/add carol")
	// carol learns of the group from memberAdded: its name comes from the
	// conversation list.
	waitFor(t, "carol", term["carol"], "[team] ", "* bob added carol")
	chats["bob"].command(ctx, "hi all")
	waitFor(t, "carol", term["carol"], "bob: hi all")
	for _, l := range strings.Split(term["carol"].String(), "\n") {
		if strings.Contains(l, "bob: hi all") && !strings.HasPrefix(l, "[team] ") {
			t.Errorf("carol's line %q is not labelled [team]", l)
		}
	}

	// Contacts and invitations come through the inbox.
	chats["alice"].command(ctx, "/contact carol")
	waitFor(t, "alice", term["alice"], "carol: asked, waiting for an answer")
	waitFor(t, "carol", term["carol"], "[inbox] ", "alice asks to be your contact (/accept alice or /decline alice)")
	chats["carol"].command(ctx, "/accept alice")
	waitFor(t, "alice", term["alice"], "carol accepted: you are contacts now")
	chats["carol"].command(ctx, "/contacts")
	waitFor(t, "carol", term["carol"], "alice                    contact")

	club, err := chats["bob"].c.CreateConsentGroup(ctx, "club")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chats["bob"].c.AddMember(ctx, club.GetConversationId(), "carol"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "carol", term["carol"], `bob invites you to "club" (/inbox, then /join N)`)
	chats["carol"].command(ctx, "/inbox")
	waitFor(t, "carol", term["carol"], ` 1. bob invites you to "club"`)
	chats["carol"].command(ctx, "/join 1")
	waitFor(t, "carol", term["carol"], "-- club --", "* carol joined")
	chats["carol"].command(ctx, "/contacts-only on")
	waitFor(t, "carol", term["carol"], "only your contacts can start a chat with you now", "[inbox] ", "you take direct chats from your contacts only")
}

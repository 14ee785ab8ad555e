package platform_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/parleychat/parley/services/persistence"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/historytest"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// must fails the test on err; what says which step.
func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// TestReplayReproducesViews is issue 7's done-means 2: replaying the event
// log into an empty history store reproduces the same history,
// conversation lists, unread counts and reactions. A realistic set of
// conversations is driven through the SDK; then the whole event topic is
// read from the cluster and applied through persistence's own consumer
// path (persistence.Replay) into a new Pebble store, and every user's
// view of it must equal the live store's (historytest.Compare).
func TestReplayReproducesViews(t *testing.T) {
	e, api, _, stop := startBackend(t)
	defer stop()
	ctx := tctx(t)
	// The audience's member is compared as a user is: its list, and the
	// audience's summary and history.
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank", membership.AudienceMember("region=eu")}
	dev := map[string]*device{}
	for _, u := range users[:6] {
		dev[u] = e.dial(u, u+"-phone", u == "bob")
	}
	alice, bob, carol, dave, erin, frank := dev["alice"], dev["bob"], dev["carol"], dev["dave"], dev["erin"], dev["frank"]
	laptop := e.dial("alice", "alice-laptop", false)
	acc := func(what string) func(*clientv1.Accepted, error) *clientv1.Accepted {
		return must[*clientv1.Accepted](t, what)
	}
	flags := func(what string) func(*chatv1.ConversationFlags, error) *chatv1.ConversationFlags {
		return must[*chatv1.ConversationFlags](t, what)
	}

	// A group: roles, a rename, rich messages, replies, edits, deletes,
	// reactions added and removed, an invite, a member removed and one who
	// left, an admin's mute.
	g := acc("create group")(alice.CreateGroup(ctx, "team", "bob", "carol", "dave")).GetConversationId()
	acc("set role")(alice.SetRole(ctx, g, "bob", chatv1.MemberRole_MEMBER_ROLE_ADMIN))
	acc("rename")(bob.Rename(ctx, g, "the team"))
	img := &chatv1.Attachment{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Url: "https://cdn.example/plan.png", ContentType: "image/png", SizeBytes: 2048, Name: "plan.png"}
	plan := acc("rich message")(alice.SendRich(ctx, &clientv1.SendMessage{ConversationId: g, Text: "the plan, see https://example.com/plan",
		Attachments: []*chatv1.Attachment{img}, MentionIds: []string{"bob"}})).GetSeq()
	reply := acc("reply")(bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: g, Text: "looks good", ReplyToSeq: plan})).GetSeq()
	card := acc("contact")(carol.SendRich(ctx, &clientv1.SendMessage{ConversationId: g, Contact: &chatv1.ContactCard{DisplayName: "Frank", UserId: "frank"}})).GetSeq()
	acc("edit")(alice.Edit(ctx, g, plan, "the plan v2: https://example.com/plan2", "bob", "carol"))
	acc("react")(bob.React(ctx, g, plan, "👍"))
	acc("react")(carol.React(ctx, g, plan, "👍"))
	acc("react")(carol.React(ctx, g, plan, "🎉"))
	acc("react")(dave.React(ctx, g, reply, "🤔"))
	acc("unreact")(carol.Unreact(ctx, g, plan, "🎉"))
	acc("delete own")(carol.Delete(ctx, g, card))
	late := acc("message")(dave.Send(ctx, g, "sorry, late")).GetSeq()
	acc("moderator deletes")(bob.Delete(ctx, g, late))
	acc("mute member")(bob.MuteMember(ctx, g, "dave", true))
	code, _, err := alice.CreateInvite(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	acc("join by invite")(erin.JoinByInvite(ctx, g, code))
	must[*chatv1.ConversationFlags](t, "pin before leaving")(dave.SetPinned(ctx, g, true))
	acc("leave")(dave.Leave(ctx, g))
	acc("remove")(bob.RemoveMember(ctx, g, "carol"))
	last := acc("message after")(erin.Send(ctx, g, "hi all")).GetSeq()

	// A public channel: posts by the owner and an admin, followers.
	ch := acc("create channel")(alice.CreateChannel(ctx, "news", true, "bob")).GetConversationId()
	acc("channel admin")(alice.SetRole(ctx, ch, "bob", chatv1.MemberRole_MEMBER_ROLE_ADMIN))
	acc("follow")(frank.Follow(ctx, ch))
	acc("follow")(erin.Follow(ctx, ch))
	news := acc("channel post")(alice.Send(ctx, ch, "release 1.0 is out")).GetSeq()
	acc("channel post")(bob.Send(ctx, ch, "notes: https://example.com/notes"))
	acc("follower reacts")(frank.React(ctx, ch, news, "🚀"))
	acc("unfollow")(erin.Leave(ctx, ch))

	// Direct conversations, and blocks (which no view shows).
	d := acc("direct")(alice.OpenDirect(ctx, "bob")).GetConversationId()
	acc("direct message")(alice.Send(ctx, d, "lunch?"))
	yes := acc("direct message")(bob.Send(ctx, d, "yes")).GetSeq()
	acc("direct reaction")(alice.React(ctx, d, yes, "❤️"))
	acc("direct")(frank.OpenDirect(ctx, "erin"))
	if err := erin.Block(ctx, "frank"); err != nil {
		t.Fatal(err)
	}
	// Frank's block of dave is lifted and alice blocked instead: the
	// rebuilt lists must hold the outcome, not every block ever made.
	for _, step := range []struct {
		by   *device
		user string
		on   bool
	}{{frank, "dave", true}, {frank, "alice", true}, {frank, "dave", false}} {
		var err error
		if step.on {
			err = step.by.Block(ctx, step.user)
		} else {
			err = step.by.Unblock(ctx, step.user)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	// Contact requests: accepted (opening a direct conversation), declined
	// (told to the decliner alone), withdrawn, and one left pending; each
	// goes through the pair's record and both users' inboxes.
	state := func(what string) func(chatv1.ContactState, error) chatv1.ContactState {
		return must[chatv1.ContactState](t, what)
	}
	state("request")(carol.RequestContact(ctx, "alice"))
	state("accept")(alice.RespondContact(ctx, "carol", true))
	state("request")(dave.RequestContact(ctx, "erin"))
	state("decline")(erin.RespondContact(ctx, "dave", false))
	state("request")(frank.RequestContact(ctx, "bob"))
	state("withdraw")(frank.CancelContact(ctx, "bob"))
	state("request")(bob.RequestContact(ctx, "erin"))
	// Two broadcasts to an audience (the first creates it).
	for i, text := range []string{"maintenance tonight", "done"} {
		if _, err := api.Broadcast(withToken(ctx, backendToken), &backendv1.BroadcastRequest{Key: "region", Value: "eu", Text: text, ClientMsgId: fmt.Sprint("b-", i)}); err != nil {
			t.Fatalf("broadcast: %v", err)
		}
	}
	// A group with consent: bob invited and joining, frank invited and
	// declining, erin invited and not answering.
	club := acc("consent group")(carol.CreateConsentGroup(ctx, "club")).GetConversationId()
	for _, u := range []string{"bob", "frank", "erin"} {
		acc("invite")(carol.AddMember(ctx, club, u))
	}
	must[*clientv1.InvitationStatus](t, "join")(bob.RespondInvitation(ctx, club, true))
	must[*clientv1.InvitationStatus](t, "decline")(frank.RespondInvitation(ctx, club, false))
	acc("post in the club")(bob.Send(ctx, club, "thanks"))
	// The inbox items follow the answers by a hand-on: wait for the last
	// of each inbox, so the live store holds them before the log's end is
	// taken below.
	for u, last := range map[string]uint64{"alice": 3, "carol": 3, "dave": 2, "erin": 5, "frank": 5, "bob": 6} {
		waitHistory(t, dev[u].Client, dev[u].InboxID, last)
	}

	// Read and delivered positions on several devices, and each user's own
	// flags set from either of alice's devices.
	must[*chatv1.Receipt](t, "mark")(bob.Mark(ctx, g, last, reply))
	must[*chatv1.Receipt](t, "mark")(laptop.Mark(ctx, g, last, last))
	must[*chatv1.Receipt](t, "mark")(frank.Mark(ctx, ch, news, news))
	must[*chatv1.Receipt](t, "mark")(bob.Mark(ctx, d, yes, 0))
	flags("mute")(alice.SetMuted(ctx, g, true))
	flags("pin")(laptop.SetPinned(ctx, ch, true))
	flags("pin")(laptop.SetPinned(ctx, d, true))
	flags("unpin")(alice.SetPinned(ctx, d, false))
	flags("pin")(bob.SetPinned(ctx, d, true))
	flags("mute")(frank.SetMuted(ctx, ch, true))
	flags("mute")(erin.SetMuted(ctx, g, true))
	flags("unmute")(erin.SetMuted(ctx, g, false))

	brokers := e.p.Kafka.ListenAddrs()
	// Persistence commits a batch only once the store holds it, so then
	// the live store holds the whole log.
	topicstest.WaitCommittedPast(t, topics.ClientOpts(brokers), persistence.Group, topics.Events, nil, 20*time.Second)
	live := e.p.Store()

	rebuilt, err := pebblestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer rebuilt.Close()
	st, err := persistence.Replay(ctx, topics.ClientOpts(brokers), rebuilt, nil)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	t.Logf("replayed %d records (%d stale, %d set aside)", st.Records, st.Stale, st.Rejected)
	if st.Rejected != 0 || st.Stale != 0 {
		t.Fatalf("replay passed records by: %+v", st)
	}
	if err := historytest.Compare(ctx, live, rebuilt, users); err != nil {
		t.Fatalf("the rebuilt store differs from the live one: %v", err)
	}

	// Compare finds no difference between two stores that lack the same
	// thing, so check that the rebuilt views hold what the scenario did.
	t.Run("the rebuilt views hold the flags, unread counts, reactions and blocks", func(t *testing.T) {
		l, err := rebuilt.Conversations(ctx, "alice", history.ListQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range l {
			got = append(got, fmt.Sprintf("%s muted=%v pinned=%v unread=%d", c.GetTitle(), c.GetMuted(), c.GetPinned(), c.GetUnreadCount()))
		}
		// The second is alice's inbox: carol's request counts as unread
		// until alice marks the inbox read (answering it is not reading it).
		want := []string{"news muted=false pinned=true unread=1", " muted=false pinned=false unread=1", " muted=false pinned=false unread=0", " muted=false pinned=false unread=0", "the team muted=true pinned=false unread=0"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("alice's rebuilt list:\n got  %v\n want %v", got, want)
		}
		for u, want := range map[string]string{"erin": "frank", "frank": "alice", "dave": "", "alice": ""} {
			if b, err := rebuilt.Blocks(ctx, u); err != nil || strings.Join(b, ",") != want {
				t.Fatalf("%s's rebuilt blocks: %q, %v; want %q", u, b, err, want)
			}
		}
		for u, want := range map[string]string{"alice": "carol:3", "carol": "alice:3", "dave": "erin:1", "erin": "bob:2", "bob": "erin:1", "frank": ""} {
			l, err := rebuilt.Contacts(ctx, u)
			var got []string
			for _, c := range l {
				got = append(got, fmt.Sprintf("%s:%d", c.GetUserId(), c.GetState()))
			}
			if err != nil || strings.Join(got, ",") != want {
				t.Fatalf("%s's rebuilt contacts: %q, %v; want %q", u, got, err, want)
			}
		}
		if p, err := rebuilt.History(ctx, membership.AudienceID("region=eu"), history.Query{Limit: 10}); err != nil || len(p.Events) != 3 ||
			p.Events[2].GetMessagePosted().GetText() != "done" || !p.Events[2].GetMessagePosted().GetSystem() {
			t.Fatalf("the rebuilt audience: %v, %v", p, err)
		}
		// carol was removed from the group; what she lists is her club
		// (with bob, who accepted, alone), her inbox and the direct
		// conversation her accepted request opened.
		l, err = rebuilt.Conversations(ctx, "carol", history.ListQuery{})
		if err != nil || len(l) != 3 || l[0].GetTitle() != "club" || fmt.Sprint(l[0].GetMemberIds()) != "[carol bob]" || !l[0].GetConsent() {
			t.Fatalf("carol lists %v, %v; want the club, her inbox and the direct conversation with alice", l, err)
		}
		p, err := rebuilt.History(ctx, g, history.Query{Forward: true, AfterSeq: plan - 1, Limit: 1, Viewer: "bob"})
		if err != nil || len(p.Events) != 1 {
			t.Fatalf("history at %d: %v, %v", plan, p, err)
		}
		m := p.Events[0].GetMessagePosted()
		if fmt.Sprint(m.GetReactions()) != fmt.Sprint([]*chatv1.ReactionCount{{Emoji: "👍", Count: 2, Me: true}}) || m.GetEditedSeq() == 0 {
			t.Fatalf("the plan as rebuilt: %v", m)
		}
	})
}

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/parleychat/parley/services/persistence"
	"github.com/parleychat/parley/services/persistence/history/cassandrastore"
	"github.com/parleychat/parley/services/persistence/history/historytest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// TestReplayIntoCassandra (real stack) is issue 7's replay check on
// Cassandra: conversations with every kind of event are driven through
// the edges; then the part of the event log this test wrote is replayed,
// through persistence's consumer path, into a freshly migrated keyspace,
// and every user's lists, histories, reactions, receipts, flags and
// blocks there must equal what the live persistence wrote.
func TestReplayIntoCassandra(t *testing.T) {
	s := requireStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admCl, err := kgo.NewClient(s.kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	// The stack's log holds other tests' events; this test replays from
	// where the log ended before it wrote anything.
	ensureTopics(t, s.brokers)
	from, err := logread.SettledEnds(ctx, adm, topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	c := startClusterEdges(t, s, [2][]string{backendArgs(t), nil})

	// Users unique to this run, so the comparison sees only what it made.
	run := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	u := func(name string) string { return name + "-" + run }
	alice, bob, carol := u("alice"), u("bob"), u("carol")
	a := discardEvents(c.dial(0, alice, "a1"))
	a2 := discardEvents(c.dial(1, alice, "a2"))
	b := discardEvents(c.dial(1, bob, "b1"))
	cc := discardEvents(c.dial(0, carol, "c1"))
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	acc := func(what string) func(*clientv1.Accepted, error) uint64 {
		return func(r *clientv1.Accepted, err error) uint64 {
			t.Helper()
			must(what, err)
			return r.GetSeq()
		}
	}
	g, err := a.CreateGroup(ctx, "replay", bob, carol)
	must("create group", err)
	group := g.GetConversationId()
	hello := acc("post")(a.Send(ctx, group, "hello https://example.org/x @"+bob))
	reply := acc("reply")(b.SendRich(ctx, &clientv1.SendMessage{ConversationId: group, ClientMsgId: sdk.NewClientMsgID(),
		Text: "hi", ReplyToSeq: hello, MentionIds: []string{alice}}))
	acc("attachment")(cc.SendRich(ctx, &clientv1.SendMessage{ConversationId: group, ClientMsgId: sdk.NewClientMsgID(),
		Attachments: []*chatv1.Attachment{{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_FILE, Url: "https://files.example/r.pdf", Name: "r.pdf", SizeBytes: 1234}}}))
	acc("edit")(a.Edit(ctx, group, hello, "hello again"))
	acc("react")(b.React(ctx, group, hello, "👍"))
	acc("react")(cc.React(ctx, group, hello, "👍"))
	acc("unreact")(cc.Unreact(ctx, group, hello, "👍"))
	doomed := acc("post")(cc.Send(ctx, group, "oops"))
	acc("delete")(cc.Delete(ctx, group, doomed))
	acc("role")(a.SetRole(ctx, group, bob, chatv1.MemberRole_MEMBER_ROLE_ADMIN))
	acc("remove")(b.RemoveMember(ctx, group, carol))
	d, err := a.OpenDirect(ctx, bob)
	must("direct", err)
	direct := d.GetConversationId()
	last := acc("direct post")(b.Send(ctx, direct, "just us"))
	for i := range 5 {
		acc("post")(a.Send(ctx, group, fmt.Sprint("message ", i)))
	}
	_, err = b.Mark(ctx, group, reply, reply)
	must("mark", err)
	_, err = a2.Mark(ctx, direct, last, last)
	must("mark", err)
	_, err = a.SetMuted(ctx, group, true)
	must("mute", err)
	_, err = a2.SetPinned(ctx, direct, true)
	must("pin", err)
	must("block", cc.Block(ctx, alice))
	// Contacts: one accepted, one declined; their items reach the three
	// inboxes (waited for, so live persistence holds them before the
	// log's end is taken).
	_, err = a.RequestContact(ctx, bob)
	must("request", err)
	_, err = b.RespondContact(ctx, alice, true)
	must("accept", err)
	_, err = b.RequestContact(ctx, carol)
	must("request", err)
	_, err = cc.RespondContact(ctx, bob, false)
	must("decline", err)
	club, err := cc.CreateConsentGroup(ctx, "club")
	must("consent group", err)
	_, err = cc.AddMember(ctx, club.GetConversationId(), alice)
	must("invite", err)
	_, err = cc.AddMember(ctx, club.GetConversationId(), bob)
	must("invite", err)
	_, err = a.RespondInvitation(ctx, club.GetConversationId(), true)
	must("join", err)
	_, err = b.RespondInvitation(ctx, club.GetConversationId(), false)
	must("decline", err)
	// A broadcast to this run's own audience, which the comparison
	// covers as it covers a user.
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+backendToken)
	_, err = backendClient(t, c).Broadcast(authed, &backendv1.BroadcastRequest{Key: "run", Value: run, Text: "replayed", ClientMsgId: "b-1"})
	must("broadcast", err)
	for cl, last := range map[*sdk.Client]uint64{a: 5, b: 6, cc: 3} {
		waitExists(t, ctx, cl, cl.InboxID)
		catchUp(t, ctx, cl, cl.InboxID, 0, last)
	}

	// Live persistence must have taken everything up to the log's end.
	topicstest.WaitCommittedPast(t, s.kafka(), persistence.Group, topics.Events, from, 60*time.Second)

	live, err := cassandrastore.Open(ctx, s.cassandraConfig(t, c.keyspace))
	must("open the live keyspace", err)
	defer live.Close()
	fresh := c.keyspace + "_r"
	t.Cleanup(func() { dropKeyspace(t, s.cassandra, fresh) })
	cfg := s.cassandraConfig(t, fresh)
	must("migrate a fresh keyspace", cassandrastore.Migrate(ctx, cfg))
	rebuilt, err := cassandrastore.Open(ctx, cfg)
	must("open the fresh keyspace", err)
	defer rebuilt.Close()
	start := time.Now()
	st, err := persistence.ReplayFrom(ctx, s.kafka(), rebuilt, nil, from)
	must("replay", err)
	t.Logf("replayed %d records (%d stale, %d set aside) into %s in %v", st.Records, st.Stale, st.Rejected, fresh, time.Since(start).Round(time.Millisecond))
	if st.Records == 0 || st.Stale != 0 || st.Rejected != 0 {
		t.Fatalf("replay stats %+v: want records and nothing stale or set aside", st)
	}
	if err := historytest.Compare(ctx, live, rebuilt, []string{alice, bob, carol, membership.AudienceMember("run=" + run)}); err != nil {
		t.Fatal(err)
	}
}

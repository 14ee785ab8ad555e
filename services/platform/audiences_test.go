package platform_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/services/ingest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// dialAttrs connects user's device with a token carrying attrs.
func (e *env) dialAttrs(user, dev string, attrs map[string]string, resume ...*clientv1.Cursor) *device {
	e.t.Helper()
	tok, err := e.minter.MintWith(user, time.Now(), time.Hour, attrs)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, sdk.Options{URL: e.url, Token: tok, DeviceID: dev, Resume: resume})
	if err != nil {
		e.t.Fatalf("dial %s/%s: %v", user, dev, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &device{Client: c, last: map[string]uint64{}}
}

// TestAudienceBroadcast: the backend broadcasts to region=eu. alice (eu,
// online) gets it live; carol (eu, offline) gets it when she connects and
// resumes the audience from its start, once; bob (us) gets nothing and
// cannot read it; a broadcast retried with its client message id lands
// once.
func TestAudienceBroadcast(t *testing.T) {
	e, api, _, stop := startBackend(t)
	defer stop()
	ctx := withToken(tctx(t), backendToken)
	eu := map[string]string{"region": "eu", "plan": "pro"}
	alice := e.dialAttrs("alice", "a1", eu)
	bob := e.dialAttrs("bob", "b1", map[string]string{"region": "us"})
	aud := membership.AudienceID("region=eu")
	var got []string
	for _, a := range alice.Audiences {
		got = append(got, a.GetSelector()+" "+a.GetConversationId())
	}
	if len(got) != 2 || got[1] != "region=eu "+aud {
		t.Fatalf("alice's audiences %v, want plan=pro and region=eu %s", got, aud)
	}

	first, err := api.Broadcast(ctx, &backendv1.BroadcastRequest{Key: "region", Value: "eu", Text: "maintenance tonight", ClientMsgId: "b-1"})
	if err != nil || first.GetConversationId() != aud || first.GetSeq() != 2 {
		t.Fatalf("broadcast: %v, %v", first, err)
	}
	again, err := api.Broadcast(ctx, &backendv1.BroadcastRequest{Key: "region", Value: "eu", Text: "maintenance tonight", ClientMsgId: "b-1"})
	if err != nil || !again.GetDuplicate() || again.GetSeq() != 2 {
		t.Fatalf("broadcast retried: %v, %v", again, err)
	}
	if _, err := api.Broadcast(ctx, &backendv1.BroadcastRequest{Key: "region", Value: "eu", Text: "done", ClientMsgId: "b-2"}); err != nil {
		t.Fatal(err)
	}
	live := alice.upTo(t, aud, 3)
	if live[0].GetConversationCreated().GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE ||
		live[1].GetMessagePosted().GetText() != "maintenance tonight" || !live[1].GetMessagePosted().GetSystem() || live[2].GetMessagePosted().GetText() != "done" {
		t.Fatalf("alice got %v", live)
	}

	// carol was offline: she resumes the audience from its start and
	// gets each broadcast once, then the next one live.
	carol := e.dialAttrs("carol", "c1", map[string]string{"region": "eu"}, &clientv1.Cursor{ConversationId: aud, LastSeq: 0})
	if got := carol.upTo(t, aud, 3); len(got) != 3 || got[2].GetMessagePosted().GetText() != "done" {
		t.Fatalf("carol resumed %v", got)
	}
	if _, err := api.Broadcast(ctx, &backendv1.BroadcastRequest{Key: "region", Value: "eu", Text: "back up", ClientMsgId: "b-3"}); err != nil {
		t.Fatal(err)
	}
	if got := carol.upTo(t, aud, 4); got[0].GetMessagePosted().GetText() != "back up" {
		t.Fatalf("carol live: %v", got)
	}
	// Her history of it, paged as any conversation's (once stored).
	waitHistory(t, carol.Client, aud, 4)
	page, err := carol.History(ctx, &clientv1.GetHistory{ConversationId: aud})
	if err != nil || len(page.GetEvents()) != 4 {
		t.Fatalf("carol's history of the audience: %v, %v", page, err)
	}

	// Her read position and her mute of it are hers: the list shows the
	// audience (after her conversations) as she reads it.
	if r, err := carol.Mark(ctx, aud, 3, 3); err != nil || r.GetReadSeq() != 3 {
		t.Fatalf("carol marks the audience: %v, %v", r, err)
	}
	if _, err := carol.SetMuted(ctx, aud, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := carol.Conversations(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var a *chatv1.Conversation
		for _, c := range list {
			if c.GetConversationId() == aud {
				a = c
			}
		}
		if a != nil && a.GetReadSeq() == 3 && a.GetUnreadCount() == 1 && a.GetMuted() && a.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol's list: %v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nobody else sees her position: alice's is her own (and plan=pro,
	// which nothing was broadcast to, does not exist to be listed). The
	// list is read from history, which may trail the last broadcast.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		list, err := alice.Conversations(ctx, 0)
		if err == nil && len(list) == 1 && list[0].GetReadSeq() == 0 && list[0].GetUnreadCount() == 3 && !list[0].GetMuted() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's list: %v, %v", list, err)
		}
	}
	// A mark of an audience one is not in is refused.
	_, err = bob.Mark(ctx, aud, 1, 1)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)

	// bob, in another region, got none of it, and cannot read or resume it.
	alice.upTo(t, aud, 4)
	select {
	case ev := <-bob.Events():
		t.Fatalf("bob (us) got %v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	_, err = bob.History(ctx, &clientv1.GetHistory{ConversationId: aud})
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
	tok, _ := e.minter.MintWith("bob", time.Now(), time.Hour, map[string]string{"region": "us"})
	bob2, err := sdk.Dial(ctx, sdk.Options{URL: e.url, Token: tok, DeviceID: "b2", Resume: []*clientv1.Cursor{{ConversationId: aud}}})
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	select {
	case r := <-bob2.Resumed():
		if len(r.GetFailed()) != 1 || r.GetFailed()[0].GetConversationId() != aud || len(r.GetCaughtUp()) != 0 {
			t.Fatalf("bob resuming the eu audience: %v", r)
		}
	case ev := <-bob2.Events():
		t.Fatalf("bob resumed %v", ev)
	case <-time.After(10 * time.Second):
		t.Fatal("bob's resume never answered")
	}
	// A bad audience is refused.
	if _, err := api.Broadcast(ctx, &backendv1.BroadcastRequest{Key: "Region!", Value: "eu", Text: "x", ClientMsgId: "b-4"}); parleyCode(err) != "ERROR_CODE_INVALID_ARGUMENT" {
		t.Fatalf("a bad key: %v", err)
	}
}

// TestNoticeToAnInbox: the backend sends a notice to a user with no
// device connected; it waits in their inbox and both of their devices
// find it when they connect; a retry lands once; a notice to a user who
// is online arrives live.
func TestNoticeToAnInbox(t *testing.T) {
	e, api, _, stop := startBackend(t)
	defer stop()
	ctx := withToken(tctx(t), backendToken)
	first, err := api.SendNotice(ctx, &backendv1.SendNoticeRequest{UserId: "dave", Text: "Your export is ready", ClientMsgId: "n-1"})
	if err != nil || first.GetConversationId() != membership.InboxID("dave") || first.GetSeq() != 2 {
		t.Fatalf("notice: %v, %v", first, err)
	}
	if again, err := api.SendNotice(ctx, &backendv1.SendNoticeRequest{UserId: "dave", Text: "Your export is ready", ClientMsgId: "n-1"}); err != nil || !again.GetDuplicate() || again.GetSeq() != 2 {
		t.Fatalf("retried: %v, %v", again, err)
	}
	for _, dev := range []string{"d1", "d2"} {
		d := e.dialAttrs("dave", dev, nil, &clientv1.Cursor{ConversationId: membership.InboxID("dave")})
		got := d.upTo(t, d.InboxID, 2)
		if m := got[1].GetMessagePosted(); m.GetText() != "Your export is ready" || !m.GetSystem() {
			t.Fatalf("%s found %v", dev, got)
		}
	}
	erin := e.dial("erin", "e1", false)
	if _, err := api.SendNotice(ctx, &backendv1.SendNoticeRequest{UserId: "erin", Text: "Welcome", ClientMsgId: "n-2"}); err != nil {
		t.Fatal(err)
	}
	if got := erin.upTo(t, erin.InboxID, 2); got[1].GetMessagePosted().GetText() != "Welcome" {
		t.Fatalf("erin got %v", got)
	}
	if _, err := api.SendNotice(ctx, &backendv1.SendNoticeRequest{UserId: "not a user!", Text: "x", ClientMsgId: "n-3"}); parleyCode(err) != "ERROR_CODE_INVALID_ARGUMENT" {
		t.Fatalf("a bad user id: %v", err)
	}
}

// TestExportUser: an export holds each of the user's conversations as
// they see it, followed by its whole history (more than a page of it),
// then their contacts, whom they block and their settings; a call without
// credentials is refused.
func TestExportUser(t *testing.T) {
	e, api, _, stop := startBackend(t)
	defer stop()
	ctx := withToken(tctx(t), backendToken)
	alice, bob := e.dial("alice", "a1", false), e.dial("bob", "b1", false)
	g, err := alice.CreateGroup(ctx, "team", "bob")
	if err != nil {
		t.Fatal(err)
	}
	// More than a page, through the backend (a client's frames are
	// rate-limited).
	for i := range 230 {
		if _, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{SenderId: "alice", ConversationId: g.GetConversationId(),
			ClientMsgId: fmt.Sprint("m", i), Text: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.RequestContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.RespondContact(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	if err := alice.Block(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SetContactsOnly(ctx, true); err != nil {
		t.Fatal(err)
	}
	// What persistence holds trails the answers by a moment: wait for the
	// last of each.
	waitHistory(t, alice.Client, g.GetConversationId(), 231)
	waitHistory(t, alice.Client, alice.InboxID, 4)
	waitHistory(t, alice.Client, ingest.DirectID("alice", "bob"), 1)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := alice.Blocks(ctx); len(b) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the block never stored")
		}
	}

	// Without credentials: refused (a stream's error comes with its
	// first Recv).
	if s, err := api.ExportUser(tctx(t), &backendv1.ExportUserRequest{UserId: "alice"}); err == nil {
		if _, err := s.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("an export without credentials: %v", err)
		}
	}
	stream, err := api.ExportUser(ctx, &backendv1.ExportUserRequest{UserId: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	events := map[string]int{}
	var convs []string
	var parts []string
	for {
		part, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch p := part.GetPart().(type) {
		case *backendv1.ExportUserResponse_Conversation:
			convs = append(convs, p.Conversation.GetConversationId())
			parts = append(parts, "conversation")
		case *backendv1.ExportUserResponse_Events:
			if last := convs[len(convs)-1]; p.Events.GetConversationId() != last {
				t.Fatalf("events of %s after the summary of %s", p.Events.GetConversationId(), last)
			}
			events[p.Events.GetConversationId()] += len(p.Events.GetEvents())
		case *backendv1.ExportUserResponse_Contacts:
			parts = append(parts, fmt.Sprint("contacts ", len(p.Contacts.GetContacts()), " ", p.Contacts.GetContacts()[0].GetUserId()))
		case *backendv1.ExportUserResponse_Blocked:
			parts = append(parts, fmt.Sprint("blocked ", p.Blocked.GetUserIds()))
		case *backendv1.ExportUserResponse_Settings:
			parts = append(parts, fmt.Sprint("contacts only ", p.Settings.GetContactsOnly()))
		}
	}
	if want := "[conversation conversation conversation contacts 1 bob blocked [mallory] contacts only true]"; fmt.Sprint(parts) != want {
		t.Fatalf("export parts %v, want %s", parts, want)
	}
	if events[g.GetConversationId()] != 231 || events[alice.InboxID] != 4 || events[ingest.DirectID("alice", "bob")] != 1 {
		t.Fatalf("events per conversation %v, want the group's 231, the inbox's 4 and the direct one's 1", events)
	}
}

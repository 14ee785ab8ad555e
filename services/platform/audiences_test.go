package platform_test

import (
	"context"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/membership"

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
	// Her history of it, paged as any conversation's.
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
	// which nothing was broadcast to, does not exist to be listed).
	if list, err := alice.Conversations(ctx, 0); err != nil || len(list) != 1 || list[0].GetReadSeq() != 0 || list[0].GetUnreadCount() != 3 || list[0].GetMuted() {
		t.Fatalf("alice's list: %v, %v", list, err)
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

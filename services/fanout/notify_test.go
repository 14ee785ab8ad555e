package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func message(conv string, seq uint64, sender, text string, recipients []string, muted ...string) *logv1.EventRecord {
	return &logv1.EventRecord{RecipientIds: recipients, MutedIds: muted, Event: &chatv1.Event{
		ConversationId: conv, Seq: seq, SenderId: sender, EventId: "e" + conv + string(rune('0'+seq)),
		Time: timestamppb.New(time.Unix(1_700_000_000+int64(seq), 0)),
		Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: text}},
	}}
}

func TestOffline(t *testing.T) {
	recs := []*logv1.EventRecord{
		message("g", 1, "alice", "hi", []string{"alice", "bob", "carol", "dave"}, "dave"),
		// Not a message: nobody is notified of a member joining.
		{RecipientIds: []string{"alice", "bob", "carol"}, Event: &chatv1.Event{ConversationId: "g", Seq: 2, SenderId: "alice",
			Body: &chatv1.Event_MemberAdded{MemberAdded: &chatv1.MemberAdded{UserId: "carol"}}}},
		// A receipt carries no event.
		{RecipientIds: []string{"carol"}, Receipt: &chatv1.Receipt{ConversationId: "g", UserId: "bob"}},
	}
	// bob has a connected device; carol and dave have none, and dave
	// muted the conversation; alice sent it.
	got := Offline(recs, map[string]bool{"bob": true}, false)
	if len(got) != 1 || got[0].GetUserId() != "carol" || got[0].GetSeq() != 1 || got[0].GetText() != "" || got[0].GetSenderId() != "alice" {
		t.Fatalf("Offline = %v, want carol's notification of seq 1 without text", got)
	}
	if got := Offline(recs, map[string]bool{"bob": true}, true); got[0].GetText() != "hi" {
		t.Fatalf("with IncludeText: text %q, want hi", got[0].GetText())
	}
}

// TestOfflineInboxItems: a contact request or an invitation in an
// offline user's inbox notifies them, from who asked; their own request,
// an answer, or a muted inbox does not.
func TestOfflineInboxItems(t *testing.T) {
	item := func(seq uint64, owner string, body any, muted ...string) *logv1.EventRecord {
		ev := &chatv1.Event{ConversationId: "inbox-" + owner, Seq: seq, EventId: "i" + owner + string(rune('0'+seq))}
		switch b := body.(type) {
		case *chatv1.ContactUpdated:
			ev.Body = &chatv1.Event_ContactUpdated{ContactUpdated: b}
		case *chatv1.InvitationUpdated:
			ev.Body = &chatv1.Event_InvitationUpdated{InvitationUpdated: b}
		}
		return &logv1.EventRecord{RecipientIds: []string{owner}, MutedIds: muted, Event: ev}
	}
	recs := []*logv1.EventRecord{
		item(2, "bob", &chatv1.ContactUpdated{UserId: "alice", OwnerId: "bob", Action: chatv1.ContactAction_CONTACT_ACTION_REQUESTED}),
		item(2, "alice", &chatv1.ContactUpdated{UserId: "bob", OwnerId: "alice", Action: chatv1.ContactAction_CONTACT_ACTION_REQUESTED, Outgoing: true}),
		item(3, "bob", &chatv1.InvitationUpdated{ConversationId: "g", InviterId: "carol", OwnerId: "bob", Action: chatv1.InvitationAction_INVITATION_ACTION_INVITED}),
		item(4, "bob", &chatv1.InvitationUpdated{ConversationId: "g", InviterId: "carol", OwnerId: "bob", Action: chatv1.InvitationAction_INVITATION_ACTION_ACCEPTED}),
		item(2, "dave", &chatv1.ContactUpdated{UserId: "alice", OwnerId: "dave", Action: chatv1.ContactAction_CONTACT_ACTION_REQUESTED}, "dave"),
		item(2, "erin", &chatv1.ContactUpdated{UserId: "alice", OwnerId: "erin", Action: chatv1.ContactAction_CONTACT_ACTION_ACCEPTED}),
	}
	var got []string
	for _, n := range Offline(recs, map[string]bool{}, true) {
		got = append(got, n.GetUserId()+" "+n.GetKind()+" from "+n.GetSenderId()+" text="+n.GetText())
	}
	want := "[bob contact_request from alice text= bob invitation from carol text=]"
	if fmt.Sprint(got) != want {
		t.Fatalf("Offline = %v, want %s", got, want)
	}
	if c := Collapse([]*logv1.NotificationRecord{{UserId: "carol", ConversationId: "g", Seq: 1}}); c[0].Kind != KindMessage {
		t.Fatalf("a record without a kind collapses to kind %q, want %q", c[0].Kind, KindMessage)
	}
}

func TestCollapse(t *testing.T) {
	ns := []*logv1.NotificationRecord{
		{UserId: "carol", ConversationId: "g", Seq: 4, SenderId: "alice", Text: "four"},
		{UserId: "dave", ConversationId: "g", Seq: 4, SenderId: "alice", Text: "four"},
		{UserId: "carol", ConversationId: "h", Seq: 1, SenderId: "bob", Text: "other"},
		{UserId: "carol", ConversationId: "g", Seq: 6, SenderId: "bob", Text: "six"},
		// A replayed record of an earlier message does not win.
		{UserId: "carol", ConversationId: "g", Seq: 5, SenderId: "alice", Text: "five"},
	}
	got := Collapse(ns)
	if len(got) != 3 {
		t.Fatalf("Collapse = %+v, want 3 entries (carol/g, dave/g, carol/h)", got)
	}
	if c := got[0]; c.UserID != "carol" || c.ConversationID != "g" || c.Count != 3 || c.LastSeq != 6 || c.SenderID != "bob" || c.Text != "six" {
		t.Fatalf("carol/g = %+v, want 3 collapsed into seq 6 from bob", c)
	}
	if got[1].UserID != "dave" || got[1].Count != 1 || got[2].ConversationID != "h" {
		t.Fatalf("order or counts: %+v", got)
	}
}

func TestCheckWebhook(t *testing.T) {
	for url, ok := range map[string]bool{
		"https://push.example.com/parley": true,
		"http://127.0.0.1:9000/hook":      true,
		"http://localhost/hook":           true,
		"http://push.example.com/hook":    false,
		"ftp://push.example.com":          false,
		"://bad":                          false,
	} {
		if err := checkWebhook(url); (err == nil) != ok {
			t.Errorf("checkWebhook(%q) = %v, want ok %v", url, err, ok)
		}
	}
}

// hook is a webhook that answers the statuses given, then 200, and keeps
// what it was sent.
type hook struct {
	mu       sync.Mutex
	statuses []int
	bodies   []WebhookBody
	sigs     []string
	calls    atomic.Int32
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.calls.Add(1)
	data, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.statuses) > 0 {
		code := h.statuses[0]
		h.statuses = h.statuses[1:]
		w.WriteHeader(code)
		return
	}
	var b WebhookBody
	if err := json.Unmarshal(data, &b); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.bodies = append(h.bodies, b)
	h.sigs = append(h.sigs, r.Header.Get("X-Parley-Signature")+"|"+Sign([]byte("hook-secret"), data))
}

func notificationRecords(t *testing.T, ns ...*logv1.NotificationRecord) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for i, n := range ns {
		v, err := proto.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &kgo.Record{Topic: topics.Notifications, Key: []byte(n.GetUserId()), Value: v, Offset: int64(i)})
	}
	return out
}

func testNotifier(t *testing.T, cl *kgo.Client, url string) *notifier {
	t.Helper()
	cfg := NotifyConfig{Webhook: url, Secret: []byte("hook-secret"), Attempts: 3, Backoff: time.Millisecond}
	cfg.defaults()
	return &notifier{cfg: cfg, cl: cl, http: &http.Client{}, log: slog.New(slog.DiscardHandler), metrics: newNotifyMetrics(prometheus.NewRegistry())}
}

func TestNotifierRetriesThenDelivers(t *testing.T) {
	h := &hook{statuses: []int{http.StatusServiceUnavailable, http.StatusTooManyRequests}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	n := testNotifier(t, nil, srv.URL)
	recs := notificationRecords(t,
		&logv1.NotificationRecord{UserId: "carol", ConversationId: "g", Seq: 1, SenderId: "alice"},
		&logv1.NotificationRecord{UserId: "carol", ConversationId: "g", Seq: 2, SenderId: "alice"})
	if !n.handle(context.Background(), recs) {
		t.Fatal("handle = false, want the batch delivered")
	}
	if h.calls.Load() != 3 || len(h.bodies) != 1 {
		t.Fatalf("%d POSTs, %d accepted; want 2 refused then 1 accepted", h.calls.Load(), len(h.bodies))
	}
	got := h.bodies[0].Notifications
	if len(got) != 1 || got[0].Count != 2 || got[0].LastSeq != 2 {
		t.Fatalf("delivered %+v, want one entry for carol/g counting 2 up to seq 2", got)
	}
	if sig := h.sigs[0]; sig[:len(sig)/2] != sig[len(sig)/2+1:] {
		t.Fatalf("signature header|expected = %s", sig)
	}
}

func TestNotifierSetsAsideWhatTheWebhookKeepsRefusing(t *testing.T) {
	brokers, cl := topicstest.Cluster(t, 1)
	for name, statuses := range map[string][]int{
		"5xx every time": {500, 502, 503, 504},
		"4xx at once":    {400},
	} {
		t.Run(name, func(t *testing.T) {
			h := &hook{statuses: statuses}
			srv := httptest.NewServer(h)
			defer srv.Close()
			n := testNotifier(t, cl, srv.URL)
			recs := notificationRecords(t, &logv1.NotificationRecord{UserId: "carol", ConversationId: "g", Seq: 1})
			recs = append(recs, &kgo.Record{Topic: topics.Notifications, Value: []byte{0xff}})
			if !n.handle(context.Background(), recs) {
				t.Fatal("handle = false, want the batch set aside")
			}
			want := int32(3) // Attempts
			if statuses[0] == 400 {
				want = 1
			}
			if h.calls.Load() != want || len(h.bodies) != 0 {
				t.Fatalf("%d POSTs, %d accepted; want %d refused", h.calls.Load(), len(h.bodies), want)
			}
		})
	}
	// Each run set aside the undecodable record and the refused one.
	got := topicstest.Read(t, brokers, topics.DeadLetter, 4)
	reasons := map[string]int{}
	for _, r := range got {
		for _, h := range r.Headers {
			if h.Key == records.HeaderReason {
				reasons[string(h.Value)]++
			}
		}
	}
	if reasons[ReasonWebhook] != 2 || reasons[records.ReasonUndecodable] != 2 {
		t.Fatalf("dead letters by reason %v, want 2 webhook and 2 undecodable", reasons)
	}
}

package platform_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/services/fanout"
	"github.com/parleychat/parley/services/platform"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// webhook records what fan-out's notifier posts.
type webhook struct {
	mu  sync.Mutex
	got []fanout.Notification
	bad []string
}

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	data, _ := io.ReadAll(r.Body)
	w.mu.Lock()
	defer w.mu.Unlock()
	if got, want := r.Header.Get("X-Parley-Signature"), fanout.Sign([]byte("notify-secret"), data); got != want {
		w.bad = append(w.bad, "signature "+got)
	}
	var b fanout.WebhookBody
	if err := json.Unmarshal(data, &b); err != nil {
		w.bad = append(w.bad, "body "+string(data))
	}
	w.got = append(w.got, b.Notifications...)
}

func (w *webhook) snapshot() ([]fanout.Notification, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]fanout.Notification(nil), w.got...), append([]string(nil), w.bad...)
}

// startNotifying starts the platform with its notifier posting to a
// webhook of the test's, signed with "notify-secret".
func startNotifying(t *testing.T) (*webhook, *env, func()) {
	t.Helper()
	hook := &webhook{}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(),
		Notify: fanout.NotifyConfig{Webhook: srv.URL, Secret: []byte("notify-secret"), Backoff: 10 * time.Millisecond}})
	return hook, e, stop
}

// TestOfflineNotificationsReachTheWebhook: a message to a group notifies,
// through the webhook, the members with no connected device, and neither
// the member who is online, nor the offline one who muted the
// conversation, nor the sender; without -notify-text no text leaves.
func TestOfflineNotificationsReachTheWebhook(t *testing.T) {
	hook, e, stop := startNotifying(t)
	defer stop()
	ctx := tctx(t)

	alice := e.dial("alice", "alice-phone", false)
	bob := e.dial("bob", "bob-phone", false)
	acc, err := alice.CreateGroup(ctx, "team", "bob", "carol", "dave", "erin")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	// dave mutes the conversation and goes away; erin comes and goes
	// without muting; carol never connects. Both leavers must be offline
	// for presence before the messages, which alice watches: erin's
	// notifications then show that fan-out sees them as offline too.
	dave := e.dial("dave", "dave-phone", false)
	if _, err := dave.SetMuted(ctx, conv, true); err != nil {
		t.Fatal(err)
	}
	erin := e.dial("erin", "erin-phone", false)
	watch(t, alice.Client, "dave", "erin")
	erin.Close()
	dave.Close()
	for gone := map[string]bool{}; len(gone) < 2; {
		select {
		case p := <-alice.PresenceUpdates():
			if p.GetState() == chatv1.PresenceState_PRESENCE_STATE_OFFLINE {
				gone[p.GetUserId()] = true
			}
		case <-ctx.Done():
			t.Fatal("dave and erin never showed offline")
		}
	}

	var last uint64
	for _, text := range []string{"lunch?", "12:30 at the usual place"} {
		a, err := alice.Send(ctx, conv, text)
		if err != nil {
			t.Fatal(err)
		}
		last = a.GetSeq()
	}
	bob.upTo(t, conv, last)

	// carol's and erin's notifications arrive (one POST per poll, so
	// one or two entries each); once both have the last message, every
	// record of both batches was produced, so nothing else can come.
	var got []fanout.Notification
	deadline := time.Now().Add(20 * time.Second)
	for {
		var bad []string
		got, bad = hook.snapshot()
		if len(bad) > 0 {
			t.Fatalf("the webhook got bad POSTs: %v", bad)
		}
		done := map[string]bool{}
		for _, n := range got {
			if n.LastSeq == last {
				done[n.UserID] = true
			}
		}
		if done["carol"] && done["erin"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification of seq %d for carol and erin after 20s; got %+v", last, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	count := map[string]int{}
	for _, n := range got {
		if (n.UserID != "carol" && n.UserID != "erin") || n.ConversationID != conv || n.SenderID != "alice" || n.Text != "" {
			t.Fatalf("notification %+v: want only carol's and erin's, from alice, without text", n)
		}
		count[n.UserID] += n.Count
	}
	if count["carol"] != 2 || count["erin"] != 2 {
		t.Fatalf("notified messages by user %v, want 2 each for carol and erin: %+v", count, got)
	}
	body := e.metricsPage(t)
	if !strings.Contains(body, "parley_notifications_emitted_total 4\n") {
		t.Fatalf("emitted notifications: want exactly carol's and erin's 4 (not bob's, dave's or alice's):\n%s", grepLines(body, "parley_notification"))
	}
}

// watch makes users the ones whose presence c watches, once the
// conversation that allows it is listed.
func watch(t *testing.T, c *sdk.Client, users ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.WatchPresence(context.Background(), users...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch %v: %v", users, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricsPage is the platform's /metrics (every service's registry).
func (e *env) metricsPage(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + e.p.Edge.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestContactRequestNotifiesOfflineUser: a contact request and an
// invitation to a user with no connected device reach the webhook, as
// kinds of their own from who asked; the same to a connected user, and
// the asker's own inbox item, do not.
func TestContactRequestNotifiesOfflineUser(t *testing.T) {
	hook, e, stop := startNotifying(t)
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "alice-phone", false)
	bob := e.dial("bob", "bob-phone", false)
	if _, err := alice.RequestContact(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.RequestContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	club, err := alice.CreateConsentGroup(ctx, "club")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMember(ctx, club.GetConversationId(), "carol"); err != nil {
		t.Fatal(err)
	}
	// bob, online, has his request (seq 2): its batch was pushed, so
	// its notifications, had it any, were produced before.
	bob.upTo(t, bob.InboxID, 2)
	// Both items are in carol's inbox: one POST may collapse them into
	// one entry (counting 2, of the latest's kind), or two may carry one
	// each.
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, bad := hook.snapshot()
		if len(bad) > 0 {
			t.Fatalf("the webhook got bad POSTs: %v", bad)
		}
		count, kinds := 0, []string{}
		for _, n := range got {
			if n.UserID != "carol" || n.SenderID != "alice" || n.Text != "" || n.ConversationID != membership.InboxID("carol") {
				t.Fatalf("notification %+v: want only carol's inbox, from alice, without text", n)
			}
			count += n.Count
			kinds = append(kinds, n.Kind)
		}
		if count == 2 {
			if k := strings.Join(kinds, " "); k != fanout.KindContactRequest+" "+fanout.KindInvitation && k != fanout.KindInvitation {
				t.Fatalf("kinds %q, want the request's then the invitation's, or the invitation's alone", k)
			}
			break
		}
		if count > 2 || time.Now().After(deadline) {
			t.Fatalf("carol's notifications: %+v, want 2 (a request and an invitation)", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

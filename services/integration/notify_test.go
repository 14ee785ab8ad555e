package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/services/fanout"
)

// TestOfflineNotificationsOnTheStack (real stack): fan-out, as its own
// process with a webhook configured, notifies the group member who has no
// connected device of a message, through parley.notifications.v1 on real
// Kafka, and not the member online on the other edge nor the sender.
func TestOfflineNotificationsOnTheStack(t *testing.T) {
	s := requireStack(t)
	var mu sync.Mutex
	var got []fanout.Notification
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b fanout.WebhookBody
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &b); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, b.Notifications...)
		mu.Unlock()
	}))
	defer srv.Close()
	s.env = append(slices.Clip(s.env), "PARLEY_NOTIFY_WEBHOOK="+srv.URL)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice, bob := c.dial(0, "alice", "a1"), c.dial(1, "bob", "b1")
	conv := createGroups(t, ctx, alice, 1, "notify", "bob", "carol")[0]
	acc, err := alice.Send(ctx, conv, "anyone there?")
	if err != nil {
		t.Fatal(err)
	}
	for seen := false; !seen; {
		select {
		case ev := <-bob.Events():
			seen = ev.GetConversationId() == conv && ev.GetSeq() == acc.GetSeq()
		case <-ctx.Done():
			t.Fatal("bob did not get the message")
		}
	}
	for {
		mu.Lock()
		n := slices.Clone(got)
		mu.Unlock()
		if len(n) > 0 && n[len(n)-1].LastSeq == acc.GetSeq() {
			if len(n) != 1 || n[0].UserID != "carol" || n[0].ConversationID != conv || n[0].Count != 1 {
				t.Fatalf("notifications %+v, want carol's one", n)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no notification for carol; got %+v", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := c.procs["fanout"].metric(t, "parley_notifications_emitted_total"); v != 1 {
		t.Fatalf("fan-out emitted %v notifications, want carol's 1 (not bob's or alice's)", v)
	}
}

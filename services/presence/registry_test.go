package presence

import (
	"fmt"
	"testing"
	"time"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func sess(id, user string) *presencev1.Session {
	return &presencev1.Session{SessionId: id, UserId: user, DeviceId: "d-" + id}
}

func addrs(locs []*presencev1.UserLocation) string {
	out := ""
	for _, l := range locs {
		out += fmt.Sprintf("%s@%v ", l.GetUserId(), l.GetPushAddresses())
	}
	return out
}

func TestRegistry(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	r := NewRegistry(10*time.Second, c.now)

	if !r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s1", "alice"), sess("s2", "bob")}}) {
		t.Fatal("snapshot from new node refused")
	}
	if r.Report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Connected: []*presencev1.Session{sess("s3", "alice")}}) {
		t.Fatal("delta from unknown node must ask for a snapshot")
	}
	if got := addrs(r.Locate([]string{"alice", "bob", "carol"})); got != "alice@[a1 a2] bob@[a1] " {
		t.Fatalf("locate = %q", got)
	}

	t.Run("disconnect", func(t *testing.T) {
		r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", DisconnectedSessionIds: []string{"s2", "unknown"}})
		if got := addrs(r.Locate([]string{"bob"})); got != "" {
			t.Fatalf("bob after disconnect = %q", got)
		}
	})
	t.Run("duplicate connect counted once", func(t *testing.T) {
		r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{sess("s1", "alice")}})
		r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", DisconnectedSessionIds: []string{"s1"}})
		if got := addrs(r.Locate([]string{"alice"})); got != "alice@[a2] " {
			t.Fatalf("alice = %q", got)
		}
	})
	t.Run("lease lapse removes the node", func(t *testing.T) {
		c.t = c.t.Add(5 * time.Second)
		r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{sess("s4", "dave")}})
		c.t = c.t.Add(6 * time.Second) // e2 last reported 11 s ago
		if got := addrs(r.Locate([]string{"alice", "dave"})); got != "dave@[a1] " {
			t.Fatalf("before expiry sweep, expired node must not be located: %q", got)
		}
		if gone := r.Expire(); fmt.Sprint(gone) != "[e2]" {
			t.Fatalf("expired = %v", gone)
		}
		if r.Report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2"}) {
			t.Fatal("expired node must be asked for a snapshot")
		}
	})
	t.Run("snapshot replaces", func(t *testing.T) {
		r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s9", "erin")}})
		if got := addrs(r.Locate([]string{"dave", "erin"})); got != "erin@[a1] " {
			t.Fatalf("after snapshot = %q", got)
		}
	})
}

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

func statuses(ss []*presencev1.UserStatus) string {
	out := ""
	for _, s := range ss {
		seen := "-"
		if s.GetLastSeen() != nil {
			seen = fmt.Sprint(s.GetLastSeen().AsTime().Unix())
		}
		out += fmt.Sprintf("%s:%v@%s ", s.GetUserId(), s.GetOnline(), seen)
	}
	return out
}

// TestStatus: online while any live node holds a session; offline with
// last seen when the last session ends, or at the last heartbeat of a node
// that died, as soon as its lease lapses (before Expire).
func TestStatus(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	r := NewRegistry(10*time.Second, c.now)
	r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s1", "alice"), sess("s2", "bob")}})
	r.Report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Snapshot: true, Connected: []*presencev1.Session{sess("s3", "bob")}})
	if got := statuses(r.Status([]string{"alice", "bob", "carol"})); got != "alice:true@- bob:true@- carol:false@- " {
		t.Fatalf("status = %q", got)
	}
	c.t = c.t.Add(3 * time.Second) // 1003: alice closes her only session
	r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", DisconnectedSessionIds: []string{"s1"}})
	// e2 keeps beating, e1 dies after its beat at 1003.
	c.t = c.t.Add(5 * time.Second)
	r.Report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2"})
	c.t = c.t.Add(6 * time.Second) // 1014: e1's lease (1013) lapsed; bob still on e2
	r.Report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", DisconnectedSessionIds: []string{"s3"}})
	if got := statuses(r.Status([]string{"alice", "bob"})); got != "alice:false@1003 bob:false@1014 " {
		t.Fatalf("status = %q", got)
	}
	// A user whose only node died: offline at once, seen at its last beat.
	r.Report(&presencev1.ReportRequest{NodeId: "e3", PushAddress: "a3", Snapshot: true, Connected: []*presencev1.Session{sess("s4", "carol")}})
	c.t = c.t.Add(11 * time.Second) // 1025: e3 beat at 1014, lease to 1024
	if got := statuses(r.Status([]string{"carol"})); got != "carol:false@1014 " {
		t.Fatalf("before expire: %q", got)
	}
	r.Expire()
	if got := statuses(r.Status([]string{"carol"})); got != "carol:false@1014 " {
		t.Fatalf("after expire: %q", got)
	}
}

// TestAway: a user idle on every live device is away; one active device
// makes them online; idleness is reported by reporting the session again.
func TestAway(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	r := NewRegistry(10*time.Second, c.now)
	idle := func(id string, v bool) *presencev1.Session {
		s := sess(id, "bob")
		s.Idle = v
		return s
	}
	st := func() string {
		s := r.Status([]string{"bob"})[0]
		return fmt.Sprintf("online=%v away=%v", s.GetOnline(), s.GetAway())
	}
	r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{idle("s1", false), idle("s2", false)}})
	r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{idle("s1", true)}})
	if got := st(); got != "online=true away=false" {
		t.Fatalf("one of two idle: %s", got)
	}
	r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{idle("s2", true)}})
	if got := st(); got != "online=true away=true" {
		t.Fatalf("both idle: %s", got)
	}
	r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{idle("s1", false)}})
	if got := st(); got != "online=true away=false" {
		t.Fatalf("back: %s", got)
	}
	if got := addrs(r.Locate([]string{"bob"})); got != "bob@[a1] " {
		t.Fatalf("a re-reported session counted twice? locate %q", got)
	}
	r.Report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", DisconnectedSessionIds: []string{"s1", "s2"}})
	if got := st(); got != "online=false away=false" {
		t.Fatalf("gone: %s", got)
	}
}

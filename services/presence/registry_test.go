package presence

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
	"github.com/parleychat/parley/pkg/server/presenceclient"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
)

// clock is a time tests move by hand; the services read it concurrently.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	lease = 10 * time.Second
	// settle and watchLease are real time, not the test clock's.
	settle     = 2 * time.Second
	watchLease = 600 * time.Millisecond
)

// deployment is a set of presence instances on one Kafka cluster, reached
// through the client edge and fan-out use.
type deployment struct {
	t       *testing.T
	brokers []string
	clock   *clock
	svcs    []*Service
	stops   []func()
	client  *presenceclient.Client
}

// startPresence runs n instances on a kfake cluster with 4 partitions.
func startPresence(t *testing.T, n int) *deployment {
	t.Helper()
	brokers, _ := topicstest.Cluster(t, 4)
	d := &deployment{t: t, brokers: brokers, clock: &clock{t: time.Unix(1000, 0)}}
	d.start(n)
	return d
}

func (d *deployment) start(n int) {
	d.t.Helper()
	d.launch(n)
	topicstest.WaitFor(d.t, "presence replayed", func() bool {
		for _, s := range d.svcs {
			if !s.Probe.Ready() {
				return false
			}
		}
		return true
	})
}

// launch starts n instances without waiting for them to serve.
func (d *deployment) launch(n int) {
	d.t.Helper()
	var addrs []string
	for i := range n {
		s, err := newService(Config{GRPCAddr: "127.0.0.1:0", Brokers: d.brokers, Instance: i, Instances: n, Lease: lease, Settle: settle, WatchLease: watchLease, Logger: slog.New(slog.DiscardHandler)}, d.clock.now)
		if err != nil {
			d.t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		stop := sync.OnceFunc(func() {
			cancel()
			if err := <-done; err != nil {
				d.t.Error(err)
			}
		})
		d.t.Cleanup(stop)
		d.svcs, d.stops = append(d.svcs, s), append(d.stops, stop)
		addrs = append(addrs, s.Addr())
	}
	c, err := presenceclient.Dial(addrs, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	d.client = c
}

// restart stops every instance and starts n new ones on the same log.
func (d *deployment) restart(n int) {
	for _, stop := range d.stops {
		stop()
	}
	d.svcs, d.stops = nil, nil
	d.start(n)
}

func (d *deployment) report(req *presencev1.ReportRequest) *presencev1.ReportResponse {
	d.t.Helper()
	resp, err := d.client.Report(context.Background(), req)
	if err != nil {
		d.t.Fatal(err)
	}
	return resp
}

// expire runs every instance's lease sweep now, as its ticker would.
func (d *deployment) expire() {
	for _, s := range d.svcs {
		s.expire(context.Background())
	}
}

func (d *deployment) locate(users ...string) string {
	d.t.Helper()
	resp, err := d.client.Locate(context.Background(), &presencev1.LocateRequest{UserIds: users})
	if err != nil {
		d.t.Fatal(err)
	}
	byUser := map[string][]string{}
	for _, l := range resp.GetLocations() {
		byUser[l.GetUserId()] = l.GetPushAddresses()
	}
	out := ""
	for _, u := range users {
		if a, ok := byUser[u]; ok {
			out += fmt.Sprintf("%s@%v ", u, a)
		}
	}
	return out
}

func (d *deployment) status(users ...string) string {
	d.t.Helper()
	resp, err := d.client.Status(context.Background(), &presencev1.StatusRequest{UserIds: users})
	if err != nil {
		d.t.Fatal(err)
	}
	out := ""
	for _, s := range resp.GetStatuses() {
		seen := "-"
		if s.GetLastSeen() != nil {
			seen = fmt.Sprint(s.GetLastSeen().AsTime().Unix())
		}
		state := "offline"
		switch {
		case s.GetAway():
			state = "away"
		case s.GetOnline():
			state = "online"
		}
		out += fmt.Sprintf("%s:%s@%s ", s.GetUserId(), state, seen)
	}
	return out
}

func sess(id, user string) *presencev1.Session {
	return &presencev1.Session{SessionId: id, UserId: user, DeviceId: "d-" + id}
}

// users on both instances of two: the tests below cross the split.
var alice, bob, carol, dave, erin = "alice", "bob", "carol", "dave", "erin"

func TestUsersSpreadOverBothInstances(t *testing.T) {
	owners := map[int]bool{}
	for _, u := range []string{alice, bob, carol, dave, erin} {
		owners[topics.UserShard(u, 2)] = true
	}
	if len(owners) != 2 {
		t.Fatalf("the test users all belong to one instance of two: %v", owners)
	}
}

func TestRegistry(t *testing.T) {
	d := startPresence(t, 2)
	if d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s1", alice), sess("s2", bob)}}).GetSendSnapshot() {
		t.Fatal("snapshot from new node refused")
	}
	if !d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Connected: []*presencev1.Session{sess("s3", alice)}}).GetSendSnapshot() {
		t.Fatal("delta from unknown node must ask for a snapshot")
	}
	if got := d.locate(alice, bob, carol); got != "alice@[a1] bob@[a1] " {
		t.Fatalf("the unknown node's delta must not count: locate = %q", got)
	}
	d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Snapshot: true, Connected: []*presencev1.Session{sess("s3", alice)}})
	if got := d.locate(alice, bob, carol); got != "alice@[a1 a2] bob@[a1] " {
		t.Fatalf("locate = %q", got)
	}

	t.Run("disconnect", func(t *testing.T) {
		d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Disconnected: []*presencev1.Session{sess("s2", bob), sess("unknown", carol)}})
		if got := d.locate(bob); got != "" {
			t.Fatalf("bob after disconnect = %q", got)
		}
	})
	t.Run("duplicate connect counted once", func(t *testing.T) {
		d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{sess("s1", alice)}})
		d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Disconnected: []*presencev1.Session{sess("s1", alice)}})
		if got := d.locate(alice); got != "alice@[a2] " {
			t.Fatalf("alice = %q", got)
		}
	})
	t.Run("lease lapse removes the node", func(t *testing.T) {
		d.clock.add(5 * time.Second)
		d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{sess("s4", dave)}})
		d.clock.add(6 * time.Second) // e2 last reported 11 s ago
		if got := d.locate(alice, dave); got != "dave@[a1] " {
			t.Fatalf("before the sweep, a lapsed node must not be located: %q", got)
		}
		d.expire()
		if !d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2"}).GetSendSnapshot() {
			t.Fatal("an expired node must be asked for a snapshot")
		}
	})
	t.Run("snapshot replaces", func(t *testing.T) {
		d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s9", erin)}})
		if got := d.locate(dave, erin); got != "erin@[a1] " {
			t.Fatalf("after snapshot = %q", got)
		}
	})
}

// TestStatus: online while any live node holds a session; offline with
// last seen when the last session ends, or at the last heartbeat of a node
// that died, as soon as its lease lapses (before the sweep).
func TestStatus(t *testing.T) {
	d := startPresence(t, 2)
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s1", alice), sess("s2", bob)}})
	d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Snapshot: true, Connected: []*presencev1.Session{sess("s3", bob)}})
	if got := d.status(alice, bob, carol); got != "alice:online@- bob:online@- carol:offline@- " {
		t.Fatalf("status = %q", got)
	}
	d.clock.add(3 * time.Second) // 1003: alice closes her only session
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Disconnected: []*presencev1.Session{sess("s1", alice)}})
	// e2 keeps beating, e1 dies after its beat at 1003.
	d.clock.add(5 * time.Second)
	d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2"})
	d.clock.add(6 * time.Second) // 1014: e1's lease (1013) lapsed; bob still on e2
	d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Disconnected: []*presencev1.Session{sess("s3", bob)}})
	if got := d.status(alice, bob); got != "alice:offline@1003 bob:offline@1014 " {
		t.Fatalf("status = %q", got)
	}
	// A user whose only node died: offline at once, seen at its last beat.
	d.report(&presencev1.ReportRequest{NodeId: "e3", PushAddress: "a3", Snapshot: true, Connected: []*presencev1.Session{sess("s4", carol)}})
	d.clock.add(11 * time.Second) // 1025: e3 beat at 1014, lease to 1024
	if got := d.status(carol); got != "carol:offline@1014 " {
		t.Fatalf("before the sweep: %q", got)
	}
	d.expire()
	if got := d.status(carol); got != "carol:offline@1014 " {
		t.Fatalf("after the sweep: %q", got)
	}
}

// TestAway: a user idle on every live device is away; one active device
// makes them online; idleness is reported by reporting the session again.
func TestAway(t *testing.T) {
	d := startPresence(t, 2)
	idle := func(id string, v bool) *presencev1.Session {
		s := sess(id, bob)
		s.Idle = v
		return s
	}
	report := func(s ...*presencev1.Session) {
		d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: s})
	}
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{idle("s1", false), idle("s2", false)}})
	report(idle("s1", true))
	if got := d.status(bob); got != "bob:online@- " {
		t.Fatalf("one of two idle: %s", got)
	}
	report(idle("s2", true))
	if got := d.status(bob); got != "bob:away@- " {
		t.Fatalf("both idle: %s", got)
	}
	report(idle("s1", false))
	if got := d.status(bob); got != "bob:online@- " {
		t.Fatalf("back: %s", got)
	}
	if got := d.locate(bob); got != "bob@[a1] " {
		t.Fatalf("a re-reported session counted twice? locate %q", got)
	}
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Disconnected: []*presencev1.Session{idle("s1", false), idle("s2", true)}})
	if got := d.status(bob); got != "bob:offline@1000 " {
		t.Fatalf("gone: %s", got)
	}
}

// TestRestartRebuildsFromTheLog: instances stopped and started again (in
// another split, too) answer exactly as before from the topic alone, and a
// node that died while they were down is offline at its last heartbeat,
// never online.
func TestRestartRebuildsFromTheLog(t *testing.T) {
	d := startPresence(t, 2)
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s1", alice), sess("s2", bob), sess("s3", carol)}})
	d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Snapshot: true, Connected: []*presencev1.Session{sess("s4", bob), sess("s5", dave)}})
	idleDave := sess("s5", dave)
	idleDave.Idle = true
	d.clock.add(2 * time.Second) // 1002
	d.report(&presencev1.ReportRequest{NodeId: "e2", PushAddress: "a2", Connected: []*presencev1.Session{idleDave}})
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Disconnected: []*presencev1.Session{sess("s3", carol)}})
	users := []string{alice, bob, carol, dave, erin}
	wantStatus := "alice:online@- bob:online@- carol:offline@1002 dave:away@- erin:offline@- "
	wantLocate := "alice@[a1] bob@[a1 a2] dave@[a2] "
	if got := d.status(users...); got != wantStatus {
		t.Fatalf("before restart: %q", got)
	}

	for _, n := range []int{2, 1, 4} {
		d.restart(n)
		if got := d.status(users...); got != wantStatus {
			t.Fatalf("after restart as %d instances: status %q, want %q", n, got, wantStatus)
		}
		if got := d.locate(users...); got != wantLocate {
			t.Fatalf("after restart as %d instances: locate %q, want %q", n, got, wantLocate)
		}
	}
	if d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1"}).GetSendSnapshot() {
		t.Fatal("a node known from the log was asked for a snapshot")
	}

	// Presence is down past the lease: e2 dies (its last beat was at
	// 1002); e1 lives but cannot report until presence is back.
	for _, stop := range d.stops {
		stop()
	}
	d.clock.add(15 * time.Second) // 1017
	d.svcs, d.stops = nil, nil
	d.launch(2)
	// Once replayed, reports are taken (a new node's here) while queries
	// wait for the silent nodes: refused rather than wrong.
	topicstest.WaitFor(t, "reports taken", func() bool {
		_, err := d.client.Report(context.Background(), &presencev1.ReportRequest{NodeId: "e3", PushAddress: "a3", Snapshot: true})
		return err == nil
	})
	if got, err := d.client.Status(context.Background(), &presencev1.StatusRequest{UserIds: users}); err == nil {
		t.Fatalf("answered %v before the silent nodes could report again", got.GetStatuses())
	}
	var resp *presencev1.ReportResponse
	topicstest.WaitFor(t, "e1's report taken", func() bool {
		var err error
		resp, err = d.client.Report(context.Background(), &presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Snapshot: true, Connected: []*presencev1.Session{sess("s1", alice), sess("s2", bob)}})
		return err == nil
	})
	if resp.GetSendSnapshot() {
		t.Fatal("a snapshot was answered with a request for one")
	}
	topicstest.WaitFor(t, "presence settled", func() bool { return d.svcs[0].Probe.Ready() && d.svcs[1].Probe.Ready() })
	// e1 reported in time and is online; e2 never did and is ended at its
	// last beat; carol's session ended before the restart.
	if got := d.status(users...); got != "alice:online@- bob:online@- carol:offline@1002 dave:offline@1002 erin:offline@- " {
		t.Fatalf("after a restart past the lease: %q", got)
	}
	if got := d.locate(users...); got != "alice@[a1] bob@[a1] " {
		t.Fatalf("after a restart past the lease: locate %q", got)
	}
	d.restart(2)
	if got := d.status(users...); got != "alice:online@- bob:online@- carol:offline@1002 dave:offline@1002 erin:offline@- " {
		t.Fatalf("after one more restart: %q", got)
	}
}

// TestWrongInstanceRefused: a client that splits users differently (another
// instance count) is refused, not served from a shard that is not its.
func TestWrongInstanceRefused(t *testing.T) {
	d := startPresence(t, 2)
	var other string
	for _, u := range []string{alice, bob, carol, dave, erin} {
		if topics.UserShard(u, 2) == 1 {
			other = u
		}
	}
	if _, err := d.svcs[0].Status(context.Background(), &presencev1.StatusRequest{UserIds: []string{other}}); err == nil {
		t.Fatal("instance 0 answered for a user of instance 1")
	}
	if _, err := d.svcs[0].Report(context.Background(), &presencev1.ReportRequest{NodeId: "e1", PushAddress: "a1", Connected: []*presencev1.Session{sess("x", other)}}); err == nil {
		t.Fatal("instance 0 took a session of a user of instance 1")
	}
}

// TestBadRecordsSkipped: the registry ignores keys and values it cannot
// read instead of failing the instance.
func TestBadRecordsSkipped(t *testing.T) {
	r := NewRegistry(time.Now)
	for _, key := range []string{"", "s", "x\x00a", "s\x00a", "s\x00\x00b", "n\x00"} {
		if err := r.Apply([]byte(key), []byte{}); err == nil {
			t.Errorf("key %q applied", key)
		}
	}
	if err := r.Apply(sessionKey("a", "b"), []byte{0xff}); err == nil {
		t.Error("garbage value applied")
	}
	if err := r.Apply(nodeKey("n1"), nil); err != nil {
		t.Errorf("tombstone of an unknown node: %v", err)
	}
}

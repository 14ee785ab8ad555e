package presence

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// TestReportsWaitForWatchers: a report opening a session is answered only
// after every location watcher acknowledged the invalidation naming its
// user; a watcher that does not acknowledge loses its lease and its
// stream, and the report waits until that lease has run out; a report
// that only ends sessions does not wait.
func TestReportsWaitForWatchers(t *testing.T) {
	d := startPresence(t, 1)
	// Past the fence a fresh instance keeps for its predecessor's leases.
	time.Sleep(watchLease)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := d.client.Instances()[0].WatchLocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	if err := stream.Send(&presencev1.WatchLocationsRequest{LeaseRequest: 1}); err != nil {
		t.Fatal(err)
	}
	grant, err := stream.Recv()
	if err != nil || grant.GetLeaseGranted() != 1 || grant.GetLease().AsDuration() != watchLease {
		t.Fatalf("grant = %v, %v", grant, err)
	}
	holds := asked.Add(watchLease)

	// A new session: the report waits for the acknowledgement.
	const ackAfter = 200 * time.Millisecond
	answered := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "e1:1", Snapshot: true, Connected: []*presencev1.Session{sess("s1", bob)}})
		answered <- time.Since(start)
	}()
	inv, err := stream.Recv()
	if err != nil || inv.GetInvalidation() == 0 || len(inv.GetUserIds()) != 1 || inv.GetUserIds()[0] != bob {
		t.Fatalf("invalidation = %v, %v; want one naming bob", inv, err)
	}
	time.Sleep(ackAfter)
	select {
	case took := <-answered:
		t.Fatalf("the report was answered after %v, before the watcher acknowledged", took)
	default:
	}
	if err := stream.Send(&presencev1.WatchLocationsRequest{Ack: inv.GetInvalidation()}); err != nil {
		t.Fatal(err)
	}
	if took := <-answered; took < ackAfter {
		t.Fatalf("answered after %v", took)
	}
	if got := d.locate(bob); got != "bob@[e1:1] " {
		t.Fatalf("locate after the report: %q", got)
	}

	// Only an end: invalidated too, but not waited for.
	start = time.Now()
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "e1:1", Disconnected: []*presencev1.Session{sess("s1", bob)}})
	if took := time.Since(start); took > ackAfter {
		t.Fatalf("a report ending a session took %v with no acknowledgement", took)
	}
	if inv, err := stream.Recv(); err != nil || inv.GetUserIds()[0] != bob {
		t.Fatalf("invalidation of the end = %v, %v", inv, err)
	}

	// A watcher that stops acknowledging: renew its lease once more, then
	// stay silent. The report waits out the ack timeout and the lease.
	asked = time.Now()
	if err := stream.Send(&presencev1.WatchLocationsRequest{LeaseRequest: 2}); err != nil {
		t.Fatal(err)
	}
	if g, err := stream.Recv(); err != nil || g.GetLeaseGranted() != 2 {
		t.Fatalf("grant = %v, %v", g, err)
	}
	holds = asked.Add(watchLease)
	d.report(&presencev1.ReportRequest{NodeId: "e1", PushAddress: "e1:1", Connected: []*presencev1.Session{sess("s2", carol)}})
	if now := time.Now(); now.Before(holds) {
		t.Fatalf("the report was answered %v before the silent watcher's lease ran out", holds.Sub(now))
	}
	for {
		_, err := stream.Recv()
		if err == nil {
			continue // the invalidation it ignored
		}
		if status.Code(err) != codes.Aborted {
			t.Fatalf("the silent watcher's stream ended with %v, want Aborted", err)
		}
		break
	}
}

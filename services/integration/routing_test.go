package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
)

// TestRoutingPushesOnlyWhereRecipientsAre (real stack, two edges): fan-out
// pushes each event only to the edges holding a session of one of its
// recipients. alice is on edge 0, bob on edge 1, carol on both, dave
// offline; a group of alice's and dave's must reach edge 0 only, one of
// bob's and dave's edge 1 only, one of all three both. Each edge counts
// the deliveries it was pushed (parley_pushed_deliveries_total).
func TestRoutingPushesOnlyWhereRecipientsAre(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	alice := c.dial(0, "alice", "alice-0")
	bob := c.dial(1, "bob", "bob-1")
	carol0 := c.dial(0, "carol", "carol-0")
	carol1 := c.dial(1, "carol", "carol-1")
	const msgs = 10
	post := func(from *sdk.Client, title string, members ...string) string {
		g, err := from.CreateGroup(ctx, title, members...)
		if err != nil {
			t.Fatal(err)
		}
		for i := range msgs {
			if _, err := from.Send(ctx, g.GetConversationId(), fmt.Sprintf("%s %d", title, i)); err != nil {
				t.Fatal(err)
			}
		}
		return g.GetConversationId()
	}
	onlyEdge0 := post(alice, "edge 0 only", "dave")
	onlyEdge1 := post(bob, "edge 1 only", "dave")
	both := post(carol0, "both", "alice", "bob")
	const per = msgs + 1 // the creation and the messages

	// Every device gets exactly its conversations' events.
	want := map[*sdk.Client]map[string]int{
		alice:  {onlyEdge0: per, both: per},
		bob:    {onlyEdge1: per, both: per},
		carol0: {both: per},
		carol1: {both: per},
	}
	for dev, convs := range want {
		got := map[string]int{}
		total := 0
		for _, n := range convs {
			total += n
		}
		for n := 0; n < total; n++ {
			select {
			case ev := <-dev.Events():
				got[ev.GetConversationId()]++
			case <-ctx.Done():
				t.Fatalf("%s: %v of %v", dev.DeviceID, got, convs)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(convs) {
			t.Fatalf("%s got %v, want %v", dev.DeviceID, got, convs)
		}
	}
	// A push that should not have happened would have come with the
	// others; give stragglers a moment before counting.
	time.Sleep(time.Second)
	for edge, wantN := range map[string]float64{"edge0": 2 * per, "edge1": 2 * per} {
		got := c.procs[edge].metric(t, `parley_pushed_deliveries_total{kind="event",service="edge"}`)
		if got != wantN {
			t.Fatalf("%s was pushed %v event deliveries, want %v (its conversations only)", edge, got, wantN)
		}
	}
}

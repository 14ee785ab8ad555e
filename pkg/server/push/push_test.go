package push

import (
	"testing"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// TestPlanNamesEachUserOncePerEdge: whatever an item carries (here a
// typing indicator, as an edge routes them), each edge gets one delivery
// per item naming each of its users once, and users nowhere get nothing.
func TestPlanNamesEachUserOncePerEdge(t *testing.T) {
	ind := &chatv1.Typing{ConversationId: "c", UserId: "alice"}
	plan := Plan([]Item{{Delivery: &edgev1.Delivery{Typing: ind}, Recipients: []string{"bob", "carol", "bob", "dave"}}},
		[]*presencev1.UserLocation{
			{UserId: "bob", PushAddresses: []string{"e1", "e2", "e1"}},
			{UserId: "carol", PushAddresses: []string{"e2"}},
		})
	if len(plan) != 2 {
		t.Fatalf("plan for %d edges, want 2: %v", len(plan), plan)
	}
	for addr, want := range map[string][]string{"e1": {"bob"}, "e2": {"bob", "carol"}} {
		ds := plan[addr]
		if len(ds) != 1 || ds[0].GetTyping() != ind || len(ds[0].GetUserIds()) != len(want) {
			t.Fatalf("%s gets %v, want one indicator for %v", addr, ds, want)
		}
		for i, u := range want {
			if ds[0].GetUserIds()[i] != u {
				t.Fatalf("%s names %v, want %v", addr, ds[0].GetUserIds(), want)
			}
		}
	}
}

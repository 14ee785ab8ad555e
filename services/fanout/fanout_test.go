package fanout

import (
	"fmt"
	"testing"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

func rec(seq uint64, recipients ...string) *logv1.EventRecord {
	return &logv1.EventRecord{Event: &chatv1.Event{ConversationId: "c", Seq: seq}, RecipientIds: recipients}
}

func describe(plan map[string][]*edgev1.Delivery) map[string]string {
	out := map[string]string{}
	for addr, ds := range plan {
		s := ""
		for _, d := range ds {
			if r := d.GetReceipt(); r != nil {
				s += fmt.Sprintf("r(%s read %d)%v ", r.GetUserId(), r.GetReadSeq(), d.GetUserIds())
				continue
			}
			if f := d.GetFlags(); f != nil {
				s += fmt.Sprintf("f(%s muted=%v pinned=%v)%v ", f.GetUserId(), f.GetMuted(), f.GetPinned(), d.GetUserIds())
				continue
			}
			s += fmt.Sprintf("%d%v ", d.GetEvent().GetSeq(), d.GetUserIds())
		}
		out[addr] = s
	}
	return out
}

func TestPlan(t *testing.T) {
	locs := []*presencev1.UserLocation{
		{UserId: "alice", PushAddresses: []string{"e1", "e2"}},
		{UserId: "bob", PushAddresses: []string{"e2"}},
		{UserId: "carol", PushAddresses: []string{"e3"}},
	}
	plan := describe(Plan([]*logv1.EventRecord{
		rec(1, "alice", "bob", "dave"), // dave is offline
		rec(2, "bob"),
		rec(3, "alice", "carol"),
		{Receipt: &chatv1.Receipt{ConversationId: "c", UserId: "bob", ReadSeq: 3}, RecipientIds: []string{"alice", "bob"}},
		// A user's flags go to that user's devices alone.
		{Flags: &chatv1.ConversationFlags{ConversationId: "c", UserId: "alice", Pinned: true, Version: 1}, RecipientIds: []string{"alice"}},
	}, locs))
	want := map[string]string{
		"e1": "1[alice] 3[alice] r(bob read 3)[alice] f(alice muted=false pinned=true)[alice] ",
		"e2": "1[alice bob] 2[bob] 3[alice] r(bob read 3)[alice bob] f(alice muted=false pinned=true)[alice] ",
		"e3": "3[carol] ",
	}
	if fmt.Sprint(plan) != fmt.Sprint(want) {
		t.Fatalf("plan = %v\nwant   %v", plan, want)
	}
	if p := Plan([]*logv1.EventRecord{rec(1, "dave")}, locs); len(p) != 0 {
		t.Fatalf("an event with no online recipient must push nothing: %v", describe(p))
	}
}

func BenchmarkPlan(b *testing.B) {
	// 100 events of 50-member groups over 10 edges.
	var locs []*presencev1.UserLocation
	var members []string
	for u := range 500 {
		id := fmt.Sprintf("u%d", u)
		members = append(members, id)
		locs = append(locs, &presencev1.UserLocation{UserId: id, PushAddresses: []string{fmt.Sprintf("e%d", u%10)}})
	}
	var recs []*logv1.EventRecord
	for i := range 100 {
		recs = append(recs, rec(uint64(i+1), members[(i*50)%450:(i*50)%450+50]...))
	}
	b.ReportAllocs()
	for b.Loop() {
		Plan(recs, locs)
	}
}

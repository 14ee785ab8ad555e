package fanout

import (
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/records"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// FuzzPlanRecords decodes arbitrary bytes as an event record, the way the
// fan-out consumer does, and plans it: whatever decodes (an event or a
// receipt), each online recipient must be named exactly once on each edge
// that holds it, and no one else anywhere, in a delivery carrying what the
// record carries.
func FuzzPlanRecords(f *testing.F) {
	receipt := &logv1.EventRecord{Receipt: &chatv1.Receipt{ConversationId: "c", UserId: "bob", ReadSeq: 1}, RecipientIds: []string{"alice", "bob"}}
	block := &logv1.EventRecord{Block: &logv1.BlockChange{ConversationId: "c", BlockerId: "alice", BlockedId: "bob", Blocked: true, Time: timestamppb.New(time.Unix(1, 0))}}
	muted := rec(4, "alice", "bob", "carol", "dave")
	muted.MutedIds = []string{"dave"}
	muted.Event.SenderId = "alice"
	muted.Event.Body = &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: "hi"}}
	for _, r := range []*logv1.EventRecord{rec(1, "alice", "bob"), rec(2, "bob", "bob", "carol"), rec(3), receipt, block, muted} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x05, 'a', 'l', 'i', 'c', 'e'})
	locs := []*presencev1.UserLocation{
		{UserId: "alice", PushAddresses: []string{"e1", "e2"}},
		{UserId: "bob", PushAddresses: []string{"e2"}},
		{UserId: "carol", PushAddresses: []string{"e3", "e3"}},
	}
	where := map[string]map[string]bool{}
	for _, l := range locs {
		where[l.GetUserId()] = map[string]bool{}
		for _, a := range l.GetPushAddresses() {
			where[l.GetUserId()][a] = true
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := records.DecodeEventRecord(data)
		if err != nil {
			return // the consumer dead-letters these
		}
		want := map[string]map[string]bool{} // edge -> users
		for _, u := range r.GetRecipientIds() {
			for a := range where[u] {
				if want[a] == nil {
					want[a] = map[string]bool{}
				}
				want[a][u] = true
			}
		}
		plan := Plan([]*logv1.EventRecord{r}, locs)
		if len(plan) != len(want) {
			t.Fatalf("plan reaches %d edges, want %d", len(plan), len(want))
		}
		for a, ds := range plan {
			if len(ds) != 1 {
				t.Fatalf("edge %s gets %d deliveries of one record", a, len(ds))
			}
			if !proto.Equal(ds[0].GetEvent(), r.GetEvent()) || !proto.Equal(ds[0].GetReceipt(), r.GetReceipt()) {
				t.Fatalf("edge %s gets %v for %v", a, ds[0], r)
			}
			got := map[string]bool{}
			for _, u := range ds[0].GetUserIds() {
				if got[u] || !want[a][u] {
					t.Fatalf("edge %s: user %q named twice or not a recipient there (%v)", a, u, ds[0].GetUserIds())
				}
				got[u] = true
			}
			if len(got) != len(want[a]) {
				t.Fatalf("edge %s names %d users, want %d", a, len(got), len(want[a]))
			}
		}
		// Offline notifications: only for a message, only to recipients
		// who are neither located, nor its sender, nor muted, and they
		// collapse into one entry per user.
		located := locatedUsers(locs)
		ns := Offline([]*logv1.EventRecord{r}, located, true)
		if len(ns) > 0 && r.GetEvent().GetMessagePosted() == nil {
			t.Fatalf("%d notifications for a record that is no message: %v", len(ns), r)
		}
		for _, n := range ns {
			if located[n.GetUserId()] || n.GetUserId() == r.GetEvent().GetSenderId() || slices.Contains(r.GetMutedIds(), n.GetUserId()) ||
				!slices.Contains(r.GetRecipientIds(), n.GetUserId()) || n.GetSeq() != r.GetEvent().GetSeq() {
				t.Fatalf("notification %v of %v", n, r)
			}
		}
		users := map[string]bool{}
		for _, n := range ns {
			users[n.GetUserId()] = true
		}
		if c := Collapse(ns); len(c) != len(users) {
			t.Fatalf("%d notifications of %d users collapse into %d entries", len(ns), len(users), len(c))
		}
	})
}

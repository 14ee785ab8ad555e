package sdk

import (
	"fmt"
	"testing"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

func rc(user, device string, delivered, read uint64) *chatv1.Receipt {
	return &chatv1.Receipt{ConversationId: "g", UserId: user, DeviceId: device, DeliveredSeq: delivered, ReadSeq: read}
}

func statuses(ss []MessageStatus) string {
	out := ""
	for _, s := range ss {
		out += fmt.Sprintf("[%d d%d r%d]", s.Seq, s.Delivered, s.Read)
	}
	return out
}

func TestStatusTracker(t *testing.T) {
	tr := NewStatusTracker("alice")
	// alice's own devices never count: her phone posted 2 and 4.
	if got := statuses(tr.Load("g", []*chatv1.Receipt{rc("alice", "phone", 4, 4), rc("bob", "phone", 1, 0)})); got != "" {
		t.Fatalf("load with nothing sent: %s", got)
	}
	if s := tr.Sent("g", 2); s.Delivered != 0 || s.Read != 0 {
		t.Fatalf("sent 2: %+v", s)
	}
	tr.Sent("g", 4)
	steps := []struct {
		r    *chatv1.Receipt
		want string
	}{
		{rc("bob", "phone", 2, 0), "[2 d1 r0]"},
		{rc("bob", "phone", 2, 0), ""},                    // again: nothing moves
		{rc("bob", "phone", 1, 0), ""},                    // late and lower: nothing moves
		{rc("bob", "laptop", 0, 4), "[2 d2 r1][4 d1 r1]"}, // read implies delivered on that device
		{rc("carol", "tablet", 3, 0), "[2 d3 r1]"},
		{rc("alice", "laptop", 4, 4), ""}, // her own other device
		{rc("carol", "tablet", 4, 4), "[2 d3 r2][4 d2 r2]"},
	}
	for i, st := range steps {
		if got := statuses(tr.Apply(st.r)); got != st.want {
			t.Fatalf("step %d %v: changed %s, want %s", i, st.r, got, st.want)
		}
	}
	if s, ok := tr.Status("g", 4); !ok || s.Delivered != 2 || s.Read != 2 {
		t.Fatalf("status of 4: %+v %v", s, ok)
	}
	// Tracking is bounded: the oldest message is forgotten first.
	for seq := uint64(10); seq < 10+maxTracked; seq++ {
		tr.Sent("g", seq)
	}
	if _, ok := tr.Status("g", 2); ok {
		t.Fatal("seq 2 still tracked past the bound")
	}
	if _, ok := tr.Status("g", 10+maxTracked-1); !ok {
		t.Fatal("newest message not tracked")
	}
}

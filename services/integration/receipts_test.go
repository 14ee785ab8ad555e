package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// mark reports a device's position and returns the position after it.
func mark(ctx context.Context, c *sdk.Client, conv string, delivered, read uint64) (*chatv1.Receipt, error) {
	f, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Mark{Mark: &clientv1.Mark{
		ConversationId: conv, DeliveredSeq: delivered, ReadSeq: read,
	}}})
	if err != nil {
		return nil, err
	}
	if rs := f.GetReceipts().GetReceipts(); len(rs) == 1 {
		return rs[0], nil
	}
	return nil, fmt.Errorf("mark answered %v", f)
}

func receipts(ctx context.Context, c *sdk.Client, conv string) ([]*chatv1.Receipt, error) {
	f, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetReceipts{GetReceipts: &clientv1.GetReceipts{ConversationId: conv}}})
	if err != nil {
		return nil, err
	}
	return f.GetReceipts().GetReceipts(), nil
}

func listSync(ctx context.Context, c *sdk.Client, token string) (map[string]*chatv1.Conversation, string, error) {
	f, err := c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{ChangedSince: token}}})
	if err != nil {
		return nil, "", err
	}
	out := map[string]*chatv1.Conversation{}
	for _, cv := range f.GetConversations().GetConversations() {
		out[cv.GetConversationId()] = cv
	}
	return out, f.GetConversations().GetSyncToken(), nil
}

// positions renders receipts as "user/device d<delivered> r<read>", sorted.
func positions(rs []*chatv1.Receipt) string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s/%s d%d r%d", r.GetUserId(), r.GetDeviceId(), r.GetDeliveredSeq(), r.GetReadSeq()))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// eventually retries check until it passes or the deadline: persistence
// applies the log a moment after the sequencer answers.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReceiptsAcrossDevices (real stack): device positions move forward
// only and survive a sequencer kill -9; the read position is the user's,
// so unread counts agree across devices; the sender derives per-message
// status from positions; the conversation-list sync names exactly what
// changed; and non-members get nothing.
func TestReceiptsAcrossDevices(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	alice := discardEvents(c.dial(0, "alice", "alice-phone"))
	phone := discardEvents(c.dial(1, "bob", "bob-phone"))
	laptop := discardEvents(c.dial(0, "bob", "bob-laptop"))
	carol := discardEvents(c.dial(1, "carol", "carol-phone"))
	ids := createGroups(t, ctx, alice, 3, "receipts", "bob")
	x, y, z := ids[0], ids[1], ids[2]
	for i := range 20 {
		if _, err := alice.Send(ctx, x, fmt.Sprintf("x %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.Send(ctx, y, "y 0"); err != nil {
		t.Fatal(err)
	}
	// x: created at 1, messages at 2..21; y: 1..2; z: 1.

	steps := []struct {
		name            string
		c               *sdk.Client
		delivered, read uint64
		want            string
	}{
		{"phone got everything", phone, 21, 0, "d21 r0"},
		{"laptop read half", laptop, 0, 10, "d10 r10"},
		{"stale position", phone, 5, 0, "d21 r10"},
		{"zero mark moves nothing", laptop, 0, 0, "d10 r10"},
	}
	for _, st := range steps {
		r, err := mark(ctx, st.c, x, st.delivered, st.read)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := fmt.Sprintf("d%d r%d", r.GetDeliveredSeq(), r.GetReadSeq()); got != st.want {
			t.Fatalf("%s: %s, want %s", st.name, got, st.want)
		}
	}
	var we *wire.Error
	if _, err := mark(ctx, phone, x, 99, 0); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("mark beyond the head: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := mark(ctx, carol, x, 1, 0); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("mark by a non-member: %v, want NOT_FOUND", err)
	}
	if _, err := receipts(ctx, carol, x); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("receipts for a non-member: %v, want NOT_FOUND", err)
	}

	// What persistence serves, once it has applied the receipts: the poster
	// has read what she posted, bob's read position is on both devices.
	want := "alice/alice-phone d21 r21, bob/bob-laptop d10 r10, bob/bob-phone d21 r10"
	var rs []*chatv1.Receipt
	eventually(t, "receipts of x", func() (err error) {
		if rs, err = receipts(ctx, alice, x); err == nil && positions(rs) != want {
			err = fmt.Errorf("%s, want %s", positions(rs), want)
		}
		return err
	})
	// alice's view of her messages: seq 5 is on both of bob's devices and
	// read by bob; seq 15 only on his phone and unread.
	tr := sdk.NewStatusTracker("alice")
	tr.Sent(x, 5)
	tr.Sent(x, 15)
	tr.Load(x, rs)
	if s5, _ := tr.Status(x, 5); s5.Delivered != 2 || s5.Read != 1 {
		t.Fatalf("status of seq 5: %+v", s5)
	}
	if s15, _ := tr.Status(x, 15); s15.Delivered != 1 || s15.Read != 0 {
		t.Fatalf("status of seq 15: %+v", s15)
	}

	// Unread counts are the user's, whichever device asks, and count
	// messages only (not the creation events).
	eventually(t, "bob's unread counts", func() error {
		for _, dev := range []*sdk.Client{phone, laptop} {
			list, _, err := listSync(ctx, dev, "")
			if err != nil {
				return err
			}
			if got := fmt.Sprint(list[x].GetUnreadCount(), list[y].GetUnreadCount(), list[z].GetUnreadCount()); got != "11 1 0" {
				return fmt.Errorf("%s: unread x y z = %s, want 11 1 0", dev.DeviceID, got)
			}
		}
		return nil
	})

	// The sequencer dies and comes back: positions are rebuilt from the
	// log, so a stale mark still changes nothing.
	c.procs["ingest"].kill9()
	c.procs["ingest"].start()
	c.procs["ingest"].waitReady(60 * time.Second)
	var r *chatv1.Receipt
	eventually(t, "mark after the sequencer restart", func() (err error) {
		r, err = mark(ctx, phone, x, 3, 0)
		return err
	})
	if r.GetDeliveredSeq() != 21 || r.GetReadSeq() != 10 {
		t.Fatalf("after the restart bob's phone is at %v, want d21 r10", r)
	}

	// A sync token reaches back by the margin (1 s in this cluster), so
	// take it once nothing has changed for longer than that.
	time.Sleep(1500 * time.Millisecond)
	_, token, err := listSync(ctx, laptop, "")
	if err != nil {
		t.Fatal(err)
	}

	// Sync: bob reads x on his phone and alice posts in y; the laptop's
	// sync since the token names x (read moved, nothing unread) and y (one
	// more unread), not z.
	if _, err := mark(ctx, phone, x, 0, 21); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, y, "y 1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "list sync", func() error {
		list, _, err := listSync(ctx, laptop, token)
		if err != nil {
			return err
		}
		if _, ok := list[z]; ok {
			return fmt.Errorf("unchanged z listed")
		}
		if list[x].GetUnreadCount() != 0 || list[y].GetUnreadCount() != 2 || len(list) != 2 {
			return fmt.Errorf("sync listed %v", list)
		}
		return nil
	})
	if _, _, err := listSync(ctx, laptop, "garbage"); !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("sync with a bad token: %v, want INVALID_ARGUMENT", err)
	}

	// Typing, from alice on edge 0: bob's phone on edge 1 gets it from edge
	// to edge, his laptop on edge 0 locally.
	if err := alice.SetTyping(ctx, x, false); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []*sdk.Client{phone, laptop} {
		select {
		case ind := <-dev.Typing():
			if ind.GetUserId() != "alice" || ind.GetConversationId() != x {
				t.Fatalf("%s: typing %v", dev.DeviceID, ind)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no typing indicator", dev.DeviceID)
		}
	}
}

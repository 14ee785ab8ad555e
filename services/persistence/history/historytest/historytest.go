// Package historytest is the conformance suite every history.Store backend
// must pass. A backend's test calls Run with a factory for empty stores.
package historytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Factory returns an empty store; the suite closes it.
type Factory func(t *testing.T) history.Store

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Created returns the first record of a conversation.
func Created(conv string, kind chatv1.ConversationKind, title string, members ...string) *logv1.EventRecord {
	return &logv1.EventRecord{
		Event: &chatv1.Event{
			ConversationId: conv, Seq: 1, EventId: conv + "-1", SenderId: members[0], Time: timestamppb.New(base),
			Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{Kind: kind, Title: title, MemberIds: members}},
		},
		RecipientIds: members,
	}
}

// Posted returns a message record at seq; its time grows with seq.
func Posted(conv string, seq uint64, sender, text string) *logv1.EventRecord {
	return &logv1.EventRecord{Event: &chatv1.Event{
		ConversationId: conv, Seq: seq, EventId: fmt.Sprintf("%s-%d", conv, seq), SenderId: sender,
		Time: timestamppb.New(base.Add(time.Duration(seq) * time.Second)),
		Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: text}},
	}}
}

// Added returns a member-added record at seq.
func Added(conv string, seq uint64, by, user string) *logv1.EventRecord {
	return &logv1.EventRecord{Event: &chatv1.Event{
		ConversationId: conv, Seq: seq, EventId: fmt.Sprintf("%s-%d", conv, seq), SenderId: by,
		Time: timestamppb.New(base.Add(time.Duration(seq) * time.Second)),
		Body: &chatv1.Event_MemberAdded{MemberAdded: &chatv1.MemberAdded{UserId: user}},
	}}
}

// Receipt returns a receipt record: device's delivered position and
// user's read position, as the sequencer logs them after a Mark.
func Receipt(conv, user, device string, delivered, read uint64) *logv1.EventRecord {
	return &logv1.EventRecord{Receipt: &chatv1.Receipt{
		ConversationId: conv, UserId: user, DeviceId: device, DeliveredSeq: delivered, ReadSeq: read,
		Time: timestamppb.New(base),
	}}
}

// FromDevice names the device an event record was sent from.
func FromDevice(rec *logv1.EventRecord, device string) *logv1.EventRecord {
	rec.Event.SenderDeviceId = device
	return rec
}

// group writes a group conversation of n events (1 created + n-1 posts).
func group(t *testing.T, s history.Store, conv string, n int, members ...string) {
	t.Helper()
	recs := []*logv1.EventRecord{Created(conv, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "title "+conv, members...)}
	for seq := 2; seq <= n; seq++ {
		recs = append(recs, Posted(conv, uint64(seq), members[0], fmt.Sprintf("m%d", seq)))
	}
	apply(t, s, recs...)
}

func apply(t *testing.T, s history.Store, recs ...*logv1.EventRecord) {
	t.Helper()
	// Batches of 100, as the consumer would hand them over.
	for len(recs) > 0 {
		n := min(100, len(recs))
		if err := s.Apply(context.Background(), recs[:n]); err != nil {
			t.Fatalf("apply: %v", err)
		}
		recs = recs[n:]
	}
}

// deviceGroup writes a group conversation of n events, all by the first
// member from device, so that every position in it belongs to a device.
func deviceGroup(t *testing.T, s history.Store, conv, device string, n int, members ...string) {
	t.Helper()
	recs := []*logv1.EventRecord{FromDevice(Created(conv, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "title "+conv, members...), device)}
	for seq := 2; seq <= n; seq++ {
		recs = append(recs, FromDevice(Posted(conv, uint64(seq), members[0], fmt.Sprintf("m%d", seq)), device))
	}
	apply(t, s, recs...)
}

// later returns a time after every clock reading taken before the call:
// what was applied before it changed before it, and what is applied after
// it changes at or after it. Change times are compared in Unix
// nanoseconds, so it waits (a few nanoseconds) for the wall clock to tick.
func later() time.Time {
	t0 := time.Now().UnixNano()
	for {
		if t := time.Now(); t.UnixNano() > t0 {
			return t
		}
	}
}

// receipts renders a conversation's receipts as "user/device dD rR".
func receipts(t *testing.T, s history.Store, conv string) string {
	t.Helper()
	rs, err := s.Receipts(context.Background(), conv)
	if err != nil {
		t.Fatalf("receipts of %s: %v", conv, err)
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		if r.GetConversationId() != conv {
			t.Fatalf("receipt %v is not of %s", r, conv)
		}
		out[i] = fmt.Sprintf("%s/%s d%d r%d", r.GetUserId(), r.GetDeviceId(), r.GetDeliveredSeq(), r.GetReadSeq())
	}
	return strings.Join(out, ", ")
}

func wantReceipts(t *testing.T, s history.Store, conv, want string) {
	t.Helper()
	if got := receipts(t, s, conv); got != want {
		t.Fatalf("receipts of %s:\n got  %s\n want %s", conv, got, want)
	}
}

// listed renders a user's conversation list as "conv rR uU", changes
// since since only unless it is zero.
func listed(t *testing.T, s history.Store, user string, since time.Time) string {
	t.Helper()
	l, err := s.Conversations(context.Background(), user, history.ListQuery{ChangedSince: since})
	if err != nil {
		t.Fatalf("conversations of %s: %v", user, err)
	}
	out := make([]string, len(l))
	for i, c := range l {
		out[i] = fmt.Sprintf("%s r%d u%d", c.GetConversationId(), c.GetReadSeq(), c.GetUnreadCount())
	}
	return strings.Join(out, ", ")
}

func wantListed(t *testing.T, s history.Store, user string, since time.Time, want string) {
	t.Helper()
	if got := listed(t, s, user, since); got != want {
		t.Fatalf("%s's conversations (changed since %v):\n got  %s\n want %s", user, since, got, want)
	}
}

func seqs(p history.Page) []uint64 {
	out := make([]uint64, len(p.Events))
	for i, e := range p.Events {
		out[i] = e.GetSeq()
	}
	return out
}

func wantRange(t *testing.T, p history.Page, from, to uint64, more bool) {
	t.Helper()
	got := seqs(p)
	var want []uint64
	for s := from; s <= to && from > 0; s++ {
		want = append(want, s)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || p.HasMore != more {
		t.Fatalf("page = %v more=%v, want %v more=%v", got, p.HasMore, want, more)
	}
}

// Run runs the suite.
func Run(t *testing.T, newStore Factory) {
	ctx := context.Background()
	open := func(t *testing.T) history.Store {
		s := newStore(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	conv := func(t *testing.T) string { return "c-" + t.Name() }

	t.Run("PageBackwardFromNewest", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		group(t, s, c, 120, "alice", "bob")
		p, err := s.History(ctx, c, history.Query{Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		wantRange(t, p, 71, 120, true)
		p, _ = s.History(ctx, c, history.Query{BeforeSeq: 71, Limit: 50})
		wantRange(t, p, 21, 70, true)
		p, _ = s.History(ctx, c, history.Query{BeforeSeq: 21, Limit: 50})
		wantRange(t, p, 1, 20, false)
		p, _ = s.History(ctx, c, history.Query{BeforeSeq: 1, Limit: 50})
		wantRange(t, p, 0, 0, false)
	})
	t.Run("PageForward", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		group(t, s, c, 120, "alice", "bob")
		p, err := s.History(ctx, c, history.Query{Forward: true, AfterSeq: 1, Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		wantRange(t, p, 2, 51, true)
		p, _ = s.History(ctx, c, history.Query{Forward: true, AfterSeq: 100, Limit: 50})
		wantRange(t, p, 101, 120, false)
		p, _ = s.History(ctx, c, history.Query{Forward: true, AfterSeq: 120, Limit: 50})
		wantRange(t, p, 0, 0, false)
		p, _ = s.History(ctx, c, history.Query{Forward: true, AfterSeq: 70, Limit: 50})
		wantRange(t, p, 71, 120, false)
	})
	t.Run("LimitBounds", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		group(t, s, c, 300, "alice")
		p, _ := s.History(ctx, c, history.Query{})
		if len(p.Events) != history.DefaultLimit || !p.HasMore {
			t.Fatalf("limit 0: got %d events more=%v, want default %d", len(p.Events), p.HasMore, history.DefaultLimit)
		}
		p, _ = s.History(ctx, c, history.Query{Limit: 10_000})
		if len(p.Events) != history.MaxLimit {
			t.Fatalf("limit 10000: got %d events, want cap %d", len(p.Events), history.MaxLimit)
		}
		p, _ = s.History(ctx, c, history.Query{Limit: 1})
		wantRange(t, p, 300, 300, true)
	})
	t.Run("LongConversationAcrossBuckets", func(t *testing.T) {
		// Longer than any backend's bucket, so pages cross bucket edges.
		s := open(t)
		c := conv(t)
		const n = 2600
		group(t, s, c, n, "alice")
		var all []uint64
		before := uint64(0)
		for {
			p, err := s.History(ctx, c, history.Query{BeforeSeq: before, Limit: 200})
			if err != nil {
				t.Fatal(err)
			}
			all = append(seqs(p), all...)
			if !p.HasMore {
				break
			}
			before = p.Events[0].GetSeq()
		}
		for i, seq := range all {
			if seq != uint64(i+1) {
				t.Fatalf("backward walk: position %d has seq %d", i, seq)
			}
		}
		if len(all) != n {
			t.Fatalf("backward walk saw %d events, want %d", len(all), n)
		}
		after, count := uint64(0), 0
		for {
			p, err := s.History(ctx, c, history.Query{Forward: true, AfterSeq: after, Limit: 200})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Events {
				count++
				if e.GetSeq() != after+1 {
					t.Fatalf("forward walk: seq %d after %d", e.GetSeq(), after)
				}
				after = e.GetSeq()
			}
			if !p.HasMore {
				break
			}
		}
		if count != n {
			t.Fatalf("forward walk saw %d events, want %d", count, n)
		}
	})
	t.Run("MissingConversation", func(t *testing.T) {
		s := open(t)
		if _, err := s.History(ctx, "nope", history.Query{}); !errors.Is(err, history.ErrNotFound) {
			t.Fatalf("History of missing conversation: err = %v, want ErrNotFound", err)
		}
		if _, err := s.Conversation(ctx, "nope"); !errors.Is(err, history.ErrNotFound) {
			t.Fatalf("Conversation of missing: err = %v, want ErrNotFound", err)
		}
		l, err := s.Conversations(ctx, "nobody", history.ListQuery{})
		if err != nil || len(l) != 0 {
			t.Fatalf("Conversations of unknown user = %v, %v; want empty", l, err)
		}
	})
	t.Run("CreatedOnlyConversation", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		apply(t, s, Created(c, chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "", "alice", "bob"))
		p, err := s.History(ctx, c, history.Query{Forward: true, AfterSeq: 1})
		if err != nil {
			t.Fatal(err)
		}
		wantRange(t, p, 0, 0, false)
		p, _ = s.History(ctx, c, history.Query{})
		wantRange(t, p, 1, 1, false)
	})
	t.Run("IdempotentRewrite", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		group(t, s, c, 10, "alice", "bob")
		before, _ := s.Conversation(ctx, c)
		// The same records again, in one batch and one by one, as a consumer
		// that crashed before committing would deliver them.
		recs := []*logv1.EventRecord{Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "title "+c, "alice", "bob")}
		for seq := 2; seq <= 10; seq++ {
			recs = append(recs, Posted(c, uint64(seq), "alice", fmt.Sprintf("m%d", seq)))
		}
		apply(t, s, recs...)
		for _, r := range recs[5:] {
			apply(t, s, r)
		}
		p, _ := s.History(ctx, c, history.Query{Limit: 100})
		wantRange(t, p, 1, 10, false)
		after, _ := s.Conversation(ctx, c)
		if !proto.Equal(before, after) {
			t.Fatalf("summary changed on rewrite:\n before %v\n after  %v", before, after)
		}
		l, _ := s.Conversations(ctx, "bob", history.ListQuery{})
		if len(l) != 1 {
			t.Fatalf("bob lists %d conversations after rewrite, want 1", len(l))
		}
	})
	t.Run("SummaryAndMembership", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		group(t, s, c, 3, "alice", "bob")
		apply(t, s, Added(c, 4, "alice", "carol"), Posted(c, 5, "carol", "hello from carol"))
		sum, err := s.Conversation(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if sum.GetLastSeq() != 5 || sum.GetLastMessagePreview() != "hello from carol" || sum.GetTitle() != "title "+c ||
			sum.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_GROUP || fmt.Sprint(sum.GetMemberIds()) != "[alice bob carol]" {
			t.Fatalf("summary = %v", sum)
		}
		if !sum.GetLastActivity().AsTime().Equal(base.Add(5 * time.Second)) {
			t.Fatalf("last activity = %v", sum.GetLastActivity().AsTime())
		}
		l, _ := s.Conversations(ctx, "carol", history.ListQuery{})
		if len(l) != 1 || l[0].GetConversationId() != c {
			t.Fatalf("carol's list = %v", l)
		}
	})
	t.Run("ConversationListOrder", func(t *testing.T) {
		s := open(t)
		// c2 is most recent, then c3, then c1.
		group(t, s, "c1", 2, "alice", "bob")
		group(t, s, "c2", 9, "alice", "carol")
		group(t, s, "c3", 5, "alice")
		l, err := s.Conversations(ctx, "alice", history.ListQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range l {
			ids = append(ids, c.GetConversationId())
		}
		if fmt.Sprint(ids) != "[c2 c3 c1]" {
			t.Fatalf("order = %v, want [c2 c3 c1]", ids)
		}
		l, _ = s.Conversations(ctx, "alice", history.ListQuery{Limit: 2})
		if len(l) != 2 {
			t.Fatalf("limit 2 gave %d", len(l))
		}
		apply(t, s, Posted("c1", 3, "bob", "bump"), Posted("c1", 4, "bob", "bump"), Posted("c1", 5, "bob", "bump"),
			Posted("c1", 6, "bob", "bump"), Posted("c1", 7, "bob", "bump"), Posted("c1", 8, "bob", "bump"),
			Posted("c1", 9, "bob", "bump"), Posted("c1", 10, "bob", "bump"))
		l, _ = s.Conversations(ctx, "alice", history.ListQuery{Limit: 1})
		if len(l) != 1 || l[0].GetConversationId() != "c1" {
			t.Fatalf("after activity in c1, first = %v", l)
		}
	})
	t.Run("ConcurrentWritersDifferentConversations", func(t *testing.T) {
		s := open(t)
		const writers, perWriter = 8, 150
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := fmt.Sprintf("cw-%d", w)
				if err := s.Apply(ctx, []*logv1.EventRecord{Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, c, "alice")}); err != nil {
					errs <- err
					return
				}
				for seq := uint64(2); seq <= perWriter; seq++ {
					if err := s.Apply(ctx, []*logv1.EventRecord{Posted(c, seq, "alice", "x")}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for w := range writers {
			c := fmt.Sprintf("cw-%d", w)
			p, err := s.History(ctx, c, history.Query{Forward: true, AfterSeq: 0, Limit: 200})
			if err != nil {
				t.Fatal(err)
			}
			wantRange(t, p, 1, perWriter, false)
		}
		l, _ := s.Conversations(ctx, "alice", history.ListQuery{})
		if len(l) != writers {
			t.Fatalf("alice lists %d conversations, want %d", len(l), writers)
		}
	})
	// One Apply across many conversations, as a busy log hands persistence
	// (a backend may pack their writes into shared requests): every
	// conversation whole, its summary and its posters' positions.
	t.Run("OneApplyManyConversations", func(t *testing.T) {
		s := open(t)
		const n = 37
		var recs []*logv1.EventRecord
		var convs []string
		for i := range n {
			c := fmt.Sprintf("%s-%d", conv(t), i)
			convs = append(convs, c)
			recs = append(recs, FromDevice(Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, c, "alice", "bob"), "a1"))
		}
		for i, c := range convs {
			recs = append(recs, FromDevice(Posted(c, 2, "bob", strings.Repeat("x", 40*i)), "b1"))
		}
		apply(t, s, recs...)
		for _, c := range convs {
			p, err := s.History(ctx, c, history.Query{Forward: true})
			if err != nil {
				t.Fatal(err)
			}
			wantRange(t, p, 1, 2, false)
			wantReceipts(t, s, c, "alice/a1 d1 r1, bob/b1 d2 r2")
		}
		if l, _ := s.Conversations(ctx, "bob", history.ListQuery{Limit: history.MaxLimit}); len(l) != n {
			t.Fatalf("bob lists %d conversations, want %d", len(l), n)
		}
	})
	t.Run("EventRoundTrip", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		rec := Posted(c, 2, "alice", "héllo ✓ \x00 bytes")
		rec.Event.SenderDeviceId = "dev-1"
		rec.Event.ClientMsgId = "cm-1"
		apply(t, s, Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice"), rec)
		p, err := s.History(ctx, c, history.Query{Forward: true, AfterSeq: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) != 1 || !proto.Equal(p.Events[0], rec.Event) {
			t.Fatalf("stored event %v, want %v", p.Events, rec.Event)
		}
	})
	t.Run("ReceiptsMaxOnly", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		deviceGroup(t, s, c, "a1", 10, "alice", "bob")
		recs := []*logv1.EventRecord{Receipt(c, "bob", "b1", 5, 3)}
		apply(t, s, recs[0])
		wantReceipts(t, s, c, "alice/a1 d10 r10, bob/b1 d5 r3")
		// Lower positions change nothing.
		recs = append(recs, Receipt(c, "bob", "b1", 4, 2))
		apply(t, s, recs[1])
		wantReceipts(t, s, c, "alice/a1 d10 r10, bob/b1 d5 r3")
		// Reading implies delivered.
		recs = append(recs, Receipt(c, "bob", "b1", 0, 7))
		apply(t, s, recs[2])
		wantReceipts(t, s, c, "alice/a1 d10 r10, bob/b1 d7 r7")
		// The read position is the user's, on every device.
		recs = append(recs, Receipt(c, "bob", "b2", 6, 0))
		apply(t, s, recs[3])
		wantReceipts(t, s, c, "alice/a1 d10 r10, bob/b1 d7 r7, bob/b2 d6 r7")
		recs = append(recs, Receipt(c, "bob", "b2", 9, 8))
		apply(t, s, recs[4])
		const want = "alice/a1 d10 r10, bob/b1 d7 r8, bob/b2 d9 r8"
		wantReceipts(t, s, c, want)
		// Replays: in one batch, one by one, reversed.
		apply(t, s, recs...)
		wantReceipts(t, s, c, want)
		for _, r := range recs {
			apply(t, s, r)
		}
		wantReceipts(t, s, c, want)
		rev := slices.Clone(recs)
		slices.Reverse(rev)
		apply(t, s, rev...)
		wantReceipts(t, s, c, want)
		wantListed(t, s, "bob", time.Time{}, c+" r8 u2")
	})
	t.Run("PostingMovesPosterPositions", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		apply(t, s, FromDevice(Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice", "bob", "carol"), "a1"))
		wantReceipts(t, s, c, "alice/a1 d1 r1")
		wantListed(t, s, "alice", time.Time{}, c+" r1 u0")
		wantListed(t, s, "bob", time.Time{}, c+" r0 u0")
		apply(t, s, FromDevice(Posted(c, 2, "bob", "from the phone"), "b1"))
		wantReceipts(t, s, c, "alice/a1 d1 r1, bob/b1 d2 r2")
		// Another device of the same user: its own delivered position, the
		// user's read position on both.
		apply(t, s, FromDevice(Posted(c, 3, "bob", "from the laptop"), "b2"))
		wantReceipts(t, s, c, "alice/a1 d1 r1, bob/b1 d2 r3, bob/b2 d3 r3")
		// In one batch with receipts, whatever their order.
		apply(t, s, Receipt(c, "carol", "c1", 3, 3), FromDevice(Posted(c, 4, "carol", "hi"), "c1"), Receipt(c, "carol", "c1", 4, 2))
		wantReceipts(t, s, c, "alice/a1 d1 r1, bob/b1 d2 r3, bob/b2 d3 r3, carol/c1 d4 r4")
		wantListed(t, s, "alice", time.Time{}, c+" r1 u3")
		wantListed(t, s, "bob", time.Time{}, c+" r3 u1")
		wantListed(t, s, "carol", time.Time{}, c+" r4 u0")
		// An older post replayed moves nothing back.
		apply(t, s, FromDevice(Posted(c, 2, "bob", "from the phone"), "b1"))
		wantReceipts(t, s, c, "alice/a1 d1 r1, bob/b1 d2 r3, bob/b2 d3 r3, carol/c1 d4 r4")
	})
	t.Run("ReceiptsOrderAndMissing", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		if _, err := s.Receipts(ctx, "nope"); !errors.Is(err, history.ErrNotFound) {
			t.Fatalf("Receipts of a missing conversation: err = %v, want ErrNotFound", err)
		}
		// A receipt for a conversation the store does not know yet is
		// kept, and shows once the conversation exists.
		apply(t, s, Receipt(c, "zed", "z1", 3, 2))
		if _, err := s.Receipts(ctx, c); !errors.Is(err, history.ErrNotFound) {
			t.Fatalf("Receipts of a conversation with receipts but no events: err = %v, want ErrNotFound", err)
		}
		deviceGroup(t, s, c, "c1", 3, "carol", "bob", "alice", "zed")
		apply(t, s, Receipt(c, "bob", "b2", 2, 1), Receipt(c, "alice", "a2", 3, 0), Receipt(c, "bob", "b1", 1, 0),
			Receipt(c, "alice", "a1", 1, 1), Receipt(c, "alice", "a10", 2, 0))
		wantReceipts(t, s, c, "alice/a1 d1 r1, alice/a10 d2 r1, alice/a2 d3 r1, bob/b1 d1 r1, bob/b2 d2 r1, carol/c1 d3 r3, zed/z1 d3 r2")
		if _, err := s.Receipts(ctx, "c-other"); !errors.Is(err, history.ErrNotFound) {
			t.Fatalf("Receipts of another missing conversation: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("UnreadAcrossDevices", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		deviceGroup(t, s, c, "a1", 10, "alice", "bob")
		wantListed(t, s, "bob", time.Time{}, c+" r0 u9")
		wantListed(t, s, "alice", time.Time{}, c+" r10 u0")
		apply(t, s, Receipt(c, "bob", "phone", 4, 4))
		wantListed(t, s, "bob", time.Time{}, c+" r4 u6")
		// The laptop has everything but has read less than the phone.
		apply(t, s, Receipt(c, "bob", "laptop", 10, 2))
		wantListed(t, s, "bob", time.Time{}, c+" r4 u6")
		wantReceipts(t, s, c, "alice/a1 d10 r10, bob/laptop d10 r4, bob/phone d4 r4")
		// Reading on the laptop reads for the phone too.
		apply(t, s, Receipt(c, "bob", "laptop", 10, 10))
		wantListed(t, s, "bob", time.Time{}, c+" r10 u0")
		wantReceipts(t, s, c, "alice/a1 d10 r10, bob/laptop d10 r10, bob/phone d4 r10")
		apply(t, s, FromDevice(Posted(c, 11, "alice", "more"), "a1"))
		wantListed(t, s, "bob", time.Time{}, c+" r10 u1")
		// Other users are not affected by bob's reads.
		wantListed(t, s, "alice", time.Time{}, c+" r11 u0")
	})
	t.Run("UnreadCountsMessagesByOthers", func(t *testing.T) {
		// Unread is the messages by others after the read position (see
		// history.CountsAsUnread): creation, membership, roles, renames,
		// invites, edits, deletes and reactions count for nobody.
		s := open(t)
		c := conv(t)
		apply(t, s, Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice", "bob"))
		wantListed(t, s, "bob", time.Time{}, c+" r0 u0")
		apply(t, s, Posted(c, 2, "alice", "one"))
		wantListed(t, s, "bob", time.Time{}, c+" r0 u1")
		apply(t, s, Added(c, 3, "alice", "carol"),
			At(c, 4, "alice", &chatv1.RoleChanged{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN}),
			At(c, 5, "alice", &chatv1.ConversationRenamed{Title: "u"}),
			At(c, 6, "alice", &chatv1.InviteCreated{Code: "abc"}),
			Edited(c, 7, "alice", 2, "one!", true),
			Reacted(c, 8, "carol", 2, "👍", true))
		wantListed(t, s, "bob", time.Time{}, c+" r0 u1")
		wantListed(t, s, "carol", time.Time{}, c+" r8 u0")
		apply(t, s, Posted(c, 9, "carol", "two"), Posted(c, 10, "alice", "three"), Deleted(c, 11, "alice", 10, true))
		// A message deleted since it was posted still counts.
		wantListed(t, s, "bob", time.Time{}, c+" r0 u3")
		wantListed(t, s, "carol", time.Time{}, c+" r9 u1")
		wantListed(t, s, "alice", time.Time{}, c+" r11 u0")
		apply(t, s, Receipt(c, "bob", "b1", 9, 9))
		wantListed(t, s, "bob", time.Time{}, c+" r9 u1")
		// The count stops at history.UnreadCap.
		var recs []*logv1.EventRecord
		for seq := uint64(12); seq < 12+2*history.UnreadCap; seq += 2 {
			recs = append(recs, Posted(c, seq, "alice", "m"), Reacted(c, seq+1, "carol", seq, "👍", true))
		}
		apply(t, s, recs...)
		wantListed(t, s, "carol", time.Time{}, fmt.Sprintf("%s r%d u%d", c, 11+2*history.UnreadCap, 0))
		wantListed(t, s, "bob", time.Time{}, fmt.Sprintf("%s r9 u%d", c, history.UnreadCap))
		apply(t, s, Receipt(c, "bob", "b1", 0, 11+history.UnreadCap))
		wantListed(t, s, "bob", time.Time{}, fmt.Sprintf("%s r%d u%d", c, 11+history.UnreadCap, history.UnreadCap/2))
	})
	t.Run("ChangedSince", func(t *testing.T) {
		s := open(t)
		// c1 is the most recent, c3 the least.
		older := later()
		deviceGroup(t, s, "c1", "a1", 9, "alice", "bob")
		deviceGroup(t, s, "c2", "a1", 5, "alice", "bob")
		deviceGroup(t, s, "c3", "a1", 3, "alice", "bob")
		wantListed(t, s, "bob", older, "c1 r0 u8, c2 r0 u4, c3 r0 u2")
		t0 := later()
		wantListed(t, s, "bob", t0, "")
		wantListed(t, s, "bob", time.Time{}, "c1 r0 u8, c2 r0 u4, c3 r0 u2")

		// A new event: changed for every member, although the event's own
		// time lies long before t0 (the store's clock counts).
		apply(t, s, FromDevice(Posted("c3", 4, "alice", "new"), "a1"))
		wantListed(t, s, "bob", t0, "c3 r0 u3")
		wantListed(t, s, "alice", t0, "c3 r4 u0")

		// A read position that moves: changed for its user only.
		t1 := later()
		apply(t, s, Receipt("c2", "bob", "b1", 0, 2))
		wantListed(t, s, "bob", t1, "c2 r2 u3")
		wantListed(t, s, "alice", t1, "")
		wantListed(t, s, "bob", t0, "c2 r2 u3, c3 r0 u3")

		// Receipts that move no read position: lower ones, and one that
		// only moves delivery.
		t2 := later()
		apply(t, s, Receipt("c2", "bob", "b1", 1, 1), Receipt("c1", "bob", "b1", 5, 0))
		wantListed(t, s, "bob", t2, "")
		wantListed(t, s, "alice", t2, "")
		wantReceipts(t, s, "c1", "alice/a1 d9 r9, bob/b1 d5 r0")

		// A replay of older records does not hide what changed.
		replay := []*logv1.EventRecord{FromDevice(Created("c3", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "title c3", "alice", "bob"), "a1")}
		for seq := uint64(2); seq <= 3; seq++ {
			replay = append(replay, FromDevice(Posted("c3", seq, "alice", fmt.Sprintf("m%d", seq)), "a1"))
		}
		replay = append(replay, Receipt("c2", "bob", "b1", 0, 1), Receipt("c2", "bob", "b1", 2, 2))
		apply(t, s, replay...)
		wantListed(t, s, "bob", t1, "c2 r2 u3")
		wantListed(t, s, "bob", t0, "c2 r2 u3, c3 r0 u3")
		wantListed(t, s, "alice", t0, "c3 r4 u0")

		// The limit applies after the filter.
		apply(t, s, FromDevice(Posted("c1", 10, "alice", "x"), "a1"))
		l, err := s.Conversations(ctx, "bob", history.ListQuery{ChangedSince: t0, Limit: 1})
		if err != nil || len(l) != 1 || l[0].GetConversationId() != "c1" {
			t.Fatalf("changed since t0, limit 1: %v, %v; want c1", l, err)
		}
	})
	t.Run("ReplayLeavesPositions", func(t *testing.T) {
		s := open(t)
		c := conv(t)
		recs := []*logv1.EventRecord{FromDevice(Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice", "bob", "carol"), "a1")}
		for seq := uint64(2); seq <= 12; seq++ {
			switch seq % 3 {
			case 0:
				recs = append(recs, FromDevice(Posted(c, seq, "bob", "b"), "b1"), Receipt(c, "carol", "c1", seq, seq-2))
			case 1:
				recs = append(recs, FromDevice(Posted(c, seq, "alice", "a"), "a2"), Receipt(c, "bob", "b2", seq-1, 0))
			default:
				recs = append(recs, Posted(c, seq, "carol", "no device"), Receipt(c, "alice", "a1", seq, seq))
			}
		}
		users := []string{"alice", "bob", "carol"}
		snapshot := func() (string, []*chatv1.Conversation) {
			var lists []*chatv1.Conversation
			for _, u := range users {
				l, err := s.Conversations(ctx, u, history.ListQuery{})
				if err != nil || len(l) != 1 {
					t.Fatalf("%s's conversations: %v, %v", u, l, err)
				}
				lists = append(lists, l[0])
			}
			return receipts(t, s, c), lists
		}
		apply(t, s, recs...)
		wantRs, wantLists := snapshot()
		check := func(stage string) {
			t.Helper()
			rs, lists := snapshot()
			if rs != wantRs {
				t.Fatalf("%s: receipts\n got  %s\n want %s", stage, rs, wantRs)
			}
			for i := range lists {
				if !proto.Equal(lists[i], wantLists[i]) {
					t.Fatalf("%s: %s's entry\n got  %v\n want %v", stage, users[i], lists[i], wantLists[i])
				}
			}
		}
		apply(t, s, recs...)
		check("the same batch again")
		for _, r := range recs {
			apply(t, s, r)
		}
		check("one by one")
		rev := slices.Clone(recs)
		slices.Reverse(rev)
		apply(t, s, rev...)
		check("reversed")
		wantListed(t, s, "carol", time.Time{}, c+" r11 u1")
	})
	runGroups(t, open, conv)
	runMessages(t, open)
	runFlags(t, open)
	runBlocks(t, open)
	runContacts(t, open)
}

// ClockFactory returns an empty store that reads the time from now; the
// suite closes it.
type ClockFactory func(t *testing.T, now func() time.Time) history.Store

// stepClock is a clock that moves by step at every reading.
type stepClock struct {
	mu   sync.Mutex
	next time.Time
	step time.Duration
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.next
	c.next = c.next.Add(c.step)
	return t
}

// last is the latest reading.
func (c *stepClock) last() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next.Add(-c.step)
}

// RunClock runs the tests that need the store's clock in hand: change
// times of an Apply slower than history.ChangeLag.
func RunClock(t *testing.T, newStore ClockFactory) {
	open := func(t *testing.T, clk *stepClock) history.Store {
		s := newStore(t, clk.now)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	t.Run("StampedByItsClock", func(t *testing.T) {
		clk := &stepClock{next: base.Add(time.Hour), step: time.Microsecond}
		s := open(t, clk)
		c := "c-" + t.Name()
		deviceGroup(t, s, c, "a1", 3, "alice", "bob")
		// Neither the events' times (an hour before) nor the wall clock
		// count.
		wantListed(t, s, "bob", base.Add(time.Hour), c+" r0 u2")
		wantListed(t, s, "bob", base.Add(2*time.Hour), "")
	})
	t.Run("SlowApplyStampedAgain", func(t *testing.T) {
		// Every reading is 2×ChangeLag after the one before, so every
		// Apply is slow and must stamp its changes again once its writes
		// are done: with its clock's latest reading.
		clk := &stepClock{next: base, step: 2 * history.ChangeLag}
		s := open(t, clk)
		c := "c-" + t.Name()
		deviceGroup(t, s, c, "a1", 3, "alice", "bob")
		since := clk.last()
		wantListed(t, s, "alice", since, c+" r3 u0")
		wantListed(t, s, "bob", since, c+" r0 u2")
		// A moved read position alone, stamped again the same way.
		apply(t, s, Receipt(c, "bob", "b1", 0, 2))
		since = clk.last()
		wantListed(t, s, "bob", since, c+" r2 u1")
		wantListed(t, s, "alice", since, "")
	})
}

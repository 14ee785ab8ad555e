// Package historytest is the conformance suite every history.Store backend
// must pass. A backend's test calls Run with a factory for empty stores.
package historytest

import (
	"context"
	"errors"
	"fmt"
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
		l, err := s.Conversations(ctx, "nobody", 0)
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
		l, _ := s.Conversations(ctx, "bob", 0)
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
		l, _ := s.Conversations(ctx, "carol", 0)
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
		l, err := s.Conversations(ctx, "alice", 0)
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
		l, _ = s.Conversations(ctx, "alice", 2)
		if len(l) != 2 {
			t.Fatalf("limit 2 gave %d", len(l))
		}
		apply(t, s, Posted("c1", 3, "bob", "bump"), Posted("c1", 4, "bob", "bump"), Posted("c1", 5, "bob", "bump"),
			Posted("c1", 6, "bob", "bump"), Posted("c1", 7, "bob", "bump"), Posted("c1", 8, "bob", "bump"),
			Posted("c1", 9, "bob", "bump"), Posted("c1", 10, "bob", "bump"))
		l, _ = s.Conversations(ctx, "alice", 1)
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
		l, _ := s.Conversations(ctx, "alice", 0)
		if len(l) != writers {
			t.Fatalf("alice lists %d conversations, want %d", len(l), writers)
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
}

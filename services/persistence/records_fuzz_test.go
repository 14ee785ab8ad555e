package persistence

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// fuzzRecords turns fuzz input into records of the event log. Each step
// is either raw bytes (a record value as is, garbage or not) or an event
// or receipt built from a few bytes: one of three conversations, a seq
// below 8 (so 0, which is invalid, and repeats, which a zombie sequencer
// would write, come often), and a kind. Every conversation id is put under ns, so runs
// sharing one store do not see each other.
func fuzzRecords(ns string, data []byte) []*kgo.Record {
	users := []string{"alice", "bob", "carol"}
	var recs []*kgo.Record
	for len(data) > 0 && len(recs) < 64 {
		op := data[0]
		data = data[1:]
		var value []byte
		if op%4 == 0 {
			n := 0
			if len(data) > 0 {
				n, data = min(int(data[0]), len(data)-1), data[1:]
			}
			value, data = namespaced(ns, data[:n]), data[n:]
		} else {
			if len(data) < 3 {
				break
			}
			conv, seq, kind := data[0], data[1], data[2]
			data = data[3:]
			n := len(recs)
			ev := &chatv1.Event{
				ConversationId: fmt.Sprintf("%sc%d", ns, conv%3), Seq: uint64(seq % 8),
				EventId: fmt.Sprintf("e%d", n), SenderId: users[kind%3], Time: timestamppb.New(time.Unix(int64(n), 0)),
			}
			if kind/3%4 == 3 && op%8 == 7 {
				// A user's flags, which never show in history either.
				value, _ = proto.Marshal(&logv1.EventRecord{Flags: &chatv1.ConversationFlags{
					ConversationId: fmt.Sprintf("%sc%d", ns, conv%3), UserId: users[kind%3],
					Muted: seq%2 == 0, Pinned: seq%3 == 0, Version: uint64(seq % 8)}})
				recs = append(recs, &kgo.Record{Topic: topics.Events, Key: []byte("k"), Value: value, Offset: int64(len(recs))})
				continue
			}
			if kind/3%4 == 3 {
				// A receipt, which never shows in history.
				value, _ = proto.Marshal(&logv1.EventRecord{Receipt: &chatv1.Receipt{
					ConversationId: fmt.Sprintf("%sc%d", ns, conv%3), UserId: users[kind%3], DeviceId: "d",
					DeliveredSeq: uint64(seq % 8), ReadSeq: uint64(op % 8)}})
				recs = append(recs, &kgo.Record{Topic: topics.Events, Key: []byte("k"), Value: value, Offset: int64(len(recs))})
				continue
			}
			switch kind / 3 % 4 {
			case 0:
				ev.Body = &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
					Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "t", MemberIds: users[:1+int(op)%3]}}
			case 1:
				ev.Body = &chatv1.Event_MemberAdded{MemberAdded: &chatv1.MemberAdded{UserId: users[(kind/9)%3]}}
			default:
				// Messages, and edits, deletes and reactions of seqs below 8
				// (messages or not: the store must cope either way).
				target, emoji := uint64(kind/9%8), []string{"👍", "x"}[op%2]
				switch op / 4 % 6 {
				case 2:
					ev.Body = &chatv1.Event_MessageEdited{MessageEdited: &chatv1.MessageEdited{TargetSeq: target, Text: fmt.Sprintf("e%d", op), Latest: op%2 == 0}}
				case 3:
					ev.Body = &chatv1.Event_MessageDeleted{MessageDeleted: &chatv1.MessageDeleted{TargetSeq: target, Latest: op%2 == 0}}
				case 4:
					ev.Body = &chatv1.Event_ReactionAdded{ReactionAdded: &chatv1.ReactionAdded{TargetSeq: target, Emoji: emoji}}
				case 5:
					ev.Body = &chatv1.Event_ReactionRemoved{ReactionRemoved: &chatv1.ReactionRemoved{TargetSeq: target, Emoji: emoji}}
				default:
					ev.Body = &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: fmt.Sprintf("m%d", op)}}
				}
			}
			value, _ = proto.Marshal(&logv1.EventRecord{Event: ev, RecipientIds: users})
		}
		recs = append(recs, &kgo.Record{Topic: topics.Events, Key: []byte("k"), Value: value, Offset: int64(len(recs))})
	}
	return recs
}

// namespaced puts the conversation of a raw value that decodes under ns;
// anything else stays as it is.
func namespaced(ns string, value []byte) []byte {
	rec := &logv1.EventRecord{}
	if proto.Unmarshal(value, rec) != nil {
		return value
	}
	if ev := rec.GetEvent(); ev.GetConversationId() != "" {
		ev.ConversationId = ns + ev.GetConversationId()
	}
	if r := rec.GetReceipt(); r.GetConversationId() != "" {
		r.ConversationId = ns + r.GetConversationId()
	}
	if f := rec.GetFlags(); f.GetConversationId() != "" {
		f.ConversationId = ns + f.GetConversationId()
	}
	b, err := proto.Marshal(rec)
	if err != nil {
		return value
	}
	return b
}

// FuzzApplyRecords passes arbitrary records of the event log through
// persistence's path (SortEvents: decode, dead-letter, first seq wins;
// then Apply) into a Pebble store, in two polls, and checks
// what history shows: every record is applied, dead-lettered or skipped
// as stale, once; Apply takes whatever the consumer passes it (a refusal
// would block the partition for good); each conversation's history, paged
// both ways, is exactly the first copy of each seq above the last one, in
// seq order, with nothing that was not in the input; and a replay of the
// same records (a restart) changes nothing.
func FuzzApplyRecords(f *testing.F) {
	f.Add([]byte{1, 0, 1, 0, 2, 0, 2, 6, 3, 0, 3, 8, 1, 0, 2, 7, 3, 0, 4, 8}) // c0: create, post, post, a second seq 2, post
	f.Add([]byte{1, 1, 0, 0, 1, 1, 2, 3, 0, 9, 3, 2, 1, 0, 2, 2, 0})          // seq 0, member added, another conversation
	f.Add([]byte{0, 5, 0xff, 0xff, 0xff, 0x01, 0x02, 1, 0, 1, 0})             // garbage, then an event
	// c0: create, post 2, edit 2, react to 2, unreact, delete 2, post.
	f.Add([]byte{1, 0, 1, 0, 1, 0, 2, 6, 9, 0, 3, 24, 17, 0, 4, 24, 21, 0, 5, 24, 13, 0, 6, 24, 1, 0, 7, 6})
	receipt, _ := proto.Marshal(&logv1.EventRecord{Receipt: &chatv1.Receipt{ConversationId: "c0", UserId: "bob", ReadSeq: 1}})
	both, _ := proto.Marshal(&logv1.EventRecord{Event: &chatv1.Event{ConversationId: "c0", Seq: 1}, Receipt: &chatv1.Receipt{ConversationId: "c0"}})
	f.Add(append(append([]byte{1, 0, 1, 0, 0, byte(len(receipt))}, receipt...), append([]byte{0, byte(len(both))}, both...)...))
	// A block (no view shows it) and a removal among events.
	block, _ := proto.Marshal(&logv1.EventRecord{Block: &logv1.BlockChange{ConversationId: "c0", BlockerId: "alice", BlockedId: "bob", Blocked: true, Time: timestamppb.New(time.Unix(1, 0))}})
	removed, _ := proto.Marshal(&logv1.EventRecord{Event: &chatv1.Event{ConversationId: "c0", Seq: 2, SenderId: "alice",
		Body: &chatv1.Event_MemberRemoved{MemberRemoved: &chatv1.MemberRemoved{UserId: "bob"}}}})
	f.Add(append(append([]byte{1, 0, 1, 1, 0, byte(len(block))}, block...), append([]byte{0, byte(len(removed))}, removed...)...))

	store, err := pebblestore.Open("fuzz", pebblestore.InMemory())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	ctx := context.Background()
	run := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		run++
		recs := fuzzRecords(fmt.Sprintf("r%d/", run), data)
		polls := [][]*kgo.Record{recs[:len(recs)/2], recs[len(recs)/2:]}
		apply := func() {
			guard := &records.SeqGuard{}
			for _, poll := range polls {
				b := records.SortEvents(poll, guard)
				if got := len(b.Records) + len(b.Rejected) + b.Stale; got != len(poll) {
					t.Fatalf("%d records sorted into %d", len(poll), got)
				}
				if len(b.Records) > 0 {
					if err := store.Apply(ctx, b.Records); err != nil {
						t.Fatalf("the store refused what the consumer passed it: %v", err)
					}
				}
			}
		}
		apply()

		// The model: per conversation, every valid event above the last
		// seq taken so far, in log order.
		want := map[string][]*chatv1.Event{}
		for _, r := range recs {
			rec, err := records.DecodeEventRecord(r.Value)
			if err != nil || rec.GetEvent() == nil {
				continue
			}
			ev, conv := rec.GetEvent(), rec.GetEvent().GetConversationId()
			if n := len(want[conv]); n == 0 || ev.GetSeq() > want[conv][n-1].GetSeq() {
				want[conv] = append(want[conv], ev)
			}
		}
		for conv, evs := range want {
			want[conv] = nowShown(evs)
		}
		summaries := map[string]*chatv1.Conversation{}
		for conv, evs := range want {
			checkHistory(t, store, conv, evs)
			sum, err := store.Conversation(ctx, conv)
			if err != nil {
				t.Fatalf("conversation %q: %v", conv, err)
			}
			if sum.GetLastSeq() != evs[len(evs)-1].GetSeq() {
				t.Fatalf("conversation %q: last seq %d, want %d", conv, sum.GetLastSeq(), evs[len(evs)-1].GetSeq())
			}
			summaries[conv] = sum
		}

		apply()
		for conv, evs := range want {
			checkHistory(t, store, conv, evs)
			if sum, err := store.Conversation(ctx, conv); err != nil || !proto.Equal(sum, summaries[conv]) {
				t.Fatalf("conversation %q changed on replay: %v (%v), was %v", conv, sum, err, summaries[conv])
			}
		}
	})
}

// nowShown is the model of history.Overlay's input: for each target seq,
// the highest edit, whether it was deleted, and which (emoji, user)
// reactions the latest add or remove left present. It returns copies of
// evs as history shows them.
func nowShown(evs []*chatv1.Event) []*chatv1.Event {
	states := map[uint64]*history.MessageState{}
	state := func(seq uint64) *history.MessageState {
		if states[seq] == nil {
			states[seq] = &history.MessageState{}
		}
		return states[seq]
	}
	type reaction struct {
		seq         uint64
		emoji, user string
	}
	present := map[reaction]bool{}
	var order []reaction
	for _, ev := range evs {
		switch b := ev.GetBody().(type) {
		case *chatv1.Event_MessageEdited:
			state(b.MessageEdited.GetTargetSeq()).Edit = ev
		case *chatv1.Event_MessageDeleted:
			state(b.MessageDeleted.GetTargetSeq()).Deleted = true
		case *chatv1.Event_ReactionAdded:
			k := reaction{b.ReactionAdded.GetTargetSeq(), b.ReactionAdded.GetEmoji(), ev.GetSenderId()}
			present[k] = true
			order = append(order, k)
		case *chatv1.Event_ReactionRemoved:
			present[reaction{b.ReactionRemoved.GetTargetSeq(), b.ReactionRemoved.GetEmoji(), ev.GetSenderId()}] = false
		}
	}
	counts := map[uint64]*history.Reactions{}
	for _, k := range order {
		if present[k] {
			present[k] = false // count each once
			if counts[k.seq] == nil {
				counts[k.seq] = &history.Reactions{}
			}
			counts[k.seq].Add(k.emoji, k.user, "")
		}
	}
	for seq, c := range counts {
		state(seq).Reactions = c.Counts()
	}
	out := make([]*chatv1.Event, len(evs))
	for i, ev := range evs {
		out[i] = proto.CloneOf(ev)
	}
	history.Overlay(out, states)
	return out
}

// checkHistory pages conv forwards by 3 and backwards by 2; both must give
// exactly want.
func checkHistory(t *testing.T, store history.Store, conv string, want []*chatv1.Event) {
	t.Helper()
	var fwd, back []*chatv1.Event
	for q := (history.Query{Forward: true, Limit: 3}); ; {
		page, err := store.History(context.Background(), conv, q)
		if err != nil {
			t.Fatalf("history of %q after %d: %v", conv, q.AfterSeq, err)
		}
		fwd = append(fwd, page.Events...)
		if !page.HasMore || len(page.Events) == 0 {
			break
		}
		q.AfterSeq = page.Events[len(page.Events)-1].GetSeq()
	}
	for q := (history.Query{Limit: 2}); ; {
		page, err := store.History(context.Background(), conv, q)
		if err != nil {
			t.Fatalf("history of %q before %d: %v", conv, q.BeforeSeq, err)
		}
		back = append(page.Events, back...)
		if !page.HasMore || len(page.Events) == 0 {
			break
		}
		q.BeforeSeq = page.Events[0].GetSeq()
	}
	for _, got := range [][]*chatv1.Event{fwd, back} {
		for i, ev := range got {
			if i > 0 && ev.GetSeq() <= got[i-1].GetSeq() {
				t.Fatalf("history of %q: seq %d after %d", conv, ev.GetSeq(), got[i-1].GetSeq())
			}
			if i >= len(want) || !proto.Equal(ev, want[i]) {
				t.Fatalf("history of %q holds %v at %d, want %v", conv, ev, i, want[min(i, len(want)-1)])
			}
		}
		if len(got) != len(want) {
			t.Fatalf("history of %q holds %d events, want %d", conv, len(got), len(want))
		}
	}
}

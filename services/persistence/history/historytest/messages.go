package historytest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func at(conv string, seq uint64, sender string) *chatv1.Event {
	return &chatv1.Event{ConversationId: conv, Seq: seq, EventId: fmt.Sprintf("%s-%d", conv, seq), SenderId: sender,
		Time: timestamppb.New(base.Add(time.Duration(seq) * time.Second))}
}

// Rich returns a message record at seq with the given body.
func Rich(conv string, seq uint64, sender string, m *chatv1.MessagePosted) *logv1.EventRecord {
	ev := at(conv, seq, sender)
	ev.Body = &chatv1.Event_MessagePosted{MessagePosted: m}
	return &logv1.EventRecord{Event: ev}
}

// Edited returns an edit of target at seq; latest as the sequencer would
// set it.
func Edited(conv string, seq uint64, sender string, target uint64, text string, latest bool) *logv1.EventRecord {
	ev := at(conv, seq, sender)
	ev.Body = &chatv1.Event_MessageEdited{MessageEdited: &chatv1.MessageEdited{TargetSeq: target, Text: text, Latest: latest,
		Links: []*chatv1.LinkSpan{{Start: 0, End: uint32(len(text)), Url: "https://edited.example"}}}}
	return &logv1.EventRecord{Event: ev}
}

// Deleted returns a delete of target at seq.
func Deleted(conv string, seq uint64, sender string, target uint64, latest bool) *logv1.EventRecord {
	ev := at(conv, seq, sender)
	ev.Body = &chatv1.Event_MessageDeleted{MessageDeleted: &chatv1.MessageDeleted{TargetSeq: target, Latest: latest}}
	return &logv1.EventRecord{Event: ev}
}

// Reacted returns a reaction added (or, with add false, removed) at seq.
func Reacted(conv string, seq uint64, sender string, target uint64, emoji string, add bool) *logv1.EventRecord {
	ev := at(conv, seq, sender)
	if add {
		ev.Body = &chatv1.Event_ReactionAdded{ReactionAdded: &chatv1.ReactionAdded{TargetSeq: target, Emoji: emoji}}
	} else {
		ev.Body = &chatv1.Event_ReactionRemoved{ReactionRemoved: &chatv1.ReactionRemoved{TargetSeq: target, Emoji: emoji}}
	}
	return &logv1.EventRecord{Event: ev}
}

// shown renders a page compactly: seq:kind and, for messages, their
// current text, flags and reactions.
func shown(p history.Page) string {
	var b strings.Builder
	for _, ev := range p.Events {
		fmt.Fprintf(&b, "%d:", ev.GetSeq())
		switch body := ev.GetBody().(type) {
		case *chatv1.Event_MessagePosted:
			m := body.MessagePosted
			fmt.Fprintf(&b, "msg %q", m.GetText())
			if m.GetEditedSeq() != 0 {
				fmt.Fprintf(&b, " edited@%d", m.GetEditedSeq())
				if !m.GetEditedTime().AsTime().Equal(base.Add(time.Duration(m.GetEditedSeq()) * time.Second)) {
					fmt.Fprintf(&b, " (edited_time %v)", m.GetEditedTime().AsTime())
				}
			}
			if m.GetDeleted() {
				b.WriteString(" deleted")
			}
			if n := len(m.GetAttachments()) + len(m.GetLinks()) + len(m.GetMentionIds()); n > 0 || m.GetContact() != nil {
				fmt.Fprintf(&b, " +%d", n)
			}
			for _, r := range m.GetReactions() {
				fmt.Fprintf(&b, " %s%d", r.GetEmoji(), r.GetCount())
				if r.GetMe() {
					b.WriteString("*")
				}
			}
		case *chatv1.Event_MessageEdited:
			fmt.Fprintf(&b, "edit %d %q", body.MessageEdited.GetTargetSeq(), body.MessageEdited.GetText())
		case *chatv1.Event_MessageDeleted:
			fmt.Fprintf(&b, "delete %d", body.MessageDeleted.GetTargetSeq())
		case *chatv1.Event_ReactionAdded:
			fmt.Fprintf(&b, "react %d %s", body.ReactionAdded.GetTargetSeq(), body.ReactionAdded.GetEmoji())
		case *chatv1.Event_ReactionRemoved:
			fmt.Fprintf(&b, "unreact %d %s", body.ReactionRemoved.GetTargetSeq(), body.ReactionRemoved.GetEmoji())
		default:
			b.WriteString("other")
		}
		b.WriteString("; ")
	}
	return strings.TrimSuffix(b.String(), "; ")
}

func wantShown(t *testing.T, s history.Store, conv string, q history.Query, want string) {
	t.Helper()
	p, err := s.History(context.Background(), conv, q)
	if err != nil {
		t.Fatal(err)
	}
	if got := shown(p); got != want {
		t.Fatalf("history %+v:\n got  %s\n want %s", q, got, want)
	}
}

func wantPreview(t *testing.T, s history.Store, conv, want string) {
	t.Helper()
	c, err := s.Conversation(context.Background(), conv)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%d %v %q deleted=%v", c.GetLastMessageSeq(), c.GetLastMessageKind(), c.GetLastMessagePreview(), c.GetLastMessageDeleted())
	if got != want {
		t.Fatalf("preview of %s: %s, want %s", conv, got, want)
	}
}

// runMessages is the part of the suite about what edits, deletes and
// reactions do to history and previews.
func runMessages(t *testing.T, open func(t *testing.T) history.Store) {
	all := history.Query{Forward: true, Limit: history.MaxLimit}
	group := func(conv string) *logv1.EventRecord {
		return Created(conv, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice", "bob")
	}
	t.Run("EditsAndDeletes", func(t *testing.T) {
		s := open(t)
		c := "c-" + t.Name()
		log := []*logv1.EventRecord{
			group(c),
			Rich(c, 2, "bob", &chatv1.MessagePosted{Text: "hello", MentionIds: []string{"alice"}}),
			Posted(c, 3, "alice", "second"),
			Edited(c, 4, "bob", 2, "hello again", false),
			Edited(c, 5, "bob", 2, "third version", false),
			Deleted(c, 6, "alice", 3, true),
		}
		want := `1:other; 2:msg "third version" edited@5 +1; 3:msg "" deleted; 4:edit 2 "hello again"; 5:edit 2 "third version"; 6:delete 3`
		apply(t, s, log...)
		wantShown(t, s, c, all, want)
		wantShown(t, s, c, history.Query{Limit: 2}, `5:edit 2 "third version"; 6:delete 3`)
		wantShown(t, s, c, history.Query{Forward: true, AfterSeq: 1, Limit: 2}, `2:msg "third version" edited@5 +1; 3:msg "" deleted`)
		wantPreview(t, s, c, `3 MESSAGE_KIND_TEXT "" deleted=true`)
		// At least once: the whole log again, and a stale edit alone.
		apply(t, s, log...)
		apply(t, s, log[3])
		apply(t, s, log[1], log[2])
		wantShown(t, s, c, all, want)
		wantPreview(t, s, c, `3 MESSAGE_KIND_TEXT "" deleted=true`)
	})
	t.Run("DeleteRedactsEdits", func(t *testing.T) {
		s := open(t)
		c := "c-" + t.Name()
		apply(t, s, group(c), Posted(c, 2, "bob", "secret"), Edited(c, 3, "bob", 2, "still secret", true), Deleted(c, 4, "bob", 2, true))
		wantShown(t, s, c, all, `1:other; 2:msg "" deleted; 3:edit 2 ""; 4:delete 2`)
		// The edit alone in a page is redacted too: its target is elsewhere.
		p, err := s.History(context.Background(), c, history.Query{Forward: true, AfterSeq: 2, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if e := p.Events[0].GetMessageEdited(); e.GetText() != "" || len(e.GetLinks()) != 0 {
			t.Fatalf("edit of a deleted message shows %v", e)
		}
	})
	t.Run("Reactions", func(t *testing.T) {
		s := open(t)
		c := "c-" + t.Name()
		log := []*logv1.EventRecord{
			group(c),
			Posted(c, 2, "bob", "hi"),
			Reacted(c, 3, "alice", 2, "👍", true),
			Reacted(c, 4, "bob", 2, "👍", true),
			Reacted(c, 5, "bob", 2, "🎉", true),
			Reacted(c, 6, "alice", 2, "👍", false),
			Reacted(c, 7, "alice", 2, "a", true),
		}
		apply(t, s, log...)
		page := func(viewer string) history.Query {
			return history.Query{Forward: true, AfterSeq: 1, Limit: 1, Viewer: viewer}
		}
		wantShown(t, s, c, page("bob"), `2:msg "hi" a1 🎉1* 👍1*`)
		wantShown(t, s, c, page("alice"), `2:msg "hi" a1* 🎉1 👍1`)
		wantShown(t, s, c, page(""), `2:msg "hi" a1 🎉1 👍1`)
		// Replays, whole and of a single stale add, change nothing.
		apply(t, s, log...)
		apply(t, s, log[2])
		wantShown(t, s, c, page("alice"), `2:msg "hi" a1* 🎉1 👍1`)
		// Re-adding after a removal counts again; a deleted message shows
		// no reactions.
		apply(t, s, Reacted(c, 8, "alice", 2, "👍", true))
		wantShown(t, s, c, page("alice"), `2:msg "hi" a1* 🎉1 👍2*`)
		apply(t, s, Deleted(c, 9, "bob", 2, true))
		wantShown(t, s, c, page("alice"), `2:msg "" deleted`)
	})
	t.Run("Previews", func(t *testing.T) {
		s := open(t)
		c := "c-" + t.Name()
		img := &chatv1.Attachment{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Url: "https://cdn.example/a.png", ContentType: "image/png", SizeBytes: 9, Width: 1, Height: 2, Name: "a.png"}
		apply(t, s, group(c))
		wantPreview(t, s, c, `0 MESSAGE_KIND_UNSPECIFIED "" deleted=false`)
		apply(t, s, Rich(c, 2, "bob", &chatv1.MessagePosted{Attachments: []*chatv1.Attachment{img}}))
		wantPreview(t, s, c, `2 MESSAGE_KIND_ATTACHMENT "attachment" deleted=false`)
		apply(t, s, Rich(c, 3, "bob", &chatv1.MessagePosted{Contact: &chatv1.ContactCard{DisplayName: "Al"}}))
		wantPreview(t, s, c, `3 MESSAGE_KIND_CONTACT "contact" deleted=false`)
		apply(t, s, Rich(c, 4, "bob", &chatv1.MessagePosted{Text: "look", Attachments: []*chatv1.Attachment{img}}))
		wantPreview(t, s, c, `4 MESSAGE_KIND_ATTACHMENT "look" deleted=false`)
		apply(t, s, Edited(c, 5, "bob", 4, "look at this", true))
		wantPreview(t, s, c, `4 MESSAGE_KIND_ATTACHMENT "look at this" deleted=false`)
		apply(t, s, Posted(c, 6, "alice", "newest"), Edited(c, 7, "bob", 4, "older edit", false), Reacted(c, 8, "bob", 6, "x", true))
		wantPreview(t, s, c, `6 MESSAGE_KIND_TEXT "newest" deleted=false`)
		apply(t, s, Deleted(c, 9, "alice", 6, true))
		wantPreview(t, s, c, `6 MESSAGE_KIND_TEXT "" deleted=true`)
		// Replayed, the older events lose to the newer.
		apply(t, s, Posted(c, 6, "alice", "newest"), Edited(c, 5, "bob", 4, "look at this", true))
		wantPreview(t, s, c, `6 MESSAGE_KIND_TEXT "" deleted=true`)
		apply(t, s, Posted(c, 10, "bob", "after"))
		wantPreview(t, s, c, `10 MESSAGE_KIND_TEXT "after" deleted=false`)
		// The rich message comes back whole.
		p, err := s.History(context.Background(), c, history.Query{Forward: true, AfterSeq: 1, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Events[0].GetMessagePosted().GetAttachments(); len(got) != 1 || !proto.Equal(got[0], img) {
			t.Fatalf("attachments %v", got)
		}
	})
	t.Run("ReactionsOnBackwardPages", func(t *testing.T) {
		// Pages ending before a seq, or the newest, one of them across a
		// Cassandra bucket boundary (100): the reactions of their
		// messages and of no others.
		s := open(t)
		c := "c-" + t.Name()
		log := []*logv1.EventRecord{group(c)}
		for seq := uint64(2); seq <= 130; seq++ {
			log = append(log, Posted(c, seq, "bob", fmt.Sprint("m", seq)))
		}
		log = append(log,
			Reacted(c, 131, "alice", 5, "a", true),
			Reacted(c, 132, "alice", 101, "b", true),
			Reacted(c, 133, "bob", 129, "c", true),
			Reacted(c, 134, "bob", 98, "d", true),
			Posted(c, 135, "bob", "m135"),
		)
		apply(t, s, log...)
		wantShown(t, s, c, history.Query{BeforeSeq: 131, Limit: 3, Viewer: "alice"}, `128:msg "m128"; 129:msg "m129" c1; 130:msg "m130"`)
		wantShown(t, s, c, history.Query{BeforeSeq: 103, Limit: 6, Viewer: "alice"},
			`97:msg "m97"; 98:msg "m98" d1; 99:msg "m99"; 100:msg "m100"; 101:msg "m101" b1*; 102:msg "m102"`)
		wantShown(t, s, c, history.Query{BeforeSeq: 7, Limit: 3}, `4:msg "m4"; 5:msg "m5" a1; 6:msg "m6"`)
		wantShown(t, s, c, history.Query{BeforeSeq: 5, Limit: 2}, `3:msg "m3"; 4:msg "m4"`)
		// Reactions on a page's first and last message.
		wantShown(t, s, c, history.Query{BeforeSeq: 130, Limit: 2}, `128:msg "m128"; 129:msg "m129" c1`)
		wantShown(t, s, c, history.Query{BeforeSeq: 8, Limit: 3}, `5:msg "m5" a1; 6:msg "m6"; 7:msg "m7"`)
		wantShown(t, s, c, history.Query{Limit: 2, Viewer: "bob"}, `134:react 98 d; 135:msg "m135"`)
	})
	t.Run("AcrossBuckets", func(t *testing.T) {
		// Targets far behind their edits (another Cassandra bucket).
		s := open(t)
		c := "c-" + t.Name()
		var log []*logv1.EventRecord
		log = append(log, group(c))
		for seq := uint64(2); seq <= 250; seq++ {
			log = append(log, Posted(c, seq, "bob", fmt.Sprint("m", seq)))
		}
		log = append(log,
			Edited(c, 251, "bob", 2, "edited late", false),
			Reacted(c, 252, "alice", 2, "👍", true),
			Edited(c, 253, "bob", 3, "gone", false),
			Deleted(c, 254, "bob", 3, false),
		)
		apply(t, s, log...)
		wantShown(t, s, c, history.Query{Forward: true, AfterSeq: 1, Limit: 2, Viewer: "alice"}, `2:msg "edited late" edited@251 +1 👍1*; 3:msg "" deleted`)
		wantShown(t, s, c, history.Query{Limit: 4}, `251:edit 2 "edited late"; 252:react 2 👍; 253:edit 3 ""; 254:delete 3`)
	})
}

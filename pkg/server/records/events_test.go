package records

import (
	"errors"
	"fmt"
	"testing"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func ev(conv string, seq uint64) *chatv1.Event {
	return &chatv1.Event{ConversationId: conv, Seq: seq}
}

// contactItem is an inbox item of owner's about user.
func contactItem(owner, user string) *chatv1.Event {
	e := ev("inbox", 2)
	e.Body = &chatv1.Event_ContactUpdated{ContactUpdated: &chatv1.ContactUpdated{OwnerId: owner, UserId: user}}
	return e
}

func TestDecodeEventRecord(t *testing.T) {
	marshal := func(r *logv1.EventRecord) []byte {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	receipt := &chatv1.Receipt{ConversationId: "c", UserId: "u", ReadSeq: 1}
	cases := []struct {
		name   string
		value  []byte
		reason string
	}{
		{"event", marshal(&logv1.EventRecord{Event: ev("c", 1)}), ""},
		{"receipt", marshal(&logv1.EventRecord{Receipt: receipt}), ""},
		{"block", marshal(&logv1.EventRecord{Block: &logv1.BlockChange{ConversationId: "c", BlockerId: "u", BlockedId: "v", Blocked: true, Time: timestamppb.Now()}}), ""},
		{"block without time", marshal(&logv1.EventRecord{Block: &logv1.BlockChange{ConversationId: "c", BlockerId: "u", BlockedId: "v", Blocked: true}}), ReasonInvalid},
		{"block without blocked", marshal(&logv1.EventRecord{Block: &logv1.BlockChange{ConversationId: "c", BlockerId: "u", Time: timestamppb.Now()}}), ReasonInvalid},
		{"block of NUL", marshal(&logv1.EventRecord{Block: &logv1.BlockChange{ConversationId: "c", BlockerId: "u", BlockedId: "v\x00w", Time: timestamppb.Now()}}), ReasonInvalid},
		{"block and event", marshal(&logv1.EventRecord{Event: ev("c", 1), Block: &logv1.BlockChange{ConversationId: "c", BlockerId: "u"}}), ReasonInvalid},
		{"block without blocker", marshal(&logv1.EventRecord{Block: &logv1.BlockChange{ConversationId: "c"}}), ReasonInvalid},
		{"flags", marshal(&logv1.EventRecord{Flags: &chatv1.ConversationFlags{ConversationId: "c", UserId: "u", Muted: true, Version: 1}}), ""},
		{"flags and receipt", marshal(&logv1.EventRecord{Flags: &chatv1.ConversationFlags{ConversationId: "c", UserId: "u", Version: 1},
			Receipt: &chatv1.Receipt{ConversationId: "c", UserId: "u"}}), ReasonInvalid},
		{"flags without user", marshal(&logv1.EventRecord{Flags: &chatv1.ConversationFlags{ConversationId: "c", Version: 1}}), ReasonInvalid},
		{"flags without version", marshal(&logv1.EventRecord{Flags: &chatv1.ConversationFlags{ConversationId: "c", UserId: "u"}}), ReasonInvalid},
		{"flags with a NUL", marshal(&logv1.EventRecord{Flags: &chatv1.ConversationFlags{ConversationId: "c", UserId: "u\x00v", Version: 1}}), ReasonInvalid},
		{"contact change", marshal(&logv1.EventRecord{Contact: &logv1.ContactChange{ConversationId: "c", ActorId: "u", OtherId: "v", Time: timestamppb.Now()}}), ""},
		{"contact change without other", marshal(&logv1.EventRecord{Contact: &logv1.ContactChange{ConversationId: "c", ActorId: "u"}}), ReasonInvalid},
		{"contact change and block", marshal(&logv1.EventRecord{Contact: &logv1.ContactChange{ConversationId: "c", ActorId: "u", OtherId: "v"},
			Block: &logv1.BlockChange{ConversationId: "c", BlockerId: "u", BlockedId: "v", Time: timestamppb.Now()}}), ReasonInvalid},
		{"contact change with a NUL", marshal(&logv1.EventRecord{Contact: &logv1.ContactChange{ConversationId: "c", ActorId: "u\x00", OtherId: "v"}}), ReasonInvalid},
		{"inbox item", marshal(&logv1.EventRecord{Event: contactItem("u", "v")}), ""},
		{"inbox item without owner", marshal(&logv1.EventRecord{Event: contactItem("", "v")}), ReasonInvalid},
		{"inbox item without user", marshal(&logv1.EventRecord{Event: contactItem("u", "")}), ReasonInvalid},
		{"inbox item with a NUL", marshal(&logv1.EventRecord{Event: contactItem("u", "v\x00")}), ReasonInvalid},
		{"declined invitation", marshal(&logv1.EventRecord{Declined: &logv1.InvitationDeclined{ConversationId: "c", UserId: "u", Time: timestamppb.Now()}}), ""},
		{"declined invitation without user", marshal(&logv1.EventRecord{Declined: &logv1.InvitationDeclined{ConversationId: "c"}}), ReasonInvalid},
		{"declined invitation and receipt", marshal(&logv1.EventRecord{Declined: &logv1.InvitationDeclined{ConversationId: "c", UserId: "u"}, Receipt: receipt}), ReasonInvalid},
		{"garbage", []byte{0xff, 0xff, 0xff}, ReasonUndecodable},
		{"empty value", nil, ReasonEmpty},
		{"recipients only", marshal(&logv1.EventRecord{RecipientIds: []string{"u"}}), ReasonEmpty},
		{"both", marshal(&logv1.EventRecord{Event: ev("c", 1), Receipt: receipt}), ReasonInvalid},
		{"seq 0", marshal(&logv1.EventRecord{Event: ev("c", 0)}), ReasonInvalid},
		{"no conversation", marshal(&logv1.EventRecord{Event: ev("", 1)}), ReasonInvalid},
		{"receipt without conversation", marshal(&logv1.EventRecord{Receipt: &chatv1.Receipt{UserId: "u"}}), ReasonInvalid},
		{"receipt without user", marshal(&logv1.EventRecord{Receipt: &chatv1.Receipt{ConversationId: "c", DeviceId: "d"}}), ReasonInvalid},
		{"NUL in a conversation id", marshal(&logv1.EventRecord{Event: ev("c\x00d", 1)}), ReasonInvalid},
		{"NUL in a device id", marshal(&logv1.EventRecord{Receipt: &chatv1.Receipt{ConversationId: "c", UserId: "u", DeviceId: "d\x00"}}), ReasonInvalid},
	}
	for _, c := range cases {
		rec, err := DecodeEventRecord(c.value)
		var bad *BadRecord
		switch {
		case c.reason == "" && (err != nil || rec == nil):
			t.Errorf("%s: %v, want a record", c.name, err)
		case c.reason != "" && (!errors.As(err, &bad) || bad.Reason != c.reason || rec != nil):
			t.Errorf("%s: record %v, error %v, want reason %s", c.name, rec, err, c.reason)
		}
	}
}

func TestSortEvents(t *testing.T) {
	value := func(r *logv1.EventRecord) []byte {
		b, _ := proto.Marshal(r)
		return b
	}
	recs := []*kgo.Record{
		{Topic: topics.Events, Offset: 0, Value: value(&logv1.EventRecord{Event: ev("a", 1)})},
		{Topic: topics.Events, Offset: 1, Value: []byte("garbage")},
		{Topic: topics.Events, Offset: 2, Value: value(&logv1.EventRecord{Event: ev("a", 2)})},
		{Topic: topics.Events, Offset: 3, Value: value(&logv1.EventRecord{Receipt: &chatv1.Receipt{ConversationId: "a", UserId: "u", ReadSeq: 2}})},
		{Topic: topics.Events, Offset: 4, Value: value(&logv1.EventRecord{Event: &chatv1.Event{ConversationId: "a", Seq: 2, EventId: "zombie"}})},
		{Topic: topics.Events, Offset: 5, Value: value(&logv1.EventRecord{Event: ev("a", 3)})},
	}
	var g SeqGuard
	b := SortEvents(recs, &g)
	var got []string
	for _, r := range b.Records {
		if r.GetEvent() != nil {
			got = append(got, fmt.Sprintf("event %d", r.GetEvent().GetSeq()))
		} else {
			got = append(got, "receipt")
		}
	}
	if fmt.Sprint(got) != "[event 1 event 2 receipt event 3]" || b.Stale != 1 ||
		len(b.Rejected) != 1 || b.Rejected[0].Record.Offset != 1 || ReasonOf(b.Rejected[0].Err) != ReasonUndecodable {
		t.Fatalf("records %v, stale %d, rejected %v", got, b.Stale, b.Rejected)
	}
}

// TestSortEventsFindsHoles: an event beyond the next seq of a conversation
// the guard knows is kept and its hole reported; a conversation seen for
// the first time (after a restart, say) reports none, whatever its seq.
func TestSortEventsFindsHoles(t *testing.T) {
	rec := func(conv string, seq uint64) *kgo.Record {
		b, _ := proto.Marshal(&logv1.EventRecord{Event: ev(conv, seq)})
		return &kgo.Record{Topic: topics.Events, Value: b}
	}
	var g SeqGuard
	b := SortEvents([]*kgo.Record{rec("a", 1), rec("a", 2), rec("a", 5), rec("b", 7), rec("b", 8), rec("a", 6), rec("b", 10)}, &g)
	if len(b.Records) != 7 || b.Stale != 0 {
		t.Fatalf("%d records, %d stale; want 7 and 0", len(b.Records), b.Stale)
	}
	want := []Gap{{"a", 3, 4}, {"b", 9, 9}}
	if fmt.Sprint(b.Gaps) != fmt.Sprint(want) {
		t.Fatalf("gaps %v, want %v", b.Gaps, want)
	}
}

package records

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Why a consumer set a record aside; the reason label of
// parley_dead_letters_total and the HeaderReason of the dead letter.
const (
	// ReasonUndecodable: the value is not an EventRecord.
	ReasonUndecodable = "undecodable"
	// ReasonEmpty: the record holds neither an event, a receipt, a block,
	// flags, a contact change nor a declined invitation.
	ReasonEmpty = "empty"
	// ReasonInvalid: it decodes, but no sequencer writes it (an event
	// without conversation id or seq, a receipt without conversation or
	// user id, a block without its users or time, or an event and a
	// receipt at once), and every history store
	// would refuse it on every retry.
	ReasonInvalid = "invalid"
)

// BadRecord is why DecodeEventRecord refused a record.
type BadRecord struct {
	Reason string
	Err    error
}

func (e *BadRecord) Error() string { return e.Reason + " event record: " + e.Err.Error() }
func (e *BadRecord) Unwrap() error { return e.Err }

// DecodeEventRecord decodes a record of topics.Events as every consumer of the
// log must: an error is always a *BadRecord, and the record is then
// dead-lettered, never applied, pushed or silently dropped.
func DecodeEventRecord(value []byte) (*logv1.EventRecord, error) {
	rec := &logv1.EventRecord{}
	if err := proto.Unmarshal(value, rec); err != nil {
		return nil, &BadRecord{ReasonUndecodable, err}
	}
	ev, rc, bl, fl, ct, dc := rec.GetEvent(), rec.GetReceipt(), rec.GetBlock(), rec.GetFlags(), rec.GetContact(), rec.GetDeclined()
	switch n := count(ev != nil, rc != nil, bl != nil, fl != nil, ct != nil, dc != nil); {
	case n == 0:
		return nil, &BadRecord{ReasonEmpty, errors.New("neither event nor receipt nor block nor flags nor contact nor declined invitation")}
	case n > 1:
		return nil, &BadRecord{ReasonInvalid, errors.New("more than one of event, receipt, block, flags, contact and declined invitation")}
	case dc != nil && (dc.GetConversationId() == "" || dc.GetUserId() == ""):
		return nil, &BadRecord{ReasonInvalid, errors.New("declined invitation without conversation or user id")}
	case ct != nil && (ct.GetConversationId() == "" || ct.GetActorId() == "" || ct.GetOtherId() == ""):
		return nil, &BadRecord{ReasonInvalid, errors.New("contact change without conversation, actor or other id")}
	case fl != nil && (fl.GetConversationId() == "" || fl.GetUserId() == "" || fl.GetVersion() == 0):
		return nil, &BadRecord{ReasonInvalid, errors.New("flags without conversation id, user id or version")}
	case bl != nil && (bl.GetConversationId() == "" || bl.GetBlockerId() == "" || bl.GetBlockedId() == "" || bl.GetTime() == nil):
		// The time orders a pair's block records in the stores' views
		// (history.NewerBlock); without it a record could not be ranked.
		return nil, &BadRecord{ReasonInvalid, errors.New("block without conversation, blocker or blocked id, or time")}
	case ev != nil && (ev.GetConversationId() == "" || ev.GetSeq() == 0):
		return nil, &BadRecord{ReasonInvalid, fmt.Errorf("event %q without conversation id or seq", ev.GetEventId())}
	case ev.GetInvitationUpdated() != nil && (ev.GetInvitationUpdated().GetOwnerId() == "" || ev.GetInvitationUpdated().GetConversationId() == ""):
		return nil, &BadRecord{ReasonInvalid, fmt.Errorf("inbox item %q without its owner or conversation id", ev.GetEventId())}
	case ev.GetContactUpdated() != nil && (ev.GetContactUpdated().GetOwnerId() == "" || ev.GetContactUpdated().GetUserId() == ""):
		// The stores key the owner's contact list by both.
		return nil, &BadRecord{ReasonInvalid, fmt.Errorf("inbox item %q without its owner or user id", ev.GetEventId())}
	case rc != nil && (rc.GetConversationId() == "" || rc.GetUserId() == ""):
		return nil, &BadRecord{ReasonInvalid, errors.New("receipt without conversation or user id")}
	case hasNUL(ev.GetConversationId(), ev.GetSenderId(), ev.GetSenderDeviceId(), rc.GetConversationId(), rc.GetUserId(), rc.GetDeviceId(),
		fl.GetConversationId(), fl.GetUserId(), bl.GetBlockerId(), bl.GetBlockedId(),
		ct.GetConversationId(), ct.GetActorId(), ct.GetOtherId(), ev.GetContactUpdated().GetOwnerId(), ev.GetContactUpdated().GetUserId(),
		dc.GetConversationId(), dc.GetUserId()):
		// Ingest never lets one through, and stores that build keys from
		// ids (Pebble) use NUL as the separator.
		return nil, &BadRecord{ReasonInvalid, errors.New("an id holds a NUL byte")}
	}
	return rec, nil
}

func count(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

func hasNUL(ids ...string) bool {
	for _, id := range ids {
		if strings.IndexByte(id, 0) >= 0 {
			return true
		}
	}
	return false
}

// Rejected is a record a consumer will not use, and why.
type Rejected struct {
	Record *kgo.Record
	Err    error
}

// EventBatch is one poll of the event log sorted out.
type EventBatch struct {
	// Records are the ones to handle, events, receipts, blocks and flags,
	// in log order.
	Records []*logv1.EventRecord
	// Rejected are for topics.DeadLetter.
	Rejected []Rejected
	// Stale counts events skipped by the guard.
	Stale int
	// Gaps are the holes the guard saw in conversations' seqs.
	Gaps []Gap
}

// Gap is a hole in a conversation's seqs: From..To (inclusive) are not on
// the log.
type Gap struct {
	Conversation string
	From, To     uint64
}

// SortEvents decodes records of topics.Events and passes each event through
// guard, as every consumer of the log does.
func SortEvents(recs []*kgo.Record, guard *SeqGuard) EventBatch {
	var b EventBatch
	for _, r := range recs {
		rec, err := DecodeEventRecord(r.Value)
		if err != nil {
			b.Rejected = append(b.Rejected, Rejected{r, err})
			continue
		}
		if ev := rec.GetEvent(); ev != nil {
			fresh, missing := guard.Admit(r, ev)
			if !fresh {
				b.Stale++
				continue
			}
			if missing > 0 {
				b.Gaps = append(b.Gaps, Gap{ev.GetConversationId(), missing, ev.GetSeq() - 1})
			}
		}
		b.Records = append(b.Records, rec)
	}
	return b
}

// Counts is what Triage reports to a consumer's metrics.
type Counts interface {
	DeadLetter(reason string)
	Stale(n int)
	Gap(log *slog.Logger, conv string, from, to uint64)
}

// Triage is the first step of every consumer of the event log with a poll
// in hand: sort it (SortEvents), set aside what cannot be used (SetAside,
// before anything is committed) and count both. It returns the records to
// handle, and false when ctx ended before the dead letters were written
// (the batch must then not be committed).
func Triage(ctx context.Context, cl *kgo.Client, log *slog.Logger, consumer string, recs []*kgo.Record, guard *SeqGuard, counts Counts) ([]*logv1.EventRecord, bool) {
	b := SortEvents(recs, guard)
	if b.Stale > 0 {
		counts.Stale(b.Stale)
		log.Warn("skipped events at or below a seq already handled (a zombie sequencer's copies)", "consumer", consumer, "events", b.Stale)
	}
	for _, g := range b.Gaps {
		counts.Gap(log.With("consumer", consumer), g.Conversation, g.From, g.To)
	}
	if err := SetAside(ctx, cl, log, consumer, b.Rejected); err != nil {
		return nil, false
	}
	for _, r := range b.Rejected {
		counts.DeadLetter(ReasonOf(r.Err))
	}
	return b.Records, true
}

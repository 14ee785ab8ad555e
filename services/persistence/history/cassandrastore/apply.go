package cassandrastore

import (
	"context"
	"fmt"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// convWrites are one conversation's records within an Apply call: its
// events, and the positions they and its receipts move, folded to the
// highest (the lower ones would lose to it anyway).
type convWrites struct {
	id        string
	events    []*chatv1.Event
	blobs     [][]byte
	reads     map[string]uint64    // user -> read seq
	delivered map[[2]string]uint64 // (user, device) -> delivered seq
	// states are the edits, deletes and reactions among events, written
	// to their target message's rows (see migrations/0004_messages.cql).
	states []stateWrite
	// flags are each user's flags of highest version in this call (see
	// migrations/0005_flags.cql).
	flags map[string]*chatv1.ConversationFlags
}

// setFlags keeps f if it is the user's newest in this call; the store's
// timestamps sort it out against what is stored.
func (w *convWrites) setFlags(f *chatv1.ConversationFlags) {
	if w.flags == nil {
		w.flags = map[string]*chatv1.ConversationFlags{}
	}
	if history.NewerFlags(f, w.flags[f.GetUserId()].GetVersion()) {
		w.flags[f.GetUserId()] = f
	}
}

// stateWrite is one edit, delete or reaction: what it does to the row of
// its target message.
type stateWrite struct {
	ev     *chatv1.Event
	target uint64
	blob   []byte // the edit event, for edits
}

// move folds a position change with history.ApplyReceipt. A change
// without a device has no delivered position to keep.
func (w *convWrites) move(user, device string, r *chatv1.Receipt) {
	dk := [2]string{user, device}
	pos := &chatv1.Receipt{ReadSeq: w.reads[user], DeliveredSeq: w.delivered[dk]}
	if !history.ApplyReceipt(pos, r) {
		return
	}
	if pos.GetReadSeq() > 0 {
		if w.reads == nil {
			w.reads = map[string]uint64{}
		}
		w.reads[user] = pos.GetReadSeq()
	}
	if device != "" && pos.GetDeliveredSeq() > 0 {
		if w.delivered == nil {
			w.delivered = map[[2]string]uint64{}
		}
		w.delivered[dk] = pos.GetDeliveredSeq()
	}
}

var marshal = proto.MarshalOptions{Deterministic: true}

// Apply implements history.Store: first every event row, then every
// summary, membership and position row; nil only when all of them were
// acknowledged at the configured consistency. Should that second step
// take longer than history.ChangeLag, a third one writes the change times
// again with the clock after it.
func (s *Store) Apply(ctx context.Context, recs []*logv1.EventRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var convs []*convWrites
	var blocks blockWrites
	var contacts contactWrites
	byID := map[string]*convWrites{}
	writes := func(conv string) *convWrites {
		w := byID[conv]
		if w == nil {
			w = &convWrites{id: conv}
			byID[conv] = w
			convs = append(convs, w)
		}
		return w
	}
	for _, rec := range recs {
		ev, r := rec.GetEvent(), rec.GetReceipt()
		switch f := rec.GetFlags(); {
		case rec.GetBlock() != nil && ev == nil && r == nil:
			bl := rec.GetBlock()
			if bl.GetBlockerId() == "" || bl.GetBlockedId() == "" || bl.GetTime() == nil {
				return fmt.Errorf("apply block of %q by %q: missing blocker, blocked user or time", bl.GetBlockedId(), bl.GetBlockerId())
			}
			if history.BlockStamp(bl) <= 0 {
				return fmt.Errorf("apply block of %s by %s: time %v not after 1970, no write timestamp", bl.GetBlockedId(), bl.GetBlockerId(), bl.GetTime().AsTime())
			}
			blocks.add(bl)
			continue
		case (rec.GetContact() != nil || rec.GetDeclined() != nil) && ev == nil && r == nil:
			// The sequencer's own records: each user's contact list is
			// folded from the items of their inbox, and nobody is shown
			// a declined invitation but the invitee, in theirs.
			continue
		case f != nil && ev == nil && r == nil:
			conv, user := f.GetConversationId(), f.GetUserId()
			if conv == "" || user == "" {
				return fmt.Errorf("apply flags of %q in %q: missing conversation or user id", user, conv)
			}
			if f.GetVersion() == 0 || f.GetVersion() > maxSeq {
				return fmt.Errorf("apply flags of %s in %s: version %d not in 1..%d", user, conv, f.GetVersion(), uint64(maxSeq))
			}
			writes(conv).setFlags(f)
			continue
		case ev != nil && r != nil:
			return fmt.Errorf("apply record of command %q: holds both an event and a receipt", rec.GetCommandId())
		case r != nil:
			conv, user := r.GetConversationId(), r.GetUserId()
			if conv == "" || user == "" {
				return fmt.Errorf("apply receipt of %q/%q in %q: missing conversation or user id", user, r.GetDeviceId(), conv)
			}
			if seq := max(r.GetDeliveredSeq(), r.GetReadSeq()); seq > maxSeq {
				return fmt.Errorf("apply receipt of %s/%s in %s: seq %d beyond %d", user, r.GetDeviceId(), conv, seq, uint64(maxSeq))
			}
			// A conversation not stored yet gets the positions all the
			// same; Receipts shows them once it exists.
			writes(conv).move(user, r.GetDeviceId(), r)
			continue
		case ev == nil:
			return fmt.Errorf("apply record of command %q: holds neither an event nor a receipt", rec.GetCommandId())
		}
		conv, seq := ev.GetConversationId(), ev.GetSeq()
		if conv == "" || seq == 0 {
			return fmt.Errorf("apply event %q: missing conversation id or seq", ev.GetEventId())
		}
		if seq > maxSeq {
			return fmt.Errorf("apply event %s/%d: seq beyond %d", conv, seq, uint64(maxSeq))
		}
		if n := len(ev.GetConversationCreated().GetMemberIds()); n > maxMembersPerEvent {
			return fmt.Errorf("apply event %s/%d: %d members in one event, at most %d", conv, seq, n, maxMembersPerEvent)
		}
		blob, err := marshal.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal event %s/%d: %w", conv, seq, err)
		}
		w := writes(conv)
		w.events = append(w.events, ev)
		w.blobs = append(w.blobs, blob)
		if target := stateTarget(ev); target != 0 {
			if target > maxSeq {
				return fmt.Errorf("apply event %s/%d: target seq %d beyond %d", conv, seq, target, uint64(maxSeq))
			}
			st := stateWrite{ev: ev, target: target}
			if ev.GetMessageEdited() != nil {
				st.blob = blob
			}
			w.states = append(w.states, st)
		}
		if u := ev.GetContactUpdated(); u != nil {
			if u.GetOwnerId() == "" || u.GetUserId() == "" {
				return fmt.Errorf("apply contact item %s/%d: missing owner or user id", conv, seq)
			}
			contacts.add(ev)
		}
		if u := ev.GetSenderId(); u != "" {
			// What you post you have, and have read.
			w.move(u, ev.GetSenderDeviceId(), &chatv1.Receipt{DeliveredSeq: seq, ReadSeq: seq})
		}
	}
	if len(convs) == 0 && len(blocks.order) == 0 && len(contacts.order) == 0 {
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	// Blocks belong to no conversation's view, so they may land with the
	// events.
	s.writeBlocks(gctx, g, &blocks)
	s.writeContacts(gctx, g, &contacts)
	events := s.newPack(gctx)
	for _, w := range convs {
		s.writeEvents(events, w)
		s.writeStates(events, w)
	}
	events.run(g)
	if err := g.Wait(); err != nil {
		return err
	}

	// The clock is read as late as possible: the changes become visible
	// with the writes that follow.
	stamp := s.now()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	views := s.newPack(gctx)
	for _, w := range convs {
		s.writeSummary(views, w, stamp.UnixNano())
	}
	s.writeUserReads(views, convs, stamp.UnixNano())
	views.run(g)
	s.writeFlags(gctx, g, convs, stamp.UnixNano(), false)
	if err := g.Wait(); err != nil {
		return err
	}
	if s.now().Sub(stamp) <= history.ChangeLag {
		return nil
	}
	return s.restamp(ctx, convs, s.now().UnixNano())
}

// restamp writes the change times of an Apply again, at a time after its
// changes became visible (see history.ChangeLag). Each changed_at goes
// with the timestamp it was first written with and a later value, so it
// wins the tie, and loses to anything newer.
func (s *Store) restamp(ctx context.Context, convs []*convWrites, stamp int64) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, w := range convs {
		var last uint64
		for _, ev := range w.events {
			last = max(last, ev.GetSeq())
		}
		if last == 0 {
			continue
		}
		g.Go(func() error {
			if err := s.sess.Query(restampConv, int64(last), stamp, w.id).WithContext(gctx).Exec(); err != nil {
				return fmt.Errorf("write change time of %s: %w", w.id, err)
			}
			return nil
		})
	}
	users, byUser := userReads(convs)
	for _, u := range users {
		batch := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(gctx)
		for _, w := range byUser[u] {
			batch.Query(restampUser, int64(w.reads[u]), stamp, u, w.id)
		}
		g.Go(func() error {
			if err := s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("write change times of %s's read positions: %w", u, err)
			}
			return nil
		})
	}
	s.writeFlags(gctx, g, convs, stamp, true)
	return g.Wait()
}

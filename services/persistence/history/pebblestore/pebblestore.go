// Package pebblestore is the embedded history store used by `make run`:
// CockroachDB's Pebble LSM on local disk.
package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Key layout; 0x00 separates parts because ids never contain it.
//
//	e 0 <conversation> 0 <seq, 8 bytes big endian>  -> chat.v1.Event
//	c 0 <conversation>                               -> chat.v1.Conversation
//	t 0 <conversation>                               -> changed-at (8 bytes)
//	u 0 <user> 0 <conversation>                      -> empty (membership)
//	r 0 <conversation> 0 <user>                      -> read seq, changed-at (8+8 bytes)
//	d 0 <conversation> 0 <user> 0 <device>           -> delivered seq (8 bytes)
//	m 0 <conversation> 0 <seq>                       -> latest chat.v1.Event editing seq
//	k 0 <conversation> 0 <seq>                       -> seq of the event deleting seq (8 bytes)
//	x 0 <conversation> 0 <seq> <emoji> 0 <user>      -> seq that set it (8 bytes), present (1 byte)
//	f 0 <user> 0 <conversation>                      -> flags version (8), muted (1), pinned (1), changed-at (8)
//	b 0 <blocker> 0 <blocked>                        -> block stamp (8), blocked (1)
//
// The original message event is never rewritten by what happens to it
// later (m, k and x keys hold that), so applying the message again, as a
// replay does, cannot undo an edit. Each of m and x keeps the value of the
// highest seq that set it, which makes their writes idempotent in any
// order. Reactions are keyed by message seq first, so a message's counts
// are one range scan.
//
// A b key stays when its block is lifted (blocked 0): its stamp (see
// history.NewerBlock) is what keeps an older record, applied again, from
// bringing the block back. Keyed by blocker, a user's blocks are one range
// scan.
//
// Numbers are big endian; a changed-at is the store's clock in Unix
// nanoseconds when Apply changed the summary (t), moved the user's read
// position (r) or changed the user's flags (f). Flags are keyed by user
// first, next to the u keys the conversation list walks; each keeps the
// highest version, so its writes are idempotent in any order. Positions are keyed by conversation first, so Receipts is
// two range scans in (user, device) order, while Conversations reads one
// r key per listed conversation.
const (
	prefixEvent        = 'e'
	prefixConversation = 'c'
	prefixChanged      = 't'
	prefixUser         = 'u'
	prefixRead         = 'r'
	prefixDelivered    = 'd'
	prefixEdit         = 'm'
	prefixDeleted      = 'k'
	prefixReaction     = 'x'
	prefixFlags        = 'f'
	prefixBlock        = 'b'
)

// Store is a history.Store on Pebble.
//
// Apply reads what it folds into (summaries, positions) and writes the
// result in one batch, so two Apply calls must not carry records of the
// same conversation at once; the persistence consumer applies one batch
// at a time.
type Store struct {
	db  *pebble.DB
	now func() time.Time
}

var _ history.Store = (*Store)(nil)

// Option configures Open.
type Option func(*settings)

type settings struct {
	now func() time.Time
	fs  vfs.FS
}

// WithClock sets the clock that change times (ListQuery.ChangedSince) are
// measured with; time.Now by default.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { s.now = now }
}

// InMemory keeps the store in memory instead of dir, for tests that open
// many stores or write a lot: a synced commit costs no fsync there.
func InMemory() Option {
	return func(s *settings) { s.fs = vfs.NewMem() }
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	set := settings{now: time.Now}
	for _, o := range opts {
		o(&set)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}, FS: set.fs})
	if err != nil {
		return nil, fmt.Errorf("open pebble history store at %s: %w", dir, err)
	}
	return &Store{db: db, now: set.now}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func eventKey(conv string, seq uint64) []byte {
	k := make([]byte, 0, 3+len(conv)+8)
	k = append(k, prefixEvent, 0)
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// seqKey is the key of a per-message entry (edit, delete, reactions).
func seqKey(kind byte, conv string, seq uint64) []byte {
	k := make([]byte, 0, 3+len(conv)+8)
	k = append(k, kind, 0)
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func reactionKey(conv string, seq uint64, emoji, user string) []byte {
	k := append(seqKey(prefixReaction, conv, seq), emoji...)
	k = append(k, 0)
	return append(k, user...)
}

func convKey(conv string) []byte {
	return append([]byte{prefixConversation, 0}, conv...)
}

func changedKey(conv string) []byte {
	return append([]byte{prefixChanged, 0}, conv...)
}

func userPrefix(user string) []byte {
	k := append([]byte{prefixUser, 0}, user...)
	return append(k, 0)
}

// positionPrefix is where a conversation's read (r) or delivered (d)
// positions start.
func positionPrefix(kind byte, conv string) []byte {
	k := make([]byte, 0, 3+len(conv))
	k = append(k, kind, 0)
	k = append(k, conv...)
	return append(k, 0)
}

func readKey(conv, user string) []byte {
	return append(positionPrefix(prefixRead, conv), user...)
}

func deliveredKey(conv, user, device string) []byte {
	k := append(positionPrefix(prefixDelivered, conv), user...)
	k = append(k, 0)
	return append(k, device...)
}

// prefixEnd is the smallest key above every key starting with prefix,
// which ends in the 0 separator.
func prefixEnd(prefix []byte) []byte {
	return append(bytes.Clone(prefix[:len(prefix)-1]), 1)
}

func flagsKey(user, conv string) []byte {
	return append(append([]byte{prefixFlags, 0}, user...), append([]byte{0}, conv...)...)
}

func blockPrefix(blocker string) []byte {
	k := append([]byte{prefixBlock, 0}, blocker...)
	return append(k, 0)
}

type userConv struct{ conv, user string }

// flagsState is a user's flags being folded in an Apply: what the store
// holds (or the newer record to write, moved).
type flagsState struct {
	f     *chatv1.ConversationFlags
	moved bool
}

type device struct{ conv, user, device string }

// position is a seq being folded in an Apply, and whether it moved.
type position struct {
	seq   uint64
	moved bool
}

// applier folds one Apply's records over what the batch (and below it the
// database) already holds.
type applier struct {
	b         *pebble.Batch
	summaries map[string]*chatv1.Conversation
	changed   map[string]bool
	reads     map[userConv]*position
	delivered map[device]*position
	flags     map[userConv]*flagsState
}

// Apply implements history.Store.
func (s *Store) Apply(ctx context.Context, recs []*logv1.EventRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.db.NewIndexedBatch()
	defer b.Close()
	a := &applier{
		b:         b,
		summaries: map[string]*chatv1.Conversation{},
		changed:   map[string]bool{},
		reads:     map[userConv]*position{},
		delivered: map[device]*position{},
		flags:     map[userConv]*flagsState{},
	}
	for _, rec := range recs {
		var err error
		switch ev, r := rec.GetEvent(), rec.GetReceipt(); {
		case rec.GetBlock() != nil && ev == nil && r == nil:
			err = a.block(rec.GetBlock())
		case rec.GetFlags() != nil && ev == nil && r == nil:
			err = a.setFlags(rec.GetFlags())
		case ev != nil && r != nil:
			err = fmt.Errorf("apply record of command %q: holds both an event and a receipt", rec.GetCommandId())
		case ev != nil:
			err = a.event(ev)
		case r != nil:
			err = a.receipt(r)
		default:
			err = fmt.Errorf("apply record of command %q: holds neither an event nor a receipt", rec.GetCommandId())
		}
		if err != nil {
			return err
		}
	}
	for conv, sum := range a.summaries {
		if !a.changed[conv] {
			continue
		}
		data, err := proto.Marshal(sum)
		if err != nil {
			return fmt.Errorf("marshal conversation %s: %w", conv, err)
		}
		if err := b.Set(convKey(conv), data, nil); err != nil {
			return fmt.Errorf("write conversation %s: %w", conv, err)
		}
	}
	for k, p := range a.delivered {
		if !p.moved {
			continue
		}
		if err := b.Set(deliveredKey(k.conv, k.user, k.device), binary.BigEndian.AppendUint64(nil, p.seq), nil); err != nil {
			return fmt.Errorf("write delivered position of %s/%s in %s: %w", k.user, k.device, k.conv, err)
		}
	}
	// The clock is read as late as possible: the change becomes visible
	// when the batch commits.
	stamp := s.now()
	if err := a.stamp(b, stamp); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit %d records: %w", len(recs), err)
	}
	if s.now().Sub(stamp) > history.ChangeLag {
		return s.restamp(a)
	}
	return nil
}

// stamp writes the change times of what this Apply changed, and the read
// positions, which carry theirs.
func (a *applier) stamp(w pebble.Writer, at time.Time) error {
	t := binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano()))
	for conv, ok := range a.changed {
		if !ok {
			continue
		}
		if err := w.Set(changedKey(conv), t, nil); err != nil {
			return fmt.Errorf("write change time of %s: %w", conv, err)
		}
	}
	for k, p := range a.reads {
		if !p.moved {
			continue
		}
		if err := w.Set(readKey(k.conv, k.user), append(binary.BigEndian.AppendUint64(nil, p.seq), t...), nil); err != nil {
			return fmt.Errorf("write read position of %s in %s: %w", k.user, k.conv, err)
		}
	}
	for k, st := range a.flags {
		if !st.moved {
			continue
		}
		v := binary.BigEndian.AppendUint64(nil, st.f.GetVersion())
		v = append(v, boolByte(st.f.GetMuted()), boolByte(st.f.GetPinned()))
		if err := w.Set(flagsKey(k.user, k.conv), append(v, t...), nil); err != nil {
			return fmt.Errorf("write flags of %s in %s: %w", k.user, k.conv, err)
		}
	}
	return nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// setFlags folds a flags record in: the highest version wins. Like a
// receipt, it is kept even before its conversation is stored.
func (a *applier) setFlags(f *chatv1.ConversationFlags) error {
	conv, user := f.GetConversationId(), f.GetUserId()
	if conv == "" || user == "" {
		return fmt.Errorf("apply flags of %q in %q: missing conversation or user id", user, conv)
	}
	k := userConv{conv, user}
	st := a.flags[k]
	if st == nil {
		held, err := getFlags(a.b, user, conv)
		if err != nil {
			return err
		}
		st = &flagsState{f: held.f}
		a.flags[k] = st
	}
	if history.NewerFlags(f, st.f.GetVersion()) {
		st.f, st.moved = f, true
	}
	return nil
}

// block folds a block record into its pair's entry; the batch is indexed,
// so a later record of the same pair in this Apply reads what an earlier
// one wrote.
func (a *applier) block(bl *logv1.BlockChange) error {
	blocker, blocked := bl.GetBlockerId(), bl.GetBlockedId()
	if blocker == "" || blocked == "" || bl.GetTime() == nil {
		return fmt.Errorf("apply block of %q by %q: missing blocker, blocked user or time", blocked, blocker)
	}
	k := append(blockPrefix(blocker), blocked...)
	var heldStamp int64
	var heldBlocked bool
	v, closer, err := a.b.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read block of %s by %s: %w", blocked, blocker, err)
	default:
		ok := len(v) == 9
		if ok {
			heldStamp, heldBlocked = int64(binary.BigEndian.Uint64(v)), v[8] == 1
		}
		closer.Close()
		if !ok {
			return fmt.Errorf("read block of %s by %s: %d bytes, want 9", blocked, blocker, len(v))
		}
	}
	if !history.NewerBlock(bl, heldStamp, heldBlocked) {
		return nil
	}
	val := append(binary.BigEndian.AppendUint64(nil, uint64(history.BlockStamp(bl))), boolByte(bl.GetBlocked()))
	if err := a.b.Set(k, val, nil); err != nil {
		return fmt.Errorf("write block of %s by %s: %w", blocked, blocker, err)
	}
	return nil
}

// Blocks implements history.Store: one range scan of the blocker's
// entries, which come in blocked-id order.
func (s *Store) Blocks(ctx context.Context, blocker string) ([]string, error) {
	prefix := blockPrefix(blocker)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read blocks of %s: %w", blocker, err)
	}
	defer it.Close()
	out := []string{}
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		if len(v) != 9 {
			return nil, fmt.Errorf("read blocks of %s: %d bytes for %q, want 9", blocker, len(v), it.Key()[len(prefix):])
		}
		if v[8] == 1 {
			out = append(out, string(it.Key()[len(prefix):]))
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read blocks of %s: %w", blocker, err)
	}
	return out, nil
}

// storedFlags are a user's flags of one conversation as stored, and when
// they last changed (Unix nanoseconds; zeros when never set).
type storedFlags struct {
	f       *chatv1.ConversationFlags
	changed int64
}

func getFlags(r getter, user, conv string) (storedFlags, error) {
	v, closer, err := r.Get(flagsKey(user, conv))
	if errors.Is(err, pebble.ErrNotFound) {
		return storedFlags{}, nil
	}
	if err != nil {
		return storedFlags{}, fmt.Errorf("read flags of %s in %s: %w", user, conv, err)
	}
	defer closer.Close()
	if len(v) != 18 {
		return storedFlags{}, fmt.Errorf("read flags of %s in %s: %d bytes, want 18", user, conv, len(v))
	}
	return storedFlags{
		f: &chatv1.ConversationFlags{ConversationId: conv, UserId: user, Version: binary.BigEndian.Uint64(v),
			Muted: v[8] == 1, Pinned: v[9] == 1},
		changed: int64(binary.BigEndian.Uint64(v[10:])),
	}, nil
}

// restamp moves the change times of a slow Apply to now, which is after
// its changes became visible (see history.ChangeLag).
func (s *Store) restamp(a *applier) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := a.stamp(b, s.now()); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit change times: %w", err)
	}
	return nil
}

func (a *applier) event(ev *chatv1.Event) error {
	conv := ev.GetConversationId()
	if conv == "" || ev.GetSeq() == 0 {
		return fmt.Errorf("apply event %q: missing conversation id or seq", ev.GetEventId())
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("marshal event %s/%d: %w", conv, ev.GetSeq(), err)
	}
	if err := a.b.Set(eventKey(conv, ev.GetSeq()), data, nil); err != nil {
		return fmt.Errorf("write event %s/%d: %w", conv, ev.GetSeq(), err)
	}
	sum, ok := a.summaries[conv]
	if !ok {
		sum, err = getConversation(a.b, conv)
		if errors.Is(err, history.ErrNotFound) {
			sum, err = &chatv1.Conversation{}, nil
		}
		if err != nil {
			return err
		}
		a.summaries[conv] = sum
	}
	if err := a.messageState(conv, ev); err != nil {
		return err
	}
	joined, left, changed := history.Summarize(sum, ev)
	if changed {
		a.changed[conv] = true
	}
	for _, u := range joined {
		if err := a.b.Set(append(userPrefix(u), conv...), nil, nil); err != nil {
			return fmt.Errorf("write membership %s/%s: %w", conv, u, err)
		}
	}
	for _, u := range left {
		if err := a.b.Delete(append(userPrefix(u), conv...), nil); err != nil {
			return fmt.Errorf("delete membership %s/%s: %w", conv, u, err)
		}
	}
	if u := ev.GetSenderId(); u != "" {
		// What you post you have, and have read.
		return a.move(conv, u, ev.GetSenderDeviceId(), &chatv1.Receipt{DeliveredSeq: ev.GetSeq(), ReadSeq: ev.GetSeq()})
	}
	return nil
}

// messageState records what an edit, delete or reaction did to its
// target message, keeping the value of the highest seq.
func (a *applier) messageState(conv string, ev *chatv1.Event) error {
	seq := ev.GetSeq()
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessageEdited:
		k := seqKey(prefixEdit, conv, b.MessageEdited.GetTargetSeq())
		prev, err := getEvent(a.b, k)
		if err != nil {
			return err
		}
		if prev != nil && prev.GetSeq() >= seq {
			return nil
		}
		data, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal edit %s/%d: %w", conv, seq, err)
		}
		if err := a.b.Set(k, data, nil); err != nil {
			return fmt.Errorf("write edit %s/%d: %w", conv, seq, err)
		}
	case *chatv1.Event_MessageDeleted:
		// A message is deleted once (the sequencer refuses a second
		// delete), so the value needs no comparison.
		if err := a.b.Set(seqKey(prefixDeleted, conv, b.MessageDeleted.GetTargetSeq()), binary.BigEndian.AppendUint64(nil, seq), nil); err != nil {
			return fmt.Errorf("write delete %s/%d: %w", conv, seq, err)
		}
	case *chatv1.Event_ReactionAdded:
		return a.reaction(conv, seq, b.ReactionAdded.GetTargetSeq(), b.ReactionAdded.GetEmoji(), ev.GetSenderId(), true)
	case *chatv1.Event_ReactionRemoved:
		return a.reaction(conv, seq, b.ReactionRemoved.GetTargetSeq(), b.ReactionRemoved.GetEmoji(), ev.GetSenderId(), false)
	}
	return nil
}

func (a *applier) reaction(conv string, seq, target uint64, emoji, user string, present bool) error {
	k := reactionKey(conv, target, emoji, user)
	v, closer, err := a.b.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read reaction %s/%d: %w", conv, target, err)
	default:
		newer := len(v) == 9 && binary.BigEndian.Uint64(v) >= seq
		closer.Close()
		if newer {
			return nil
		}
	}
	val := binary.BigEndian.AppendUint64(nil, seq)
	if present {
		val = append(val, 1)
	} else {
		val = append(val, 0)
	}
	if err := a.b.Set(k, val, nil); err != nil {
		return fmt.Errorf("write reaction %s/%d: %w", conv, seq, err)
	}
	return nil
}

// getEvent reads an event stored at k, nil when there is none.
func getEvent(r getter, k []byte) (*chatv1.Event, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", k, err)
	}
	defer closer.Close()
	ev := &chatv1.Event{}
	if err := proto.Unmarshal(v, ev); err != nil {
		return nil, fmt.Errorf("decode %q: %w", k, err)
	}
	return ev, nil
}

// states reads the MessageState of each seq (see history.Overlay).
func (s *Store) states(ctx context.Context, r interface {
	getter
	NewIterWithContext(context.Context, *pebble.IterOptions) (*pebble.Iterator, error)
}, conv string, seqs []uint64, viewer string) (map[uint64]*history.MessageState, error) {
	out := make(map[uint64]*history.MessageState, len(seqs))
	for _, seq := range seqs {
		st := &history.MessageState{}
		var err error
		if st.Edit, err = getEvent(r, seqKey(prefixEdit, conv, seq)); err != nil {
			return nil, err
		}
		switch _, closer, err := r.Get(seqKey(prefixDeleted, conv, seq)); {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("read delete of %s/%d: %w", conv, seq, err)
		default:
			closer.Close()
			st.Deleted = true
		}
		if !st.Deleted {
			lo := seqKey(prefixReaction, conv, seq)
			it, err := r.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: seqKey(prefixReaction, conv, seq+1)})
			if err != nil {
				return nil, fmt.Errorf("read reactions of %s/%d: %w", conv, seq, err)
			}
			var counts history.Reactions
			for ok := it.First(); ok; ok = it.Next() {
				rest := it.Key()[len(lo):]
				i := bytes.IndexByte(rest, 0)
				if v := it.Value(); i < 0 || len(v) != 9 {
					it.Close()
					return nil, fmt.Errorf("read reactions of %s/%d: malformed entry %q", conv, seq, rest)
				} else if v[8] == 1 {
					counts.Add(string(rest[:i]), string(rest[i+1:]), viewer)
				}
			}
			if err := errors.Join(it.Error(), it.Close()); err != nil {
				return nil, fmt.Errorf("read reactions of %s/%d: %w", conv, seq, err)
			}
			st.Reactions = counts.Counts()
		}
		out[seq] = st
	}
	return out, nil
}

func (a *applier) receipt(r *chatv1.Receipt) error {
	conv, user := r.GetConversationId(), r.GetUserId()
	if conv == "" || user == "" {
		return fmt.Errorf("apply receipt of %q/%q in %q: missing conversation or user id", user, r.GetDeviceId(), conv)
	}
	// A conversation this store has not seen yet gets the positions all the
	// same; Receipts shows them once the conversation exists.
	return a.move(conv, user, r.GetDeviceId(), r)
}

// move folds r into the user's read and the device's delivered position
// with history.ApplyReceipt. A position without a device has no delivered
// position to keep.
func (a *applier) move(conv, user, dev string, r *chatv1.Receipt) error {
	rk := userConv{conv, user}
	read, err := a.read(rk)
	if err != nil {
		return err
	}
	pos := &chatv1.Receipt{ReadSeq: read.seq}
	var del *position
	if dev != "" {
		dk := device{conv, user, dev}
		if del, err = a.deliveredPos(dk); err != nil {
			return err
		}
		pos.DeliveredSeq = del.seq
	}
	if !history.ApplyReceipt(pos, r) {
		return nil
	}
	if pos.GetReadSeq() != read.seq {
		read.seq, read.moved = pos.GetReadSeq(), true
	}
	if del != nil && pos.GetDeliveredSeq() != del.seq {
		del.seq, del.moved = pos.GetDeliveredSeq(), true
	}
	return nil
}

func (a *applier) read(k userConv) (*position, error) {
	if p := a.reads[k]; p != nil {
		return p, nil
	}
	seq, _, err := getRead(a.b, k.conv, k.user)
	if err != nil {
		return nil, err
	}
	p := &position{seq: seq}
	a.reads[k] = p
	return p, nil
}

func (a *applier) deliveredPos(k device) (*position, error) {
	if p := a.delivered[k]; p != nil {
		return p, nil
	}
	p := &position{}
	v, closer, err := a.b.Get(deliveredKey(k.conv, k.user, k.device))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("read delivered position of %s/%s in %s: %w", k.user, k.device, k.conv, err)
	default:
		if len(v) != 8 {
			closer.Close()
			return nil, fmt.Errorf("read delivered position of %s/%s in %s: %d bytes, want 8", k.user, k.device, k.conv, len(v))
		}
		p.seq = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	a.delivered[k] = p
	return p, nil
}

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func getConversation(r getter, conv string) (*chatv1.Conversation, error) {
	v, closer, err := r.Get(convKey(conv))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, history.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read conversation %s: %w", conv, err)
	}
	defer closer.Close()
	c := &chatv1.Conversation{}
	if err := proto.Unmarshal(v, c); err != nil {
		return nil, fmt.Errorf("decode conversation %s: %w", conv, err)
	}
	return c, nil
}

// Conversation implements history.Store.
func (s *Store) Conversation(ctx context.Context, conv string) (*chatv1.Conversation, error) {
	return getConversation(s.db, conv)
}

// History implements history.Store.
func (s *Store) History(ctx context.Context, conv string, q history.Query) (history.Page, error) {
	// One snapshot, so the messages and what happened to them agree.
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if _, err := getConversation(snap, conv); err != nil {
		return history.Page{}, err
	}
	limit := history.ClampLimit(q.Limit)
	it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: eventKey(conv, 1),
		UpperBound: eventKey(conv, ^uint64(0)),
	})
	if err != nil {
		return history.Page{}, fmt.Errorf("read history %s: %w", conv, err)
	}
	defer it.Close()
	var page history.Page
	decode := func() error {
		ev := &chatv1.Event{}
		if err := proto.Unmarshal(it.Value(), ev); err != nil {
			return fmt.Errorf("decode event in %s: %w", conv, err)
		}
		page.Events = append(page.Events, ev)
		return nil
	}
	if q.Forward {
		for ok := it.SeekGE(eventKey(conv, q.AfterSeq+1)); ok; ok = it.Next() {
			if len(page.Events) == limit {
				page.HasMore = true
				break
			}
			if err := decode(); err != nil {
				return history.Page{}, err
			}
		}
	} else {
		var ok bool
		if q.BeforeSeq == 0 {
			ok = it.Last()
		} else {
			ok = it.SeekLT(eventKey(conv, q.BeforeSeq))
		}
		for ; ok; ok = it.Prev() {
			if len(page.Events) == limit {
				page.HasMore = true
				break
			}
			if err := decode(); err != nil {
				return history.Page{}, err
			}
		}
		slices.Reverse(page.Events)
	}
	if err := it.Error(); err != nil {
		return history.Page{}, fmt.Errorf("read history %s: %w", conv, err)
	}
	states, err := s.states(ctx, snap, conv, history.OverlaySeqs(page.Events), q.Viewer)
	if err != nil {
		return history.Page{}, err
	}
	history.Overlay(page.Events, states)
	return page, nil
}

// getRead returns a user's read position in a conversation and when it
// last moved (Unix nanoseconds), zeros when there is none.
func getRead(r getter, conv, user string) (seq uint64, changed int64, err error) {
	v, closer, err := r.Get(readKey(conv, user))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read read position of %s in %s: %w", user, conv, err)
	}
	defer closer.Close()
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("read read position of %s in %s: %d bytes, want 16", user, conv, len(v))
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), nil
}

// getChanged returns when a conversation's summary last changed (Unix
// nanoseconds), 0 when never recorded.
func getChanged(r getter, conv string) (int64, error) {
	v, closer, err := r.Get(changedKey(conv))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read change time of %s: %w", conv, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("read change time of %s: %d bytes, want 8", conv, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// Conversations implements history.Store. It reads from one snapshot, so
// a summary and the user's read position in it agree.
func (s *Store) Conversations(ctx context.Context, user string, q history.ListQuery) ([]*chatv1.Conversation, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	prefix := userPrefix(user)
	it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	defer it.Close()
	var since int64
	if !q.ChangedSince.IsZero() {
		since = q.ChangedSince.UnixNano()
	}
	var out []*chatv1.Conversation
	for ok := it.First(); ok; ok = it.Next() {
		conv := string(it.Key()[len(prefix):])
		c, err := getConversation(snap, conv)
		if err != nil {
			return nil, err
		}
		read, readChanged, err := getRead(snap, conv, user)
		if err != nil {
			return nil, err
		}
		flags, err := getFlags(snap, user, conv)
		if err != nil {
			return nil, err
		}
		if since != 0 && readChanged < since && flags.changed < since {
			changed, err := getChanged(snap, conv)
			if err != nil {
				return nil, err
			}
			if changed < since {
				continue
			}
		}
		c.ReadSeq = read
		if read < c.GetLastSeq() {
			c.UnreadCount = c.GetLastSeq() - read
		}
		c.Muted, c.Pinned = flags.f.GetMuted(), flags.f.GetPinned()
		out = append(out, c)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("list conversations of %s: %w", user, err)
	}
	slices.SortStableFunc(out, history.ListOrder)
	if n := history.ClampLimit(q.Limit); len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// Receipts implements history.Store: the conversation's read positions
// into a map, then its delivered positions, which are in (user, device)
// order already.
func (s *Store) Receipts(ctx context.Context, conv string) ([]*chatv1.Receipt, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if _, err := getConversation(snap, conv); err != nil {
		return nil, err
	}
	reads := map[string]uint64{}
	prefix := positionPrefix(prefixRead, conv)
	it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read read positions in %s: %w", conv, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Value()) != 16 {
			it.Close()
			return nil, fmt.Errorf("read read positions in %s: %d bytes for %q, want 16", conv, len(it.Value()), it.Key()[len(prefix):])
		}
		reads[string(it.Key()[len(prefix):])] = binary.BigEndian.Uint64(it.Value())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("read read positions in %s: %w", conv, err)
	}

	var out []*chatv1.Receipt
	prefix = positionPrefix(prefixDelivered, conv)
	it, err = snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read delivered positions in %s: %w", conv, err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		rest := it.Key()[len(prefix):]
		i := bytes.IndexByte(rest, 0)
		if i < 0 || len(it.Value()) != 8 {
			return nil, fmt.Errorf("read delivered positions in %s: malformed entry %q", conv, rest)
		}
		user := string(rest[:i])
		out = append(out, &chatv1.Receipt{
			ConversationId: conv,
			UserId:         user,
			DeviceId:       string(rest[i+1:]),
			DeliveredSeq:   binary.BigEndian.Uint64(it.Value()),
			ReadSeq:        reads[user],
		})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read delivered positions in %s: %w", conv, err)
	}
	return out, nil
}

// quietLogger keeps Pebble's info chatter out of the service log.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

package cassandrastore

import (
	"fmt"

	"github.com/gocql/gocql"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

const insertEvent = `INSERT INTO history_events (conversation_id, bucket, seq, event_id, sender_id, event_time, event)
VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`

// writeEvents queues one unit per history partition (and per
// maxBatchStatements or maxBatchBytes): a partition's writes are one
// mutation on each replica, so they land whole.
func (s *Store) writeEvents(p *pack, w *convWrites) {
	type chunk struct {
		bucket int64
		idx    []int
		bytes  int
	}
	var chunks []*chunk
	open := map[int64]*chunk{}
	for i, ev := range w.events {
		b := s.bucket(ev.GetSeq())
		c := open[b]
		if c == nil || len(c.idx) == maxBatchStatements || c.bytes+len(w.blobs[i]) > maxBatchBytes {
			c = &chunk{bucket: b}
			open[b] = c
			chunks = append(chunks, c)
		}
		c.idx = append(c.idx, i)
		c.bytes += len(w.blobs[i])
	}
	for _, c := range chunks {
		batch := s.sess.NewBatch(gocql.UnloggedBatch)
		for _, i := range c.idx {
			ev := w.events[i]
			seq := int64(ev.GetSeq())
			batch.Query(insertEvent, w.id, c.bucket, seq, ev.GetEventId(), ev.GetSenderId(), eventTime(ev), w.blobs[i], seq)
		}
		first, last := w.events[c.idx[0]].GetSeq(), w.events[c.idx[len(c.idx)-1]].GetSeq()
		p.add(batch, fmt.Sprintf("write events %d..%d of %s (bucket %d)", first, last, w.id, c.bucket))
	}
}

// stateTarget is the message an edit, delete or reaction is about, 0 for
// other events.
func stateTarget(ev *chatv1.Event) uint64 {
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessageEdited:
		return b.MessageEdited.GetTargetSeq()
	case *chatv1.Event_MessageDeleted:
		return b.MessageDeleted.GetTargetSeq()
	case *chatv1.Event_ReactionAdded:
		return b.ReactionAdded.GetTargetSeq()
	case *chatv1.Event_ReactionRemoved:
		return b.ReactionRemoved.GetTargetSeq()
	}
	return 0
}

const (
	updateEdit     = `UPDATE history_events USING TIMESTAMP ? SET edit = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?`
	updateDeleted  = `UPDATE history_events USING TIMESTAMP ? SET deleted_seq = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?`
	updateReaction = `UPDATE reactions USING TIMESTAMP ? SET present = ? WHERE conversation_id = ? AND bucket = ? AND message_seq = ? AND emoji = ? AND user_id = ?`
)

// writeStates queues what edits, deletes and reactions do to their
// targets: one unlogged batch per target partition and table, each write
// at its event's seq, so the newest wins in any order. They go with the
// events, before the summary, like the events they come from.
func (s *Store) writeStates(p *pack, w *convWrites) {
	type part struct {
		reactions bool
		bucket    int64
	}
	open := map[part]*gocql.Batch{}
	var batches []*gocql.Batch
	batch := func(k part) *gocql.Batch {
		b := open[k]
		if b == nil || b.Size() >= maxBatchStatements {
			b = s.sess.NewBatch(gocql.UnloggedBatch)
			open[k] = b
			batches = append(batches, b)
		}
		return b
	}
	for _, st := range w.states {
		seq, bucket, target := int64(st.ev.GetSeq()), s.bucket(st.target), int64(st.target)
		switch b := st.ev.GetBody().(type) {
		case *chatv1.Event_MessageEdited:
			batch(part{false, bucket}).Query(updateEdit, seq, st.blob, w.id, bucket, target)
		case *chatv1.Event_MessageDeleted:
			batch(part{false, bucket}).Query(updateDeleted, seq, seq, w.id, bucket, target)
		case *chatv1.Event_ReactionAdded:
			batch(part{true, bucket}).Query(updateReaction, seq, true, w.id, bucket, target, b.ReactionAdded.GetEmoji(), st.ev.GetSenderId())
		case *chatv1.Event_ReactionRemoved:
			batch(part{true, bucket}).Query(updateReaction, seq, false, w.id, bucket, target, b.ReactionRemoved.GetEmoji(), st.ev.GetSenderId())
		}
	}
	for _, b := range batches {
		p.add(b, "write edits, deletes and reactions in "+w.id)
	}
}

func eventTime(ev *chatv1.Event) any {
	if ev.GetTime() == nil {
		return nil
	}
	return ev.GetTime().AsTime()
}

package logread

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SettledEnds waits until none of the given partitions of topic (all of
// them when none are given) has an open transaction, and returns each
// one's end offset. An open transaction's fate is unknown until it commits,
// aborts or times out, so a reader that means to have seen "everything"
// must wait for it; past a settled end, every offset holds a record or a
// transaction marker a reader keeping control records sees, so reading up
// to it cannot stall on records an abort hid.
func SettledEnds(ctx context.Context, adm *kadm.Client, topic string, partitions ...int32) (map[int32]int64, error) {
	for {
		high, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
		}
		stable, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return nil, fmt.Errorf("stable offsets of %s: %w", topic, err)
		}
		ends, settled := map[int32]int64{}, true
		var lerr error
		high.Each(func(h kadm.ListedOffset) {
			if len(partitions) > 0 && !slices.Contains(partitions, h.Partition) {
				return
			}
			st, ok := stable.Lookup(topic, h.Partition)
			if h.Err != nil || !ok || st.Err != nil {
				lerr = errors.Join(lerr, fmt.Errorf("partition %d: no end offset: %w", h.Partition, errors.Join(h.Err, st.Err)))
				return
			}
			ends[h.Partition] = h.Offset
			settled = settled && st.Offset >= h.Offset
		})
		if lerr != nil {
			return nil, fmt.Errorf("end offsets of %s: %w", topic, lerr)
		}
		for _, p := range partitions {
			if _, ok := ends[p]; !ok {
				return nil, fmt.Errorf("end offsets of %s: no partition %d", topic, p)
			}
		}
		if settled {
			return ends, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The readers here take conn, the options that reach the cluster
// (topics.ClientOpts with the connection's security), and add their own.

// ReadToEnd reads the committed records of topic's partitions from their
// start up to ends (as SettledEnds returns them), passing each poll's
// records to apply, transaction markers left out. It returns, per
// partition, the offset of the last record it passed (-1 for none).
func ReadToEnd(ctx context.Context, conn []kgo.Opt, topic string, ends map[int32]int64, apply func([]*kgo.Record) error) (map[int32]int64, error) {
	return ReadRange(ctx, conn, topic, nil, ends, apply)
}

// ReadRange is ReadToEnd from the offsets in from (a partition missing
// there is read from its start).
//
// It reads committed, as persistence and fan-out do, so what it passes on
// is exactly what they see: the broker, not this reader, decides which
// transactions count.
func ReadRange(ctx context.Context, conn []kgo.Opt, topic string, from, ends map[int32]int64, apply func([]*kgo.Record) error) (map[int32]int64, error) {
	last := map[int32]int64{}
	for p := range ends {
		last[p] = -1
	}
	err := scan(ctx, conn, topic, kgo.ReadCommitted(), from, ends, func(recs []*kgo.Record) error {
		data := recs[:0]
		for _, r := range recs {
			if !r.Attrs.IsControl() {
				data = append(data, r)
				last[r.Partition] = r.Offset
			}
		}
		if len(data) == 0 {
			return nil
		}
		return apply(data)
	})
	if err != nil {
		return nil, err
	}
	return last, nil
}

// scan reads topic's partitions from the offsets in from up to ends with
// the given isolation, passing each poll's records to each, transaction
// markers included.
//
// Markers are what tell a committed reader where it stands: past a settled
// end every transaction has its marker, so the last offset below the end
// is a record or a marker it sees. A log ending in records of a
// transaction that lost its marker to a crash would hide that last offset;
// the embedded broker's logs are sealed at start (SealCrashedTransactions)
// so that it cannot happen, and should it happen anyway the read fails
// after stallAfter instead of waiting for ever.
func scan(ctx context.Context, conn []kgo.Opt, topic string, iso kgo.IsolationLevel, from, ends map[int32]int64, each func([]*kgo.Record) error) error {
	start, pending := map[int32]kgo.Offset{}, map[int32]int64{}
	for p, end := range ends {
		if end > from[p] {
			pending[p] = end
			start[p] = kgo.NewOffset().At(from[p])
		}
	}
	if len(pending) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(slices.Clip(conn),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchIsolationLevel(iso),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer cl.Close()
	seen := map[int32]int64{}
	for len(pending) > 0 {
		pctx, cancel := context.WithTimeout(ctx, stallAfter)
		fetches := cl.PollFetches(pctx)
		stalled := pctx.Err() != nil
		cancel()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %w", topic, err)
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = errors.Join(ferr, fmt.Errorf("partition %d: %w", p, err))
			}
		})
		if ferr != nil {
			return fmt.Errorf("read %s: %w", topic, ferr)
		}
		var recs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := pending[r.Partition]
			if !ok || r.Offset >= end {
				return // only what was there when the read began
			}
			seen[r.Partition] = r.Offset
			if r.Offset+1 >= end {
				delete(pending, r.Partition)
			}
			recs = append(recs, r)
		})
		if len(recs) > 0 {
			if err := each(recs); err != nil {
				return err
			}
			continue
		}
		if stalled {
			var stuck error
			for p, end := range pending {
				at, ok := seen[p]
				if !ok {
					at = from[p] - 1
				}
				stuck = errors.Join(stuck, fmt.Errorf("partition %d: nothing readable after offset %d though the log ends at %d (a transaction without its marker?)", p, at, end))
			}
			return fmt.Errorf("read %s: %w", topic, stuck)
		}
	}
	return nil
}

// stallAfter is how long scan waits for a record or marker before it gives
// up: a fetch returns within FetchMaxWait when there is anything to read,
// so a long silence below the end means nothing will come.
const stallAfter = 10 * time.Second

// SealCrashedTransactions writes an abort marker after every transaction
// of the named topics that a crash of the broker left without one, and
// must run before any producer of those topics starts.
//
// Only the embedded broker needs it. kfake, restarted after a kill,
// counts a transaction it finds open in its log as aborted but writes no
// marker for it. Two readers then go wrong once the same producer commits
// a later transaction on that partition: a committed consumer that fetches
// both at once drops the committed one too (a marker is what ends an
// aborted range for it), and any reader sorting transactions by their
// markers would count the crashed records as part of the committed one.
// With the marker in the log, every reader agrees with the broker. A real
// broker's coordinator writes the markers of every transaction it ends,
// crash or not, so its logs never need this.
//
// A transaction the broker still holds open (restored after a clean stop)
// is left alone: the broker ends it, with markers, when its producer
// comes back or its timeout passes.
func SealCrashedTransactions(ctx context.Context, conn []kgo.Opt, names ...string) error {
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		return fmt.Errorf("seal transactions: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	existing, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("seal transactions: list topics: %w", err)
	}
	for _, topic := range names {
		if !existing.Has(topic) {
			continue
		}
		high, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return fmt.Errorf("seal transactions: end offsets of %s: %w", topic, err)
		}
		if err := high.Error(); err != nil {
			return fmt.Errorf("seal transactions: end offsets of %s: %w", topic, err)
		}
		ends := map[int32]int64{}
		high.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
		type producer struct {
			partition int32
			id        int64
		}
		// The epoch of each producer's records not yet followed by a marker.
		open := map[producer]int16{}
		err = scan(ctx, conn, topic, kgo.ReadUncommitted(), nil, ends, func(recs []*kgo.Record) error {
			for _, r := range recs {
				k := producer{r.Partition, r.ProducerID}
				switch {
				case r.Attrs.IsControl():
					delete(open, k)
				case r.Attrs.IsTransactional():
					open[k] = r.ProducerEpoch
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("seal transactions: %w", err)
		}
		if len(open) == 0 {
			continue
		}
		live, err := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: {}})
		if err != nil {
			return fmt.Errorf("seal transactions: producers of %s: %w", topic, err)
		}
		for k, epoch := range open {
			if _, ok := live[topic].Partitions[k.partition].ActiveProducers[k.id]; ok {
				continue
			}
			if err := abortMarker(ctx, cl, topic, k.partition, k.id, epoch); err != nil {
				return fmt.Errorf("seal transactions: %w", err)
			}
		}
	}
	return nil
}

// abortMarker writes an abort marker for producer id to a partition, the
// request a transaction coordinator sends the partition's leader.
func abortMarker(ctx context.Context, cl *kgo.Client, topic string, partition int32, id int64, epoch int16) error {
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed = id, epoch, false
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = topic, []int32{partition}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("abort marker for producer %d on %s/%d: %w", id, topic, partition, err)
	}
	for _, rm := range resp.Markers {
		for _, rt := range rm.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return fmt.Errorf("abort marker for producer %d on %s/%d: %w", id, topic, partition, err)
				}
			}
		}
	}
	return nil
}

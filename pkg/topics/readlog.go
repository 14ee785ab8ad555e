package topics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
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

// ReadToEnd reads the committed records of topic's partitions from their
// start up to ends (as SettledEnds returns them), passing each poll's
// records to apply, transaction markers left out. It returns, per
// partition, the offset of the last record it passed (-1 for none).
func ReadToEnd(ctx context.Context, brokers []string, topic string, ends map[int32]int64, apply func([]*kgo.Record) error) (map[int32]int64, error) {
	return ReadRange(ctx, brokers, topic, nil, ends, apply)
}

// ReadRange is ReadToEnd from the offsets in from (a partition missing
// there is read from its start).
//
// It reads uncommitted and sorts transactions out itself: a transaction's
// records are passed on when its commit marker comes and dropped at its
// abort marker. A committed reader would hide aborted records, and the
// reader could not tell where it stands when the log ends with one whose
// marker is missing (kfake, restarted after a crash, leaves such a tail),
// so it would wait for ever. Reading everything, every offset below the
// end shows up. Past a settled end every transaction has its marker, so
// what is still held at the end was never committed and is dropped.
func ReadRange(ctx context.Context, brokers []string, topic string, from, ends map[int32]int64, apply func([]*kgo.Record) error) (map[int32]int64, error) {
	last, start := map[int32]int64{}, map[int32]kgo.Offset{}
	pending := map[int32]int64{}
	for p, end := range ends {
		last[p] = -1
		if end > from[p] {
			pending[p] = end
			start[p] = kgo.NewOffset().At(from[p])
		}
	}
	if len(pending) == 0 {
		return last, nil
	}
	cl, err := kgo.NewClient(append(ClientOpts(brokers),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", topic, err)
	}
	defer cl.Close()
	type txn struct {
		partition int32
		producer  int64
	}
	open := map[txn][]*kgo.Record{}
	for len(pending) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) { ferr = errors.Join(ferr, fmt.Errorf("partition %d: %w", p, err)) })
		if ferr != nil {
			return nil, fmt.Errorf("read %s: %w", topic, ferr)
		}
		var recs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := pending[r.Partition]
			if !ok || r.Offset >= end {
				return // only what was there when the read began
			}
			if r.Offset+1 >= end {
				delete(pending, r.Partition)
			}
			k := txn{r.Partition, r.ProducerID}
			switch {
			case r.Attrs.IsControl():
				// A marker's key is a version and a type, both int16:
				// type 1 commits, 0 aborts.
				if len(r.Key) >= 4 && r.Key[3] == 1 && r.Key[2] == 0 {
					for _, held := range open[k] {
						recs = append(recs, held)
						last[held.Partition] = held.Offset
					}
				}
				delete(open, k)
			case r.Attrs.IsTransactional():
				open[k] = append(open[k], r)
			default:
				recs = append(recs, r)
				last[r.Partition] = r.Offset
			}
		})
		if len(recs) > 0 {
			if err := apply(recs); err != nil {
				return nil, err
			}
		}
	}
	return last, nil
}

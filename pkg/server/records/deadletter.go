package records

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Headers of a dead letter, beside the original record's own.
const (
	HeaderConsumer  = "parley-consumer"
	HeaderTopic     = "parley-source-topic"
	HeaderPartition = "parley-source-partition"
	HeaderOffset    = "parley-source-offset"
	HeaderReason    = "parley-reason"
	HeaderError     = "parley-error"
)

// DeadLetterRecord is r's key, value and headers, unchanged, addressed to
// topics.DeadLetter, with headers naming the consumer group that gave up on it,
// where it came from and why.
func DeadLetterRecord(r *kgo.Record, consumer string, cause error) *kgo.Record {
	h := append(make([]kgo.RecordHeader, 0, len(r.Headers)+6), r.Headers...)
	h = append(h,
		kgo.RecordHeader{Key: HeaderConsumer, Value: []byte(consumer)},
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderPartition, Value: []byte(strconv.FormatInt(int64(r.Partition), 10))},
		kgo.RecordHeader{Key: HeaderOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		kgo.RecordHeader{Key: HeaderReason, Value: []byte(ReasonOf(cause))},
		kgo.RecordHeader{Key: HeaderError, Value: []byte(truncate(cause.Error(), maxErrorHeader))},
	)
	return &kgo.Record{Topic: topics.DeadLetter, Key: r.Key, Value: r.Value, Headers: h}
}

// maxErrorHeader bounds the error text, so that a dead letter is not much
// larger than the record it carries (which the broker took).
const maxErrorHeader = 1024

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// ReasonOf is the reason of a DecodeEventRecord error, ReasonInvalid for
// any other error.
func ReasonOf(err error) string {
	if bad := (*BadRecord)(nil); errors.As(err, &bad) {
		return bad.Reason
	}
	return ReasonInvalid
}

// SetAside logs each rejected record and produces it, unchanged, to
// topics.DeadLetter under the consumer group's name, retrying with backoff until
// every one is acknowledged (acks=all, see topics.ClientOpts) or ctx ends. A
// consumer calls it before committing, so a record it sets aside is
// either in topics.DeadLetter or read again. A retry after a partial failure may
// write a dead letter twice; they are for people to look at, so that is
// harmless.
func SetAside(ctx context.Context, cl *kgo.Client, log *slog.Logger, consumer string, rejected []Rejected) error {
	recs := make([]*kgo.Record, len(rejected))
	for i, r := range rejected {
		log.Error("event record set aside", "to", topics.DeadLetter, "topic", r.Record.Topic, "partition", r.Record.Partition, "offset", r.Record.Offset, "err", r.Err)
		recs[i] = DeadLetterRecord(r.Record, consumer, r.Err)
	}
	return produceAcked(ctx, cl, log, recs)
}

func produceAcked(ctx context.Context, cl *kgo.Client, log *slog.Logger, recs []*kgo.Record) error {
	for backoff := 100 * time.Millisecond; len(recs) > 0; backoff = min(2*backoff, 5*time.Second) {
		var failed []*kgo.Record
		var firstErr error
		for _, res := range cl.ProduceSync(ctx, recs...) {
			if res.Err != nil {
				failed = append(failed, res.Record)
				if firstErr == nil {
					firstErr = res.Err
				}
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("produce %d records to %s: %w", len(failed), failed[0].Topic, ctx.Err())
		}
		log.Error("produce failed; retrying", "topic", failed[0].Topic, "records", len(failed), "err", firstErr, "backoff", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("produce %d records to %s: %w", len(failed), failed[0].Topic, ctx.Err())
		case <-time.After(backoff):
		}
		recs = failed
	}
	return nil
}

package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// baselineTopic carries the raw-Kafka baseline's records; nothing else
// reads it.
const baselineTopic = "parley.bench.baseline.v1"

type baselineResult struct {
	Topic        string            `json:"topic"`
	RateTarget   float64           `json:"rate_target_msgs_per_s"`
	DurationS    float64           `json:"duration_s"`
	PayloadBytes int               `json:"payload_bytes"`
	Sent         int64             `json:"sent"`
	Acked        int64             `json:"acked"`
	Errors       int64             `json:"errors"`
	Received     int64             `json:"received"`
	Lost         int64             `json:"lost"`
	Duplicates   int64             `json:"duplicates"`
	Throughput   float64           `json:"throughput_msgs_per_s"`
	Latency      stats.Percentiles `json:"latency_ms"`
	// KneeMsgsPerS is the raw pipeline's knee under the knee phase's
	// criterion, and Knee its steps.
	KneeMsgsPerS float64     `json:"knee_msgs_per_s,omitempty"`
	Knee         *kneeResult `json:"knee,omitempty"`
	latencies    []float64
}

// runBaseline moves payload-sized records at rate for dur through the same
// broker with the client options every Parley service uses (idempotent,
// acks=all, no linger; read-committed fetches), from one producer to one
// consumer, keyed like Parley's topics by one of many conversation ids.
// Latency is produce call to consume, the floor under Parley's two hops.
// conn reaches the cluster (topics.ClientOpts with its security).
func runBaseline(ctx context.Context, conn []kgo.Opt, rate float64, dur, grace time.Duration, payloadBytes int, progress *progressLine) (baselineResult, error) {
	return runKafkaPath(ctx, conn, kafkaPath{name: "baseline", in: baselineTopic, out: baselineTopic}, rate, dur, grace, payloadBytes, progress)
}

// kafkaPath is a pipeline of bare franz-go clients: records produced to
// in, read (committed) from out. When relay is set, in and out differ and
// relay carries records from one to the other until its context ends.
type kafkaPath struct {
	name    string
	in, out string
	relay   func(ctx context.Context, ready chan<- error)
}

// runKafkaPath measures p at rate for dur: latency from the produce call
// to the consume of out, lost and duplicated records.
func runKafkaPath(ctx context.Context, conn []kgo.Opt, p kafkaPath, rate float64, dur, grace time.Duration, payloadBytes int, progress *progressLine) (baselineResult, error) {
	res := baselineResult{Topic: p.out, RateTarget: rate, DurationS: dur.Seconds(), PayloadBytes: payloadBytes}
	admCl, err := kgo.NewClient(conn...)
	if err != nil {
		return res, fmt.Errorf("%s: %w", p.name, err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	retention := strconv.FormatInt(time.Hour.Milliseconds(), 10)
	for _, t := range slices.Compact([]string{p.in, p.out}) {
		if err := topics.CreateIfMissing(ctx, adm, t, topics.LocalSpec.Partitions, 1, map[string]*string{"retention.ms": &retention}); err != nil {
			return res, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	out := p.out
	// Start reading exactly at the current ends, so no old record counts.
	var ends kadm.ListedOffsets
	for attempt := 0; ; attempt++ {
		ends, err = adm.ListEndOffsets(ctx, out)
		if err == nil {
			err = ends.Error()
		}
		if err == nil && len(ends[out]) > 0 {
			break
		}
		if attempt == 50 {
			return res, fmt.Errorf("%s: list end offsets: %v", p.name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	start := map[string]map[int32]kgo.Offset{out: {}}
	for part, o := range ends[out] {
		start[out][part] = kgo.NewOffset().At(o.Offset)
	}
	consumer, err := kgo.NewClient(append(slices.Clip(conn), kgo.ConsumePartitions(start))...)
	if err != nil {
		return res, fmt.Errorf("%s: consumer: %w", p.name, err)
	}
	defer consumer.Close()
	producer, err := kgo.NewClient(conn...)
	if err != nil {
		return res, fmt.Errorf("%s: producer: %w", p.name, err)
	}
	defer producer.Close()

	// A record's value starts with its number and its send time on this
	// process's monotonic clock; the rest is filler up to the payload size.
	epoch := time.Now()
	var (
		sent, acked, errs, received, dups atomic.Int64
		mu                                sync.Mutex // guards got, lat, last
		got                               = map[uint64]bool{}
		lat                               []float64
		last                              time.Time
	)
	cctx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for cctx.Err() == nil {
			fetches := consumer.PollFetches(cctx)
			now := time.Now()
			mu.Lock()
			fetches.EachRecord(func(r *kgo.Record) {
				if len(r.Value) < 16 {
					return
				}
				n := binary.BigEndian.Uint64(r.Value)
				if got[n] {
					dups.Add(1)
					return
				}
				got[n] = true
				received.Add(1)
				at := epoch.Add(time.Duration(binary.BigEndian.Uint64(r.Value[8:])))
				lat = append(lat, float64(now.Sub(at))/float64(time.Millisecond))
				last = now
			})
			mu.Unlock()
		}
	}()
	// Let the consumer's first fetch be in flight before producing.
	time.Sleep(500 * time.Millisecond)
	relayed := make(chan struct{})
	if p.relay != nil {
		rctx, stopRelay := context.WithCancel(ctx)
		ready := make(chan error, 1)
		go func() { defer close(relayed); p.relay(rctx, ready) }()
		defer func() { stopRelay(); <-relayed }()
		select {
		case err := <-ready:
			if err != nil {
				return res, fmt.Errorf("%s: relay: %w", p.name, err)
			}
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}

	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "bench-conv-%04d", i)
	}
	size := max(payloadBytes, 16)
	rng := rand.New(rand.NewPCG(1, 2))
	begin := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var n int64
	progress.set(func() string {
		return fmt.Sprintf("%s %s/%s @%.0f msg/s: produced %d acked %d consumed %d", p.name, time.Since(begin).Truncate(time.Second), dur, rate, sent.Load(), acked.Load(), received.Load())
	})
	for now := begin; now.Sub(begin) < dur && ctx.Err() == nil; now = <-tick.C {
		due := int64(float64(now.Sub(begin)) / float64(time.Second) * rate)
		for ; n < due; n++ {
			v := make([]byte, size)
			binary.BigEndian.PutUint64(v, uint64(n))
			binary.BigEndian.PutUint64(v[8:], uint64(time.Since(epoch)))
			for i := 16; i < size; i++ {
				v[i] = 'x'
			}
			sent.Add(1)
			producer.Produce(ctx, &kgo.Record{Topic: p.in, Key: keys[rng.IntN(len(keys))], Value: v}, func(_ *kgo.Record, err error) {
				if err != nil {
					errs.Add(1)
					return
				}
				acked.Add(1)
			})
		}
	}
	if err := producer.Flush(ctx); err != nil {
		return res, fmt.Errorf("%s: flush: %w", p.name, err)
	}
	deadline := time.Now().Add(grace)
	for received.Load() < acked.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	stopConsumer()
	<-consumed

	mu.Lock()
	defer mu.Unlock()
	res.Sent, res.Acked, res.Errors, res.Received, res.Duplicates = sent.Load(), acked.Load(), errs.Load(), received.Load(), dups.Load()
	res.Lost = max(0, res.Acked-res.Received)
	if span := last.Sub(begin).Seconds(); span > 0 {
		res.Throughput = stats.Round3(float64(res.Received) / span)
	}
	res.latencies = lat
	res.Latency = stats.Of(lat)
	return res, nil
}

package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/parleychat/parley/pkg/metrics"
	"github.com/parleychat/parley/pkg/topics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// newDeadLetters registers the sequencer's dead-letter counter on reg.
func newDeadLetters(reg *prometheus.Registry) *prometheus.CounterVec {
	return metrics.DeadLetters(reg, "ingest", "Command records set aside on "+topics.DeadLetter+" instead of sequenced, by reason.",
		topics.ReasonUndecodable, topics.ReasonInvalid)
}

// SequencerGroup is the consumer group whose members own command partitions.
const SequencerGroup = "parley-sequencer"

// Sequencer turns commands into events. One member of SequencerGroup owns
// each command partition, so each conversation has one writer.
//
// Crash safety without a gap or duplicate: events and outcomes are produced
// (acks=all) before the command offsets are committed, and a partition's
// aggregates are rebuilt from its event log before its first command is
// decided. A command re-read after a crash therefore meets its own event in
// the rebuilt aggregate and only yields a duplicate outcome. Fencing a
// zombie owner (alive but expelled from the group) needs Kafka transactions;
// see docs/ARCHITECTURE.md.
type Sequencer struct {
	brokers    []string
	maxMembers int
	log        *slog.Logger
	cl         *kgo.Client

	// mu guards parts: the poll loop reads it, rebalance callbacks (on the
	// client's goroutine) drop revoked partitions.
	mu    sync.Mutex
	parts map[int32]map[string]*conversation
	// deadLetters counts commands set aside, by reason.
	deadLetters *prometheus.CounterVec
}

// NewSequencer joins the group lazily: nothing happens until Run polls.
func NewSequencer(brokers []string, instanceID string, maxMembers int, log *slog.Logger, deadLetters *prometheus.CounterVec) (*Sequencer, error) {
	s := &Sequencer{brokers: brokers, maxMembers: maxMembers, log: log, parts: map[int32]map[string]*conversation{}, deadLetters: deadLetters}
	drop := func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range lost[topics.Commands] {
			delete(s.parts, p)
		}
	}
	cl, err := kgo.NewClient(append(topics.ClientOpts(brokers), topics.GroupOpts(SequencerGroup, instanceID,
		kgo.ConsumeTopics(topics.Commands),
		kgo.DisableAutoCommit(),
		// Rebalances wait until the batch in hand is produced and committed,
		// so a partition never has two owners deciding at once.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(drop),
		kgo.OnPartitionsLost(drop),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)...)
	if err != nil {
		return nil, fmt.Errorf("sequencer kafka client: %w", err)
	}
	s.cl = cl
	return s, nil
}

// Run polls commands until ctx ends; it returns nil on a clean stop.
func (s *Sequencer) Run(ctx context.Context) error {
	defer s.cl.Close()
	for {
		fetches := s.cl.PollRecords(ctx, 2000)
		if ctx.Err() != nil {
			s.cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			s.log.Warn("sequencer fetch", "topic", t, "partition", p, "err", err)
		})
		if err := s.process(ctx, fetches); err != nil {
			s.cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.cl.AllowRebalance()
	}
}

func (s *Sequencer) process(ctx context.Context, fetches kgo.Fetches) error {
	var out []*kgo.Record
	var rejected []topics.Rejected
	now := time.Now()
	var err error
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if err != nil || len(fp.Records) == 0 {
			return
		}
		var convs map[string]*conversation
		convs, err = s.partition(ctx, fp.Partition)
		if err != nil {
			return
		}
		for _, r := range fp.Records {
			cmd := &logv1.Command{}
			if uerr := proto.Unmarshal(r.Value, cmd); uerr != nil || cmd.GetConversationId() == "" {
				// Only ingest writes this topic, so this is a bug or a foreign
				// writer: set aside for people to look at, never silently
				// skipped, and a Submit waiting for it is told at once
				// rather than timing out.
				if uerr == nil {
					uerr = &topics.BadRecord{Reason: topics.ReasonInvalid, Err: errors.New("command without conversation id")}
				} else {
					uerr = &topics.BadRecord{Reason: topics.ReasonUndecodable, Err: uerr}
				}
				rejected = append(rejected, topics.Rejected{Record: r, Err: uerr})
				if id := cmd.GetCommandId(); id != "" {
					out = append(out, s.record(topics.Outcomes, r, &logv1.Outcome{CommandId: id, ClientMsgId: cmd.GetClientMsgId(),
						ErrorCode: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, ErrorMessage: "command is missing its conversation id"}))
				}
				continue
			}
			rec, outcome := decide(convs, cmd, s.maxMembers, now)
			if rec != nil {
				out = append(out, s.record(topics.Events, r, rec))
			}
			out = append(out, s.record(topics.Outcomes, r, outcome))
		}
	})
	if err != nil {
		return err
	}
	if len(out) > 0 {
		if err := s.cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
			return fmt.Errorf("produce %d events and outcomes: %w", len(out), err)
		}
	}
	if len(rejected) > 0 {
		for _, r := range rejected {
			s.deadLetters.WithLabelValues(topics.ReasonOf(r.Err)).Inc()
		}
		if err := topics.SetAside(ctx, s.cl, s.log, SequencerGroup, rejected); err != nil {
			return fmt.Errorf("set aside %d commands: %w", len(rejected), err)
		}
	}
	if err := s.cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
		// Typically this node was expelled from the group (paused past the
		// session timeout) and its partitions are another's now. What it
		// produced is on the log, so the new owner, which rebuilds from the
		// log, answers those commands again as duplicates. Forget every
		// aggregate, so a partition this node gets back is rebuilt from the
		// log too, and carry on: the client rejoins the group by itself.
		s.log.Warn("sequencer: commit failed; commands will be decided again from the log", "err", err)
		s.mu.Lock()
		clear(s.parts)
		s.mu.Unlock()
	}
	return nil
}

func (s *Sequencer) record(topic string, cmd *kgo.Record, m proto.Message) *kgo.Record {
	v, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err)) // only fails on invalid UTF-8 we validated away
	}
	return &kgo.Record{Topic: topic, Partition: cmd.Partition, Key: cmd.Key, Value: v}
}

// partition returns the aggregates of a command partition, rebuilding them
// from the same-numbered event partition the first time.
func (s *Sequencer) partition(ctx context.Context, p int32) (map[string]*conversation, error) {
	s.mu.Lock()
	convs, ok := s.parts[p]
	s.mu.Unlock()
	if ok {
		return convs, nil
	}
	start := time.Now()
	convs, n, err := loadPartition(ctx, s.brokers, p)
	if err != nil {
		return nil, err
	}
	s.log.Info("sequencer: partition loaded", "partition", p, "events", n, "conversations", len(convs), "took", time.Since(start))
	s.mu.Lock()
	s.parts[p] = convs
	s.mu.Unlock()
	return convs, nil
}

// loadPartition reads event partition p from its start to its current end.
func loadPartition(ctx context.Context, brokers []string, p int32) (map[string]*conversation, int, error) {
	convs := map[string]*conversation{}
	cl, err := kgo.NewClient(append(topics.ClientOpts(brokers),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topics.Events: {p: kgo.NewOffset().AtStart()}}),
	)...)
	if err != nil {
		return nil, 0, fmt.Errorf("load partition %d: %w", p, err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics.Events)
	if err != nil {
		return nil, 0, fmt.Errorf("load partition %d: end offsets: %w", p, err)
	}
	end, ok := ends.Lookup(topics.Events, p)
	if !ok || end.Err != nil {
		return nil, 0, fmt.Errorf("load partition %d: no end offset: %v", p, end.Err)
	}
	n := 0
	for next := int64(-1); next < end.Offset-1; {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		var ferr error
		fetches.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return nil, 0, fmt.Errorf("load partition %d: %w", p, ferr)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			next = r.Offset
			rec := &logv1.EventRecord{}
			if err := proto.Unmarshal(r.Value, rec); err != nil {
				ferr = fmt.Errorf("load partition %d: decode event at offset %d: %w", p, r.Offset, err)
				return
			}
			replay(convs, rec)
			n++
		})
		if ferr != nil {
			return nil, 0, ferr
		}
	}
	return convs, n, nil
}

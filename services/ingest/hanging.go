package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
)

// A hanging transaction is one the coordinator has ended but whose marker
// never reached one of its partitions. Kafka 4.4 makes them on a single
// broker: during its controlled shutdown, and again while it registers
// after a restart, its partitions have no leader, and the coordinator
// skips their markers ("likely deleted already") yet completes the
// transaction (docs/GUARANTEES.md, guarantee 1). The records stay
// invisible to every committed reader, the partition's last stable offset
// stops there, and so does every later record of it: for Parley, an
// acknowledged message that nobody ever receives, and a conversation
// partition that no sequencer can load again.
//
// Only the producer knows how such a transaction ended, so each sequencer
// remembers how its own recent transactions ended (endings), and a watch
// (hangingWatch) looks for transactions left open on the partitions
// sequencers write, and writes the missing marker for its own: the one the
// coordinator should have written. Anyone else's it reports, for an
// operator (docs/OPERATIONS.md, ParleyHangingTransaction).

// producerEpoch names one transaction: Kafka 4's transactions (version 2)
// bump the producer epoch at every end, so a producer id and epoch are one
// transaction. With older brokers (version 1) they are one producer
// session, and endings merges what its transactions' ends said.
type producerEpoch struct {
	id    int64
	epoch int16
}

// outcome is how a transaction ended, as its End told the sequencer.
type outcome uint8

const (
	endUnknown outcome = iota // End failed: the coordinator decided, unseen
	endCommit                 // End answered committed
	endAbort                  // End answered aborted, or was asked to abort
)

// endingsKept bounds endings: at a few hundred transactions a second,
// minutes of them, well past the seconds a broker restart takes.
const endingsKept = 1 << 16

// ending is what endings keeps of one transaction.
type ending struct {
	how outcome
	at  time.Time // when its End returned (the last one, for a version 1 session)
}

// endings remembers how this process's last endingsKept transactions ended.
type endings struct {
	mu    sync.Mutex
	m     map[producerEpoch]ending
	order []producerEpoch // a ring of the keys of m, oldest at next
	next  int
}

func newEndings() *endings { return &endings{m: map[producerEpoch]ending{}} }

// add records that the transaction k ended as how, at.
func (e *endings) add(k producerEpoch, how outcome, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if prev, ok := e.m[k]; ok {
		if prev.how != how {
			how = endUnknown // a version 1 session whose transactions ended both ways
		}
		e.m[k] = ending{how: how, at: at}
		return
	}
	if len(e.order) < endingsKept {
		e.order = append(e.order, k)
	} else {
		delete(e.m, e.order[e.next])
		e.order[e.next] = k
		e.next = (e.next + 1) % endingsKept
	}
	e.m[k] = ending{how: how, at: at}
}

func (e *endings) get(k producerEpoch) (ending, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[k]
	return x, ok
}

// openTxn is a transaction open on one partition, as DescribeProducers
// shows it; its start offset tells one transaction from the next.
type openTxn struct {
	topic     string
	partition int32
	producerEpoch
	start int64
}

// hangingWatch looks for hanging transactions every `every` and finishes
// the ones ends knows. A transaction counts as hanging once it has been
// seen open for `every` after its End returned: the coordinator writes its
// markers within milliseconds of the end, and one it is still retrying it
// writes with the same outcome, so an extra marker does no harm.
type hangingWatch struct {
	adm    *kadm.Client
	ends   *endings
	log    *slog.Logger
	every  time.Duration
	topics []string // the topics to look at: the ones a sequencer's transactions write
	// count, when set, counts the hanging transactions by outcome
	// (committed, aborted, reported).
	count *prometheus.CounterVec

	// seen: when each open transaction was first seen; reported: the
	// foreign ones already reported.
	seen     map[openTxn]time.Time
	reported map[openTxn]bool
}

// sequencerTopics are the topics a sequencer's transaction writes:
// records to the first four, its group's offsets to the last.
var sequencerTopics = []string{topics.Events, topics.Outcomes, topics.Commands, topics.DeadLetter, "__consumer_offsets"}

func newHangingWatch(adm *kadm.Client, ends *endings, log *slog.Logger) *hangingWatch {
	return &hangingWatch{adm: adm, ends: ends, log: log, every: transactionTimeout, topics: sequencerTopics,
		seen: map[openTxn]time.Time{}, reported: map[openTxn]bool{}}
}

// run scans every w.every until ctx ends.
func (w *hangingWatch) run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := w.scan(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			// Typically the broker is away; it is looked at again when back.
			w.log.Warn("sequencer: looking for hanging transactions failed; trying again", "err", err)
			failing = true
		case err == nil:
			failing = false
		}
	}
}

func (w *hangingWatch) counted(outcome string) {
	if w.count != nil {
		w.count.WithLabelValues(outcome).Inc()
	}
}

// scan looks at the open transactions of w.topics once, writes the markers
// of the hanging ones ends knows, and returns how many it finished.
func (w *hangingWatch) scan(ctx context.Context) (int, error) {
	details, err := w.adm.ListTopics(ctx, w.topics...)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	set := kadm.TopicsSet{}
	for _, d := range details {
		if d.Err != nil {
			continue // a topic not made yet (the dead letters are made on first use)
		}
		for p := range d.Partitions {
			set.Add(d.Topic, p)
		}
	}
	described, err := w.adm.DescribeProducers(ctx, set)
	if err != nil {
		return 0, fmt.Errorf("describe producers: %w", err)
	}
	now := time.Now()
	open := map[openTxn]int32{} // the coordinator epoch of each
	for _, p := range described.SortedPartitions() {
		if p.Err != nil {
			continue // its leader is away: the next scan sees it
		}
		for _, d := range p.ActiveProducers {
			if d.CurrentTxnStartOffset < 0 {
				continue
			}
			k := openTxn{d.Topic, d.Partition, producerEpoch{d.ProducerID, d.ProducerEpoch}, d.CurrentTxnStartOffset}
			open[k] = d.CoordinatorEpoch
		}
	}
	// Forget what is no longer open; remember when the rest was first seen.
	for k := range w.seen {
		if _, ok := open[k]; !ok {
			delete(w.seen, k)
			delete(w.reported, k)
		}
	}
	type marker struct {
		producerEpoch
		commit     bool
		coordEpoch int32
	}
	markers := map[marker]kadm.TopicsSet{}
	for k, coordEpoch := range open {
		first, ok := w.seen[k]
		if !ok {
			w.seen[k] = now
			continue
		}
		if now.Sub(first) < w.every {
			continue
		}
		e, ours := w.ends.get(k.producerEpoch)
		if !ours || !e.at.Before(first) {
			// Someone else's, or this session's (version 1) still going on.
			if now.Sub(first) >= hangingAfter && !w.reported[k] && !ours {
				w.reported[k] = true
				w.counted("reported")
				w.log.Error("sequencer: a transaction of another producer has been open on a partition the sequencers write; see docs/OPERATIONS.md (ParleyHangingTransaction)",
					"topic", k.topic, "partition", k.partition, "producer_id", k.id, "producer_epoch", k.epoch, "start_offset", k.start, "open_for", now.Sub(first).Round(time.Second))
			}
			continue
		}
		// An End that failed is finished as committed: its commands got
		// no answer, so the worst a wrong guess does is to have them
		// decided again, and a decision is idempotent: a command already
		// on the log is answered as a duplicate of its first decision.
		// Aborting records the coordinator committed elsewhere could leave
		// a command's offset consumed and its events gone.
		m := marker{k.producerEpoch, e.how != endAbort, coordEpoch}
		parts := markers[m]
		if parts == nil {
			parts = kadm.TopicsSet{}
			markers[m] = parts
		}
		parts.Add(k.topic, k.partition)
	}
	done := 0
	for m, parts := range markers {
		resp, err := w.adm.WriteTxnMarkers(ctx, kadm.TxnMarkers{ProducerID: m.id, ProducerEpoch: m.epoch, Commit: m.commit, CoordinatorEpoch: m.coordEpoch, Topics: parts})
		if err != nil {
			return done, fmt.Errorf("write markers of producer %d epoch %d: %w", m.id, m.epoch, err)
		}
		for _, r := range resp {
			for _, t := range r.Topics {
				for _, p := range t.Partitions {
					if p.Err != nil {
						w.log.Warn("sequencer: writing a hanging transaction's marker failed; trying again", "topic", p.Topic, "partition", p.Partition, "producer_id", m.id, "producer_epoch", m.epoch, "err", p.Err)
						continue
					}
					done++
				}
			}
		}
		if m.commit {
			w.counted("committed")
		} else {
			w.counted("aborted")
		}
		w.log.Warn("sequencer: finished a transaction the broker had left open", "producer_id", m.id, "producer_epoch", m.epoch, "commit", m.commit, "partitions", parts.Sorted())
	}
	return done, nil
}

package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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
// The producer knows best how such a transaction ended, so each sequencer
// remembers how its own recent transactions ended (endings), and a watch
// (hangingWatch) looks for transactions left open on the partitions
// sequencers write. Its own it finishes with the marker its end called
// for. Those of a sequencer no longer running (its transactional id says
// whose) it finishes as the coordinator's state of that id says
// (goneOutcome). Anyone else's it reports, for an operator
// (docs/OPERATIONS.md, ParleyHangingTransaction). Every ingest node
// watches; two writing the same marker do no harm, since a marker for a
// transaction no longer open changes nothing.

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

// hangingWatch looks for hanging transactions every `every`. One of its
// own counts as hanging once seen open for `every` after its End returned:
// the coordinator writes its markers within milliseconds of the end, and
// one it is still retrying it writes with the same outcome. Another's
// counts once seen open for goneAfter, past the broker's own timeout
// abort, and only if its coordinator no longer holds it.
type hangingWatch struct {
	adm    *kadm.Client
	ends   *endings
	log    *slog.Logger
	every  time.Duration
	topics []string // the topics to look at: the ones a sequencer's transactions write
	// count, when set, counts the hanging transactions by outcome
	// (committed, aborted, reported).
	count *prometheus.CounterVec

	// goneAfter: how long a transaction this process did not end must be
	// open before it is decided: past the broker's own timeout abort
	// (hangingAfter).
	goneAfter time.Duration

	// seen: when each open transaction was first seen; reported: the
	// ones of a producer not a sequencer, already reported.
	seen     map[openTxn]time.Time
	reported map[openTxn]bool
}

// sequencerTopics are the topics a sequencer's transaction writes:
// records to the first four, its group's offsets to the last.
var sequencerTopics = []string{topics.Events, topics.Outcomes, topics.Commands, topics.DeadLetter, "__consumer_offsets"}

func newHangingWatch(adm *kadm.Client, ends *endings, log *slog.Logger) *hangingWatch {
	return &hangingWatch{adm: adm, ends: ends, log: log, every: transactionTimeout, goneAfter: hangingAfter, topics: sequencerTopics,
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

// marker is one WriteTxnMarkers entry: a transaction, how it ends, and
// the coordinator epoch the partitions last saw.
type marker struct {
	producerEpoch
	commit     bool
	coordEpoch int32
}

// decideGone decides the open transactions this process did not end (or
// no longer remembers): a sequencer's, known by its transactional id, is
// finished as goneOutcome says, unless its coordinator still holds it;
// anyone else's is reported, once.
func (w *hangingWatch) decideGone(ctx context.Context, gone []openTxn, finish func(openTxn, bool)) error {
	var pids []int64
	for _, k := range gone {
		if !slices.Contains(pids, k.id) {
			pids = append(pids, k.id)
		}
	}
	listed, err := w.adm.ListTransactions(ctx, pids, nil)
	if err != nil {
		return fmt.Errorf("list transactions: %w", err)
	}
	txnIDs := map[int64]string{}
	var ids []string
	for _, l := range listed {
		if strings.HasPrefix(l.TxnID, sequencerTxnPrefix) {
			txnIDs[l.ProducerID] = l.TxnID
			ids = append(ids, l.TxnID)
		}
	}
	described := kadm.DescribedTransactions{}
	if len(ids) > 0 {
		if described, err = w.adm.DescribeTransactions(ctx, ids...); err != nil {
			return fmt.Errorf("describe transactions: %w", err)
		}
	}
	for _, k := range gone {
		d, ok := described[txnIDs[k.id]]
		if !ok || d.Err != nil {
			if !w.reported[k] {
				w.reported[k] = true
				w.counted("reported")
				w.log.Error("sequencer: a transaction of another producer has been open on a partition the sequencers write; see docs/OPERATIONS.md (ParleyHangingTransaction)",
					"topic", k.topic, "partition", k.partition, "producer_id", k.id, "producer_epoch", k.epoch, "start_offset", k.start)
			}
			continue
		}
		commit, ok := goneOutcome(d, k.epoch)
		if !ok {
			continue
		}
		w.log.Warn("sequencer: a transaction of a sequencer no longer running is open; finishing it as its coordinator's state says",
			"topic", k.topic, "partition", k.partition, "transactional_id", d.TxnID, "producer_id", k.id, "producer_epoch", k.epoch,
			"coordinator_state", d.State, "coordinator_epoch", d.ProducerEpoch, "commit", commit)
		finish(k, commit)
	}
	return nil
}

// goneOutcome says how to finish a sequencer's transaction of producer
// epoch epoch, open on a partition, given its coordinator's state d; false
// if the coordinator still holds it (it ends it, with markers, itself).
//
// The coordinator's state names the last transaction of the id: with
// transactions version 2 its end bumped the epoch to epoch+1, with version
// 1 it kept epoch. When it has moved past (a new session, a later
// transaction), the end is unknown and the transaction is committed:
// every command in it was either answered from it, or got no answer and
// is decided again, and deciding a command already on the log answers it
// as a duplicate of its first decision. Aborting instead could hide
// messages already acknowledged, and leave a command's offset consumed
// with its events gone.
func goneOutcome(d kadm.DescribedTransaction, epoch int16) (commit, finish bool) {
	last := d.ProducerEpoch == epoch || d.ProducerEpoch == epoch+1
	switch d.State {
	case "CompleteCommit":
		return true, true
	case "CompleteAbort":
		return !last, true
	case "Empty", "Dead":
		return true, true
	default: // Ongoing, PrepareCommit, PrepareAbort, PrepareEpochFence
		return true, d.ProducerEpoch > epoch+1
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
	markers := map[marker]kadm.TopicsSet{}
	finish := func(k openTxn, commit bool) {
		m := marker{k.producerEpoch, commit, open[k]}
		parts := markers[m]
		if parts == nil {
			parts = kadm.TopicsSet{}
			markers[m] = parts
		}
		parts.Add(k.topic, k.partition)
	}
	var gone []openTxn
	for k := range open {
		first, ok := w.seen[k]
		if !ok {
			w.seen[k] = now
			continue
		}
		if now.Sub(first) < w.every {
			continue
		}
		e, ours := w.ends.get(k.producerEpoch)
		switch {
		case ours && e.at.Before(first):
			// An End that failed is finished as committed: see goneOutcome.
			finish(k, e.how != endAbort)
		case !ours && now.Sub(first) >= w.goneAfter:
			gone = append(gone, k)
		}
		// Otherwise this session's (transaction version 1) still going on,
		// or not open long enough to be another's for sure.
	}
	if len(gone) > 0 {
		if err := w.decideGone(ctx, gone, finish); err != nil {
			return 0, err
		}
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

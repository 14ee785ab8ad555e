package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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
// A watch (hangingWatch) in every ingest process looks for transactions
// left open on the partitions sequencers write, and writes the marker the
// coordinator should have written:
//   - for its own, whose End answered committed or aborted, that outcome
//     (endings remembers them);
//   - for any other sequencer's (its transactional id says whose; its own
//     whose End failed among them), once the coordinator no longer holds
//     it, the outcome the coordinator wrote on the transaction's other
//     partitions (findMarker). With no marker anywhere, every partition of
//     the transaction hangs, so either outcome keeps it atomic, and commit
//     keeps what may have been acknowledged.
//
// Anyone else's it reports, for an operator (docs/OPERATIONS.md,
// ParleyHangingTransaction). All of it needs transactions version 2
// (Kafka 4's default), where a producer id and epoch name one transaction
// and its markers carry the epoch after it; under version 1 the watch only
// reports.

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

// openInfo is what DescribeProducers says of an open transaction besides.
type openInfo struct {
	coordEpoch int32 // of its last write: a marker must carry at least this
	lastWrite  int64 // the time of its last record, in ms
}

// hangingWatch looks for hanging transactions every `every`. One of its
// own counts as hanging once open for `every` after both its first sight
// and its End's return: the coordinator writes its markers within
// milliseconds of the end, and one it is still retrying it writes with the
// same outcome. Another's counts once open for goneAfter, past the
// broker's own timeout abort, and only if its coordinator no longer holds
// it.
type hangingWatch struct {
	adm    *kadm.Client
	conn   []kgo.Opt // for findMarker's reader
	ends   *endings
	log    *slog.Logger
	every  time.Duration
	topics []string // the topics to look at: the ones a sequencer's transactions write
	// goneAfter: how long a transaction this process cannot decide alone
	// must be open before it is decided.
	goneAfter time.Duration
	// count, when set, counts the hanging transactions by outcome
	// (committed, aborted, reported).
	count *prometheus.CounterVec

	// seen: when each open transaction was first seen. reported: the
	// ones reported (another producer's, or undecidable), and the
	// transactions whose marker failed to be written, logged once.
	seen     map[openTxn]time.Time
	reported map[openTxn]bool
	failed   map[producerEpoch]bool
}

// sequencerTopics are the topics a sequencer's transaction writes:
// records to the first four, its group's offsets to the last.
var sequencerTopics = []string{topics.Events, topics.Outcomes, topics.Commands, topics.DeadLetter, "__consumer_offsets"}

func newHangingWatch(adm *kadm.Client, conn []kgo.Opt, ends *endings, log *slog.Logger) *hangingWatch {
	return &hangingWatch{adm: adm, conn: conn, ends: ends, log: log, every: transactionTimeout, goneAfter: hangingAfter, topics: sequencerTopics,
		seen: map[openTxn]time.Time{}, reported: map[openTxn]bool{}, failed: map[producerEpoch]bool{}}
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

// report logs and counts k once.
func (w *hangingWatch) report(k openTxn, msg string, args ...any) {
	if w.reported[k] {
		return
	}
	w.reported[k] = true
	w.counted("reported")
	w.log.Error(msg, append([]any{"topic", k.topic, "partition", k.partition, "producer_id", k.id, "producer_epoch", k.epoch, "start_offset", k.start}, args...)...)
}

// marker is one WriteTxnMarkers entry: a transaction and how it ends.
type marker struct {
	producerEpoch
	commit bool
}

// finishing is a marker to write and why, for its log line.
type finishing struct {
	parts kadm.TopicsSet
	why   string
}

// producerState is a producer's latest epoch on one partition, as
// DescribeProducers shows it.
type producerState struct {
	topic     string
	partition int32
	epoch     int16
}

// scan looks at the open transactions of w.topics once, writes the markers
// of the hanging ones it can decide, and returns the partitions it
// finished.
func (w *hangingWatch) scan(ctx context.Context) (int, error) {
	tv, err := w.transactionVersion(ctx)
	if err != nil {
		return 0, err
	}
	details, err := w.adm.ListTopics(ctx, w.topics...)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	// Deciding another's transaction needs every partition it may have
	// touched in view (see decide); its own it can decide regardless.
	complete := true
	set := kadm.TopicsSet{}
	for _, d := range details {
		if d.Err != nil {
			// The dead letters are made on first use; any other topic that
			// cannot be described now hides partitions.
			complete = complete && d.Topic == topics.DeadLetter && errors.Is(d.Err, kerr.UnknownTopicOrPartition)
			continue
		}
		for p := range d.Partitions {
			set.Add(d.Topic, p)
		}
	}
	described, err := w.adm.DescribeProducers(ctx, set)
	var shardErrs *kadm.ShardErrors
	if errors.As(err, &shardErrs) {
		complete, err = false, nil // a broker did not answer: its partitions are unseen below
	} else if err != nil {
		return 0, fmt.Errorf("describe producers: %w", err)
	}
	now := time.Now()
	open := map[openTxn]openInfo{}
	producers := map[int64][]producerState{}
	unseen := kadm.TopicsSet{} // partitions whose producers could not be described
	set.Each(func(t string, p int32) {
		if _, ok := described[t].Partitions[p]; !ok {
			unseen.Add(t, p)
		}
	})
	for _, p := range described.SortedPartitions() {
		if p.Err != nil {
			unseen.Add(p.Topic, p.Partition) // its leader is away: the next scan sees it
			continue
		}
		for _, d := range p.ActiveProducers {
			producers[d.ProducerID] = append(producers[d.ProducerID], producerState{d.Topic, d.Partition, d.ProducerEpoch})
			if d.CurrentTxnStartOffset < 0 {
				continue
			}
			k := openTxn{d.Topic, d.Partition, producerEpoch{d.ProducerID, d.ProducerEpoch}, d.CurrentTxnStartOffset}
			open[k] = openInfo{d.CoordinatorEpoch, d.LastTimestamp}
		}
	}
	if len(unseen) > 0 {
		complete = false
	}
	// Forget what is no longer open (not what could not be looked at).
	stillOpen := map[producerEpoch]bool{}
	for k := range w.seen {
		if _, ok := open[k]; !ok && !unseen.Lookup(k.topic, k.partition) {
			delete(w.seen, k)
			delete(w.reported, k)
		} else {
			stillOpen[k.producerEpoch] = true
		}
	}
	for pe := range w.failed {
		if !stillOpen[pe] {
			delete(w.failed, pe)
		}
	}
	markers := map[marker]*finishing{}
	finish := func(k openTxn, commit bool, why string) {
		m := marker{k.producerEpoch, commit}
		if markers[m] == nil {
			markers[m] = &finishing{parts: kadm.TopicsSet{}, why: why}
		}
		markers[m].parts.Add(k.topic, k.partition)
	}
	undecided := map[producerEpoch][]openTxn{}
	for k := range open {
		first, ok := w.seen[k]
		if !ok {
			w.seen[k] = now
			continue
		}
		if tv < 2 {
			if now.Sub(first) >= w.goneAfter {
				w.report(k, "sequencer: a transaction has been open on a partition the sequencers write; the cluster's transactions are version 1, under which the sequencers do not finish them; see docs/OPERATIONS.md (ParleyHangingTransaction)")
			}
			continue
		}
		e, ours := w.ends.get(k.producerEpoch)
		since := first
		if ours && e.at.After(since) {
			since = e.at
		}
		switch {
		case ours && e.how != endUnknown && now.Sub(since) >= w.every:
			finish(k, e.how == endCommit, "its own end")
		case (!ours || e.how == endUnknown) && now.Sub(since) >= w.goneAfter:
			undecided[k.producerEpoch] = append(undecided[k.producerEpoch], k)
		}
	}
	// Its own first: deciding others' asks more of the cluster, and fails
	// more easily right after a restart.
	done := w.write(ctx, markers, open)
	if len(undecided) > 0 && complete {
		markers = map[marker]*finishing{}
		err = w.decide(ctx, undecided, open, producers, finish)
		done += w.write(ctx, markers, open)
	}
	return done, err
}

// write writes markers and returns the partitions they finished. A marker
// carries the epoch after the transaction's, as the coordinator's do with
// transactions version 2, so that a later search for the coordinator's
// outcome (findMarker) finds it too; a partition takes it either way,
// since it is above its producer's epoch.
func (w *hangingWatch) write(ctx context.Context, markers map[marker]*finishing, open map[openTxn]openInfo) int {
	done := 0
	for m, d := range markers {
		// The coordinator epoch a marker must carry: the highest its
		// partitions saw.
		var coordEpoch int32
		for k, info := range open {
			if k.producerEpoch == m.producerEpoch && d.parts.Lookup(k.topic, k.partition) {
				coordEpoch = max(coordEpoch, info.coordEpoch)
			}
		}
		resp, err := w.adm.WriteTxnMarkers(ctx, kadm.TxnMarkers{ProducerID: m.id, ProducerEpoch: m.epoch + 1, Commit: m.commit, CoordinatorEpoch: coordEpoch, Topics: d.parts})
		if err == nil {
			err = markersError(resp)
		}
		if err != nil {
			if !w.failed[m.producerEpoch] {
				w.failed[m.producerEpoch] = true
				w.log.Warn("sequencer: writing a hanging transaction's markers failed; trying again at each scan", "producer_id", m.id, "producer_epoch", m.epoch, "commit", m.commit, "partitions", d.parts.Sorted(), "err", err)
			}
			continue
		}
		delete(w.failed, m.producerEpoch)
		for _, ps := range d.parts {
			done += len(ps)
		}
		if m.commit {
			w.counted("committed")
		} else {
			w.counted("aborted")
		}
		w.log.Warn("sequencer: finished a transaction the broker had left open", "producer_id", m.id, "producer_epoch", m.epoch, "commit", m.commit, "decided_by", d.why, "partitions", d.parts.Sorted())
	}
	return done
}

// markersError is the first partition error of resp.
func markersError(resp kadm.TxnMarkersResponses) error {
	for _, r := range resp {
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if p.Err != nil {
					return fmt.Errorf("%s/%d: %w", p.Topic, p.Partition, p.Err)
				}
			}
		}
	}
	return nil
}

// decide decides the hanging transactions this process cannot decide
// alone (see the top of this file), calling finish for each partition of
// the ones it decided. producers holds every producer's epoch on every
// partition of w.topics, from the same scan.
//
// A marker of transaction pe (epoch E) sets its producer's epoch on that
// partition to E+1, so it can only be on a partition where the producer's
// epoch is E+1 or more: if no partition but the hanging ones has that,
// the coordinator marked none, every partition of pe hangs, and either
// outcome keeps it whole.
func (w *hangingWatch) decide(ctx context.Context, undecided map[producerEpoch][]openTxn, open map[openTxn]openInfo, producers map[int64][]producerState, finish func(openTxn, bool, string)) error {
	var pids []int64
	for pe := range undecided {
		if !slices.Contains(pids, pe.id) {
			pids = append(pids, pe.id)
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
	var errs []error
	for pe, ks := range undecided {
		id, ok := txnIDs[pe.id]
		if !ok {
			for _, k := range ks {
				w.report(k, "sequencer: a transaction of another producer has been open on a partition the sequencers write; see docs/OPERATIONS.md (ParleyHangingTransaction)")
			}
			continue
		}
		d, ok := described[id]
		if !ok || d.Err != nil {
			continue // the coordinator is busy (loading after a restart): the next scan asks again
		}
		commit, known, holds := coordinatorOutcome(d, pe)
		if holds {
			continue // it ends the transaction itself, with markers
		}
		why := "its coordinator's state (" + d.State + ")"
		if !known {
			var last int64
			hung := kadm.TopicsSet{}
			for _, k := range ks {
				last = max(last, open[k].lastWrite)
				hung.Add(k.topic, k.partition)
			}
			marked := kadm.TopicsSet{}
			for _, st := range producers[pe.id] {
				if int32(st.epoch) > int32(pe.epoch) && !hung.Lookup(st.topic, st.partition) {
					marked.Add(st.topic, st.partition)
				}
			}
			switch {
			case len(marked) == 0:
				commit, why = true, "no marker anywhere: all of it hangs"
			case last <= 0:
				continue // no time to search from
			default:
				// Its records came within its timeout before its last one;
				// the marker, whenever the coordinator wrote it, after them.
				var found bool
				commit, found, err = w.findMarker(ctx, pe, marked, time.UnixMilli(last).Add(-6*transactionTimeout))
				if err != nil {
					errs = append(errs, err)
					continue
				}
				why = "its coordinator's marker on another partition"
				if !found {
					commit, why = true, "no marker anywhere: all of it hangs"
				}
			}
		}
		for _, k := range ks {
			finish(k, commit, why)
		}
	}
	return errors.Join(errs...)
}

// coordinatorOutcome reads transaction pe's outcome from its
// transactional id's state at the coordinator: known when the state is the
// end of pe itself (version 2 bumps the epoch at the end); holds when the
// coordinator has not ended pe yet.
func coordinatorOutcome(d kadm.DescribedTransaction, pe producerEpoch) (commit, known, holds bool) {
	if d.ProducerID != pe.id {
		return false, false, false // the id has a new producer id since
	}
	now, was := int32(d.ProducerEpoch), int32(pe.epoch) // no int16 wrap at the last epoch
	switch d.State {
	case "CompleteCommit":
		return true, now == was+1, false
	case "CompleteAbort":
		return false, now == was+1, false
	case "Ongoing":
		return false, false, now <= was // past it, the next transaction is going on
	case "Empty", "Dead":
		return false, false, false
	default: // PrepareCommit, PrepareAbort, PrepareEpochFence
		return false, false, now <= was+1
	}
}

// findMarker reads the partitions of marked, from their first record at or
// after from to their ends as they are now, for the marker of transaction
// pe (at pe's epoch plus one). It reports the marker's outcome and whether
// one was found; an error when it could not read all of it.
func (w *hangingWatch) findMarker(ctx context.Context, pe producerEpoch, marked kadm.TopicsSet, from time.Time) (commit, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*transactionTimeout)
	defer cancel()
	names := marked.Topics()
	starts, err := w.adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), names...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return false, false, fmt.Errorf("find marker: offsets at %s: %w", from.Format(time.RFC3339), err)
	}
	ends, err := w.adm.ListEndOffsets(ctx, names...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return false, false, fmt.Errorf("find marker: end offsets: %w", err)
	}
	type tp struct {
		topic     string
		partition int32
	}
	left := map[tp]int64{} // each partition still to read, to its end
	offsets := map[string]map[int32]kgo.Offset{}
	var missing error
	marked.Each(func(t string, p int32) {
		start, ok1 := starts.Lookup(t, p)
		end, ok2 := ends.Lookup(t, p)
		if !ok1 || !ok2 {
			missing = fmt.Errorf("find marker: no offsets for %s/%d", t, p)
			return
		}
		if start.Offset < 0 || start.Offset >= end.Offset {
			return // nothing written since from
		}
		left[tp{t, p}] = end.Offset
		if offsets[t] == nil {
			offsets[t] = map[int32]kgo.Offset{}
		}
		offsets[t][p] = kgo.NewOffset().At(start.Offset)
	})
	if missing != nil {
		return false, false, missing
	}
	if len(left) == 0 {
		return false, false, nil
	}
	cl, err := kgo.NewClient(append(slices.Clip(w.conn), kgo.ConsumePartitions(offsets), kgo.KeepControlRecords(),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()))...)
	if err != nil {
		return false, false, fmt.Errorf("find marker: %w", err)
	}
	defer cl.Close()
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return false, false, fmt.Errorf("find marker: %d partitions not read to their end: %w", len(left), err)
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("find marker: fetch %s/%d: %w", t, p, err) })
		if ferr != nil {
			return false, false, ferr
		}
		iter := fetches.RecordIter()
		for !iter.Done() {
			r := iter.Next()
			k := tp{r.Topic, r.Partition}
			end, ok := left[k]
			if !ok {
				continue
			}
			if r.Attrs.IsControl() && r.ProducerID == pe.id && int32(r.ProducerEpoch) == int32(pe.epoch)+1 {
				var key kmsg.ControlRecordKey
				if err := key.ReadFrom(r.Key); err == nil {
					switch key.Type {
					case kmsg.ControlRecordKeyTypeCommit:
						return true, true, nil
					case kmsg.ControlRecordKeyTypeAbort:
						return false, true, nil
					}
				}
			}
			if r.Offset+1 >= end {
				delete(left, k)
			}
		}
	}
	return false, false, nil
}

// transactionVersion is the cluster's finalized transaction.version
// feature (0 when the brokers do not say).
func (w *hangingWatch) transactionVersion(ctx context.Context) (int16, error) {
	vs, err := w.adm.ApiVersions(ctx)
	if err != nil {
		return 0, fmt.Errorf("api versions: %w", err)
	}
	for _, v := range vs.Sorted() {
		if v.Err != nil || v.Raw() == nil {
			continue
		}
		for _, f := range v.Raw().FinalizedFeatures {
			if f.Name == "transaction.version" {
				return f.MaxVersionLevel, nil
			}
		}
		return 0, nil
	}
	return 0, errors.New("api versions: no broker answered")
}

// settling is a committed transaction of this sequencer and the
// partitions it wrote where its markers have not been seen yet.
type settling struct {
	txn   producerEpoch
	parts kadm.TopicsSet
	at    time.Time // when it committed
}

// settleWait is how long the sequencer waits for the coordinator's markers
// of a transaction before writing them itself; settleKept, how long it
// keeps a transaction to check: past it, the hanging watch has finished
// the transaction if it hung.
const (
	settleWait = 2 * time.Second
	settleKept = time.Minute
)

// settle makes sure the committed transactions' markers are on every
// partition the records in out go to before they are produced. A
// partition still open under an earlier transaction of the same producer
// takes a later one's records into the same open range, and the later
// one's abort (a produce failure, a fence after a failed end) then aborts
// both: measured in TestSequencerAcrossKafkaRestarts, an acknowledged
// message lost after the broker skipped a commit's markers and the next
// transaction on that partition was fenced. The coordinator's markers
// normally land within milliseconds of the end; if they have not within
// settleWait, it skipped them, and the sequencer writes them itself.
func (s *Sequencer) settle(ctx context.Context, out []*kgo.Record) error {
	now := time.Now()
	s.unsettled = slices.DeleteFunc(s.unsettled, func(u *settling) bool { return len(u.parts) == 0 || now.Sub(u.at) > settleKept })
	if len(s.unsettled) == 0 {
		return nil
	}
	// Where out goes: a command handed on goes where its key puts it, so
	// any partition of the commands topic.
	target := kadm.TopicsSet{}
	anyCommand := false
	for _, r := range out {
		if r.Topic == topics.Commands {
			anyCommand = true
			continue
		}
		target.Add(r.Topic, r.Partition)
	}
	overlaps := func(t string, p int32) bool { return target.Lookup(t, p) || (anyCommand && t == topics.Commands) }
	check := kadm.TopicsSet{}
	for _, u := range s.unsettled {
		u.parts.Each(func(t string, p int32) {
			if overlaps(t, p) {
				check.Add(t, p)
			}
		})
	}
	if len(check) == 0 {
		return nil
	}
	// Bounded like the transaction's other waits: a broker away would
	// hold a request for the client's whole retry time.
	ctx, cancel := context.WithTimeout(ctx, transactionTimeout)
	defer cancel()
	adm := kadm.NewClient(s.client())
	deadline := now.Add(settleWait)
	wrote := false
	for {
		described, err := adm.DescribeProducers(ctx, check)
		open := map[*settling]kadm.TopicsSet{}
		coordEpochs := map[*settling]int32{}
		if err == nil {
			for _, u := range s.unsettled {
				u.parts.Each(func(t string, p int32) {
					if !check.Lookup(t, p) || err != nil {
						return
					}
					dp, ok := described[t].Partitions[p]
					switch {
					case !ok:
						err = fmt.Errorf("%s/%d: not described", t, p)
					case errors.Is(dp.Err, kerr.TopicAuthorizationFailed):
						u.parts.Delete(t, p) // not allowed to look: unchecked, as before settle
					case dp.Err != nil:
						err = fmt.Errorf("%s/%d: %w", t, p, dp.Err)
					default:
						if d, ok := dp.ActiveProducers[u.txn.id]; ok && d.ProducerEpoch == u.txn.epoch && d.CurrentTxnStartOffset >= 0 {
							parts := open[u]
							parts.Add(t, p)
							open[u] = parts
							coordEpochs[u] = max(coordEpochs[u], d.CoordinatorEpoch)
						} else {
							u.parts.Delete(t, p) // its marker is there
						}
					}
				})
			}
		}
		if err == nil && len(open) == 0 {
			return nil
		}
		switch {
		case time.Now().Before(deadline):
		case err != nil:
			return fmt.Errorf("settle committed transactions: %w", err)
		case wrote:
			return fmt.Errorf("settle committed transactions: still open after their markers were written: %d", len(open))
		default:
			for u, parts := range open {
				resp, err := adm.WriteTxnMarkers(ctx, kadm.TxnMarkers{ProducerID: u.txn.id, ProducerEpoch: u.txn.epoch + 1, Commit: true, CoordinatorEpoch: coordEpochs[u], Topics: parts})
				if err == nil {
					err = markersError(resp)
				}
				if err != nil {
					return fmt.Errorf("settle committed transactions: write markers: %w", err)
				}
				if s.hanging != nil {
					s.hanging.WithLabelValues("committed").Inc()
				}
				s.log.Warn("sequencer: the broker answered a transaction committed without its markers; wrote them",
					"producer_id", u.txn.id, "producer_epoch", u.txn.epoch, "partitions", parts.Sorted())
			}
			wrote = true
			deadline = time.Now().Add(settleWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// newDeadLetters registers the sequencer's dead-letter counter on reg.
func newDeadLetters(reg *prometheus.Registry) *prometheus.CounterVec {
	return metrics.DeadLetters(reg, "ingest", "Command records set aside on "+topics.DeadLetter+" instead of sequenced, by reason.",
		records.ReasonUndecodable, records.ReasonInvalid)
}

// newHangingTxns registers the counter of hanging transactions the
// sequencer met (hanging.go), by what became of each: committed or
// aborted (it wrote the missing marker), or reported (not its own).
func newHangingTxns(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_hanging_transactions_total", ConstLabels: prometheus.Labels{"service": "ingest"},
		Help: "Transactions a broker left open on a partition after their end, by what the sequencer did: committed or aborted (it wrote the missing marker), or reported (another producer's).",
	}, []string{"outcome"})
	for _, o := range []string{"committed", "aborted", "reported"} {
		c.WithLabelValues(o)
	}
	reg.MustRegister(c)
	return c
}

// sequencerTxnPrefix starts the transactional id of every sequencer.
const sequencerTxnPrefix = "parley-sequencer-"

// SequencerGroup is the consumer group whose members own command partitions.
const SequencerGroup = "parley-sequencer"

// Sequencer turns commands into events. One member of SequencerGroup owns
// each command partition, so each conversation has one writer.
//
// Each polled batch is one Kafka transaction: its events, outcomes and dead
// letters and the command offsets it consumed commit together or not at
// all, and every reader of those topics reads committed records only. A
// crash mid-batch therefore leaves nothing behind that anyone sees, and the
// next owner decides the same commands again. A zombie owner (alive, but
// expelled from the group after a pause) cannot commit: its offset commit
// carries its old group generation, the coordinator refuses it, and the
// whole transaction aborts (KIP-447). A partition's aggregates are rebuilt
// from its committed events before its first command is decided, after the
// previous owner's open transaction has ended.
type Sequencer struct {
	conn       []kgo.Opt
	maxMembers int
	log        *slog.Logger
	sess       *kgo.GroupTransactSession
	// claimed: sess has its producer id (see claim); renew clears it.
	claimed bool

	// mu guards parts and sess (renew replaces it; readiness reads it):
	// the poll loop reads parts, rebalance callbacks (on the
	// client's goroutine) drop revoked partitions.
	mu    sync.Mutex
	parts map[int32]map[string]*conversation
	// deadLetters counts commands set aside, by reason.
	deadLetters *prometheus.CounterVec
	// opts make the Kafka session (again, after a failed transaction),
	// with a metrics hook from kafkaMetrics, when set, for each.
	opts         []kgo.Opt
	kafkaMetrics func() kgo.Opt
	// live, when set, is the liveness watch of the poll loop.
	live *health.Loop
	// lost is set when the group session was lost (a heartbeat failed:
	// the broker went away or forgot this member): the next poll starts a
	// new Kafka session (see PollRecords).
	lost atomic.Bool
	// ends remembers how this process's transactions ended, for the
	// hanging transaction watch Run starts (see hanging.go), which counts
	// what it met in hanging (when set, by ingest.New).
	ends    *endings
	hanging *prometheus.CounterVec
	// unsettled holds the committed transactions whose markers settle
	// has not seen yet on every partition they wrote.
	unsettled []*settling
	// loading counts the partitions being rebuilt now.
	loading atomic.Int32
	// beforeEnd, when set (by tests), runs after a batch is produced and
	// before its transaction ends: the window a zombie is caught in.
	beforeEnd func()
	// tracer makes the batch and decision spans when traced (ingest.New
	// sets both from its Config); untraced, no span is started, so a
	// batch does not read every record's headers for nothing.
	tracer trace.Tracer
	traced bool
	// gather is the loop's Gather: how long a batch keeps collecting
	// commands after its first (Config.BatchWindow).
	gather time.Duration
	// self is the reply_to of the Submits of this process, which answer
	// (when set, by ingest.New) takes the outcomes of once their
	// transaction has committed; answers holds them for the batch in
	// hand. Without answer every outcome is a record.
	self    string
	answer  func([]*logv1.Outcome)
	answers []*logv1.Outcome

	// What measure sets; nil (not measured) until then. accepted holds
	// the submit times of the batch in hand's events, for sequenced.
	sequenced, perTxn prometheus.Observer
	lag               *metrics.Lag
	accepted          []time.Time
}

// measure makes the sequencer report to m: the sequenced stage, commands
// per transaction and its consumer lag. Called before Run.
func (s *Sequencer) measure(m *metrics.Service) {
	s.sequenced, s.perTxn, s.lag = m.Stage(metrics.StageSequenced), m.BatchSize(metrics.BatchCommandsPerTxn), m.Lag
}

// NewSequencer joins the group lazily: nothing happens until Run polls.
// conn reaches the cluster (topics.ClientOpts with the connection's
// security). kafkaMetrics, when set, makes each Kafka session's metrics
// hook: one of its own per session, since a hook (kprom's) belongs to one
// client, and a renewed session sharing it races with the old client's
// last goroutines. Options in extra are applied last (tests shorten the
// group's timeouts).
func NewSequencer(conn []kgo.Opt, instanceID string, maxMembers int, log *slog.Logger, deadLetters *prometheus.CounterVec, kafkaMetrics func() kgo.Opt, extra ...kgo.Opt) (*Sequencer, error) {
	s := &Sequencer{conn: conn, maxMembers: maxMembers, log: log, parts: map[int32]map[string]*conversation{}, deadLetters: deadLetters,
		tracer: tracing.Tracer(nil), kafkaMetrics: kafkaMetrics, ends: newEndings()}
	drop := func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range lost[topics.Commands] {
			delete(s.parts, p)
		}
		s.lag.Forget(SequencerGroup, lost)
	}
	// A transactional id must be unique among live sequencers. A static
	// member keeps its id across restarts, so a restarted process also
	// fences its predecessor's producer; otherwise any unique id will do,
	// since the group generation fences a zombie (KIP-447).
	txnID := sequencerTxnPrefix + instanceID
	if instanceID == "" {
		txnID = sequencerTxnPrefix + uuid.NewString()
	}
	s.opts = append(append(slices.Clip(conn), topics.GroupOpts(SequencerGroup, instanceID,
		kgo.ConsumeTopics(topics.Commands),
		kgo.TransactionalID(txnID),
		// A transaction left open by a process that died holds back every
		// committed reader of its partitions until the broker aborts it, so
		// keep that short: a batch's transaction lasts milliseconds.
		kgo.TransactionTimeout(transactionTimeout),
		// Rebalances wait until the batch in hand is committed or aborted,
		// so a partition never has two owners deciding at once.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(drop),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
			drop(ctx, cl, lost)
			s.lost.Store(true)
		}),
		kgo.RecordPartitioner(commandPartitions()),
	)...), extra...)
	sess, err := s.newSession()
	if err != nil {
		return nil, fmt.Errorf("sequencer kafka client: %w", err)
	}
	s.sess = sess
	return s, nil
}

// newSession makes a Kafka session from opts and a metrics hook of its own.
func (s *Sequencer) newSession() (*kgo.GroupTransactSession, error) {
	opts := s.opts
	if s.kafkaMetrics != nil {
		opts = append(slices.Clip(opts), s.kafkaMetrics())
	}
	return kgo.NewGroupTransactSession(opts...)
}

// transactionTimeout is how long the broker lets a transaction stay open
// before it aborts it. It also bounds the sequencer's own waits inside a
// transaction (its produce, and its end): past it the broker has aborted
// the transaction or is about to, so waiting on cannot commit anything. A
// broker restart showed why the bound is needed: franz-go's produce or end
// can wait for good on a client whose connection died mid-request (the
// client's produce never resumed, or End waited on a group heartbeat that
// no longer runs), and a sequencer stuck there also holds its group's
// rebalance (BlockRebalanceOnPoll), so no other node takes its partitions.
const transactionTimeout = 10 * time.Second

// hangingAfter is how long a partition's load may wait on an open
// transaction before the sequencer reports it: the broker aborts a
// transaction within the timeout plus its abort check interval (10 s by
// default), so past this it is not going to.
const hangingAfter = 3 * transactionTimeout

// errTxn marks a failure of the transaction itself (begin or end), after
// which franz-go's transactional client cannot go on: typically a zombie
// whose transaction the broker already aborted on timeout, fencing its
// producer epoch. A batch whose partitions could not be loaded fails the
// same way: its records are polled, and a new session polls them again.
var errTxn = errors.New("sequencer transaction failed")

// renew replaces the Kafka session after errTxn: a new client gets a new
// producer epoch and rejoins the group; every aggregate is forgotten, since
// what the failed transaction decided may or may not be on the log.
func (s *Sequencer) renew() error {
	// Closed before the next is made: its metrics hook unregisters as it
	// closes, and the next one registers the same names.
	s.sess.CloseAllowingRebalance()
	s.mu.Lock()
	clear(s.parts)
	s.mu.Unlock()
	sess, err := s.newSession()
	if err != nil {
		return fmt.Errorf("sequencer kafka client: %w", err)
	}
	s.mu.Lock()
	s.sess = sess
	s.claimed = false
	s.mu.Unlock()
	// The old session's close reports its partitions lost too.
	s.lost.Store(false)
	// The new session's offsets read must not wait on the old session's
	// transaction either (see claim).
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.claim(cctx); err != nil {
		s.log.Warn("sequencer: producer id not claimed yet; the next batch claims it", "err", err)
	}
	return nil
}

// client is the current session's Kafka client, for readiness.
func (s *Sequencer) client() *kgo.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess.Client()
}

// rebuilding fails, for readiness, while a partition's aggregates are
// being rebuilt from the log: commands of that partition wait meanwhile.
func (s *Sequencer) rebuilding() error {
	if n := s.loading.Load(); n > 0 {
		return fmt.Errorf("rebuilding %d partition(s) from the log", n)
	}
	return nil
}

// claim loads the session's producer id, which fences this transactional
// id's previous incarnation (the process this one restarts) and aborts the
// transaction it left open. It must come before anything waits on that
// transaction: loading an aggregate reads the event log up to its end,
// and, worse, a transaction killed after it sent the group's offsets
// leaves them pending, so the group answers the new member's offset read
// with UNSTABLE_OFFSET_COMMIT (KIP-447) and no batch ever comes to claim
// in. Either waits for the transaction to time out: 10 s, plus up to the
// broker's abort check interval, another 10 s by default.
func (s *Sequencer) claim(ctx context.Context) error {
	s.mu.Lock()
	sess, claimed := s.sess, s.claimed
	s.mu.Unlock()
	if claimed {
		return nil
	}
	if _, _, err := sess.Client().ProducerID(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	if s.sess == sess {
		s.claimed = true
	}
	s.mu.Unlock()
	return nil
}

// Run polls commands until ctx ends; it returns nil on a clean stop.
func (s *Sequencer) Run(ctx context.Context) error {
	defer func() { s.sess.Close() }()
	// Before the first poll: see claim. A failure here (Kafka not up yet)
	// is retried at the first batch.
	if err := s.claim(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("sequencer: producer id not claimed yet; the first batch claims it", "err", err)
	}
	adminCl, err := kgo.NewClient(s.conn...)
	if err != nil {
		return fmt.Errorf("sequencer admin client: %w", err)
	}
	defer adminCl.Close()
	wctx, stopWatch := context.WithCancel(ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		w := newHangingWatch(kadm.NewClient(adminCl), s.conn, s.ends, s.log)
		w.count = s.hanging
		w.run(wctx)
	}()
	defer func() { stopWatch(); <-watching }()
	loop := consumer.Loop{Name: SequencerGroup, Source: s, MaxRecords: 2000, Log: s.log, Lag: s.lag, Live: s.live, Gather: s.gather,
		Handle: func(ctx context.Context, fetches kgo.Fetches) (bool, error) {
			err := s.batch(ctx, fetches)
			if err != nil && ctx.Err() == nil && errors.Is(err, errTxn) {
				s.log.Warn("sequencer: transaction failed; starting a new Kafka session", "err", err)
				err = s.renew()
			}
			return true, err
		},
	}
	return loop.Run(ctx)
}

// PollRecords and AllowRebalance make the current Kafka session, which
// renew replaces, the loop's source.
//
// A lost group session is renewed before the next poll. A broker restart
// in the middle of a transaction can leave that transaction's group
// offsets pending (measured: over a minute, with no timeout abort logged),
// and every member's offset read for those partitions then answers
// UNSTABLE_OFFSET_COMMIT. In TestSequencerAcrossKafkaRestarts they cleared
// as soon as the transactional id initialized its producer again, which a
// new session does (claim); the old client would carry on with its old
// producer id. (When the broker skipped the transaction's markers
// altogether, not even that clears them: docs/GUARANTEES.md, guarantee 1.)
func (s *Sequencer) PollRecords(ctx context.Context, n int) kgo.Fetches {
	if s.lost.Load() && ctx.Err() == nil {
		s.log.Warn("sequencer: group session lost; starting a new Kafka session")
		if err := s.renew(); err != nil {
			return kgo.NewErrFetch(err)
		}
	}
	return s.sess.PollRecords(ctx, n)
}

// AllowRebalance: see PollRecords.
func (s *Sequencer) AllowRebalance() { s.sess.AllowRebalance() }

// batch decides the commands of one poll and commits what they yield, with
// their offsets, in one transaction.
func (s *Sequencer) batch(ctx context.Context, fetches kgo.Fetches) (err error) {
	if fetches.NumRecords() == 0 {
		return nil
	}
	committed := false
	ctx, span := s.startBatch(ctx, fetches)
	defer func() { s.endBatch(span, committed, err) }()
	// Run claimed the producer id already, unless that failed.
	if err := s.claim(ctx); err != nil {
		return fmt.Errorf("%w: claim producer id: %w", errTxn, err)
	}
	// Aggregates are loaded before the transaction begins, so their
	// loading never waits on this sequencer's own open transaction.
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if err == nil && len(fp.Records) > 0 {
			_, err = s.partition(ctx, fp.Partition)
		}
	})
	if err != nil {
		// Typically the broker just restarted (LEADER_NOT_AVAILABLE). The
		// batch is polled already, so only a new session, reading from the
		// committed offsets, polls it again.
		return fmt.Errorf("%w: %w", errTxn, err)
	}
	if err := s.sess.Begin(); err != nil {
		return fmt.Errorf("%w: begin: %w", errTxn, err)
	}
	s.accepted = s.accepted[:0]
	clear(s.answers)
	s.answers = s.answers[:0]
	out, rejected, ok := s.decideAll(ctx, fetches)
	end := kgo.TryCommit
	var txn producerEpoch
	named := false
	wrote := kadm.TopicsSet{}
	var settleErr error
	if !ok {
		// A partition was lost while its commands were in hand: what was
		// decided for it cannot be trusted, and committing its offsets
		// without its events would lose them.
		end = kgo.TryAbort
	} else if settleErr = s.settle(ctx, out); settleErr != nil {
		// Nothing goes where an earlier transaction's markers are not.
		end = kgo.TryAbort
	} else if len(out) > 0 {
		pctx, cancel := context.WithTimeout(ctx, transactionTimeout)
		results := s.sess.ProduceSync(pctx, out...)
		cancel()
		err := results.FirstErr()
		// The producer id and epoch the records carry name this
		// transaction, to remember how it ended: the broker may lose its
		// markers (hanging.go).
		for _, r := range results {
			if r.Err == nil {
				txn, named = producerEpoch{r.Record.ProducerID, r.Record.ProducerEpoch}, true
				wrote.Add(r.Record.Topic, r.Record.Partition)
			}
		}
		if err != nil {
			// The transaction cannot commit now; End aborts it and rewinds
			// the consumer to the last committed offsets.
			s.log.WarnContext(ctx, "sequencer: produce failed; the batch is aborted and decided again", "records", len(out), "err", err)
			end = kgo.TryAbort
		}
	}
	if s.beforeEnd != nil {
		s.beforeEnd()
	}
	// A bounded End that fails leaves the client in a state franz-go does
	// not promise to recover from: errTxn makes Run replace the session.
	ectx, cancel := context.WithTimeout(ctx, transactionTimeout)
	committed, err = s.sess.End(ectx, end)
	cancel()
	if named {
		how := endUnknown
		switch {
		case end == kgo.TryAbort || (err == nil && !committed):
			how = endAbort
		case err == nil:
			how = endCommit
		}
		s.ends.add(txn, how, time.Now())
	}
	if err != nil {
		return fmt.Errorf("%w: end: %w", errTxn, err)
	}
	if settleErr != nil {
		return fmt.Errorf("%w: %w", errTxn, settleErr)
	}
	if !committed {
		// Aborted: typically this node was expelled from the group, or a
		// produce failed. The aggregates hold decisions nobody will see, so
		// forget them all; a partition this node keeps or gets back is
		// rebuilt from the committed log before its next command.
		s.log.WarnContext(ctx, "sequencer: transaction aborted; its commands will be decided again", "commands", fetches.NumRecords())
		s.mu.Lock()
		clear(s.parts)
		s.mu.Unlock()
		return nil
	}
	if named {
		s.unsettled = append(s.unsettled, &settling{txn: txn, parts: wrote, at: time.Now()})
	}
	// Only now, committed, are the outcomes answers: an aborted batch is
	// decided again.
	if len(s.answers) > 0 {
		s.answer(s.answers)
	}
	for _, r := range rejected {
		s.deadLetters.WithLabelValues(records.ReasonOf(r.Err)).Inc()
	}
	if s.sequenced != nil {
		now := time.Now()
		for _, t := range s.accepted {
			metrics.ObserveStage(s.sequenced, t, now)
		}
		s.perTxn.Observe(float64(fetches.NumRecords()))
	}
	return nil
}

// decideAll decides every command of fetches against its partition's
// aggregates and returns the records to produce: events, outcomes, and the
// dead letters of the commands it set aside. It reports false if a
// partition's aggregates are gone (the partition was lost meanwhile).
func (s *Sequencer) decideAll(ctx context.Context, fetches kgo.Fetches) ([]*kgo.Record, []records.Rejected, bool) {
	var out []*kgo.Record
	var rejected []records.Rejected
	now := time.Now()
	ok := true
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		s.mu.Lock()
		convs, have := s.parts[fp.Partition]
		s.mu.Unlock()
		if !have {
			ok = false
			return
		}
		for _, r := range fp.Records {
			dctx, span := s.startDecide(ctx, r)
			cmd := &logv1.Command{}
			if uerr := proto.Unmarshal(r.Value, cmd); uerr != nil || cmd.GetConversationId() == "" {
				// Only ingest writes this topic, so this is a bug or a foreign
				// writer: set aside for people to look at, never silently
				// skipped, and a Submit waiting for it is told at once
				// rather than timing out.
				if uerr == nil {
					uerr = &records.BadRecord{Reason: records.ReasonInvalid, Err: errors.New("command without conversation id")}
				} else {
					uerr = &records.BadRecord{Reason: records.ReasonUndecodable, Err: uerr}
				}
				rejected = append(rejected, records.Rejected{Record: r, Err: uerr})
				s.log.ErrorContext(dctx, "command set aside", "to", topics.DeadLetter, "partition", r.Partition, "offset", r.Offset, "err", uerr)
				out = append(out, records.DeadLetterRecord(r, SequencerGroup, uerr))
				outcome := &logv1.Outcome{CommandId: cmd.GetCommandId(), ClientMsgId: cmd.GetClientMsgId(),
					ErrorCode: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, ErrorMessage: "command is missing its conversation id"}
				if outcome.CommandId != "" {
					out = s.reply(dctx, out, r, cmd, outcome)
				}
				s.decided(dctx, span, cmd, outcome)
				continue
			}
			d := decideCommand(convs, cmd, s.maxMembers, now)
			for _, rec := range d.recs {
				out = append(out, s.record(dctx, topics.Events, r, rec))
				if s.sequenced != nil && rec.GetEvent() != nil {
					s.accepted = append(s.accepted, cmd.GetSubmitTime().AsTime())
				}
			}
			for _, next := range d.derived {
				out = append(out, s.handOn(dctx, next))
			}
			outcome := d.out
			out = s.reply(dctx, out, r, cmd, outcome)
			s.decided(dctx, span, cmd, outcome)
		}
	})
	return out, rejected, ok
}

// reply answers cmd with outcome: kept for this process's Submit (see
// self) or appended to out as an outcome record for another's.
func (s *Sequencer) reply(ctx context.Context, out []*kgo.Record, r *kgo.Record, cmd *logv1.Command, outcome *logv1.Outcome) []*kgo.Record {
	if s.answer != nil && s.self != "" && cmd.GetReplyTo() == s.self {
		s.answers = append(s.answers, outcome)
		return out
	}
	return append(out, s.record(ctx, topics.Outcomes, r, outcome))
}

// record addresses m to topic at the command's partition, carrying the
// span context of ctx (the command's decision).
func (s *Sequencer) record(ctx context.Context, topic string, cmd *kgo.Record, m proto.Message) *kgo.Record {
	v, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err)) // only fails on invalid UTF-8 we validated away
	}
	r := &kgo.Record{Topic: topic, Partition: cmd.Partition, Key: cmd.Key, Value: v}
	if s.traced {
		tracing.Inject(ctx, r)
	}
	return r
}

// handOn addresses a command a decision hands on to the commands topic,
// keyed by its conversation and placed by the key as ingest's producer
// places it (see commandPartitions), carrying ctx's span context.
func (s *Sequencer) handOn(ctx context.Context, cmd *logv1.Command) *kgo.Record {
	v, err := proto.Marshal(cmd)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", cmd, err)) // only fails on invalid UTF-8 we validated away
	}
	r := &kgo.Record{Topic: topics.Commands, Key: []byte(cmd.GetConversationId()), Value: v}
	if s.traced {
		tracing.Inject(ctx, r)
	}
	return r
}

// commandPartitions places the sequencer's records: those it hands on to
// the commands topic by their key, as ingest's producer does (murmur2,
// Kafka's own), so a conversation's commands all reach one partition;
// everything else at the partition the record names, its command's.
func commandPartitions() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
		if topic == topics.Commands {
			byKey := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
			return byKey.Partition
		}
		return func(r *kgo.Record, _ int) int { return int(r.Partition) }
	})
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
	s.loading.Add(1)
	// Loading waits until no transaction is open on the partition, which
	// the broker ends within the transaction timeout plus its abort check
	// (20 s by default). A wait past that is a transaction the broker will
	// not end (a hanging one): say so, since every command of the
	// partition waits on it.
	waiting := time.AfterFunc(hangingAfter, func() {
		s.log.Error("sequencer: partition still loading: an open transaction on the event partition blocks it; if it lasts, see docs/OPERATIONS.md (ParleyHangingTransaction)",
			"partition", p, "waited", time.Since(start).Round(time.Second))
	})
	convs, n, err := loadPartition(ctx, s.conn, p)
	waiting.Stop()
	s.loading.Add(-1)
	if err != nil {
		return nil, err
	}
	s.log.Info("sequencer: partition loaded", "partition", p, "events", n, "conversations", len(convs), "took", time.Since(start))
	s.mu.Lock()
	s.parts[p] = convs
	s.mu.Unlock()
	return convs, nil
}

// loadPartition reads the committed events of partition p, from its start
// to its end once no transaction is open on it (the previous owner's, which
// must commit, abort or time out before the aggregates can be trusted).
func loadPartition(ctx context.Context, conn []kgo.Opt, p int32) (map[string]*conversation, int, error) {
	adminCl, err := kgo.NewClient(conn...)
	if err != nil {
		return nil, 0, fmt.Errorf("load partition %d: %w", p, err)
	}
	ends, err := logread.SettledEnds(ctx, kadm.NewClient(adminCl), topics.Events, p)
	adminCl.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("load partition %d: %w", p, err)
	}
	convs, n := map[string]*conversation{}, 0
	_, err = logread.ReadToEnd(ctx, conn, topics.Events, ends, func(recs []*kgo.Record) error {
		for _, r := range recs {
			rec := &logv1.EventRecord{}
			if err := proto.Unmarshal(r.Value, rec); err != nil {
				return fmt.Errorf("decode event at offset %d: %w", r.Offset, err)
			}
			replay(convs, rec)
			n++
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("load partition %d: %w", p, err)
	}
	return convs, n, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/server/auth"
	"google.golang.org/grpc"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// chaosSecret signs the run's tokens; the edges it starts trust it.
const chaosSecret = "parley-chaos-secret-0123456789"

// instances of every service; presence's must divide the partitions.
const instances = 2

// runner is one chaos run.
type runner struct {
	o       *options
	log     *slog.Logger
	began   time.Time
	stack   stackControl
	cl      *cluster.Cluster
	keepers map[string][]*keeper
	faults  *faultLog
	w       *workload
	logDir  string
	// loadStart and loadFaultsOver are the machine's load averages.
	loadStart, loadFaultsOver string
}

func run(ctx context.Context, o *options, log *slog.Logger) (*report, error) {
	if os.Getenv("PARLEY_STACK_CONTROL") != "1" {
		return nil, errors.New("the run stops and starts the shared Kafka and Cassandra: run it alone on the stack with PARLEY_STACK_CONTROL=1 (make chaos does)")
	}
	r := &runner{o: o, log: log, began: time.Now(), stack: stackControl{script: o.stackScript, log: log}, keepers: map[string][]*keeper{},
		loadStart: stats.Loadavg()}
	if err := r.waitForeign(ctx); err != nil {
		return nil, err
	}
	// The stack is the run's to stop and start; whatever happens, it is
	// left running.
	if err := r.stack.run(ctx, "up"); err != nil {
		return nil, err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := r.stack.run(uctx, "up"); err != nil {
			log.Error("could not bring the stack back up", "err", err)
		}
	}()
	log.Info("building the services")
	binDir, err := cluster.Build(ctx, false)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir)
	if r.logDir, err = os.MkdirTemp("", "parley-chaos-logs-"); err != nil {
		return nil, err
	}
	runID := strconv.FormatInt(time.Now().Unix(), 36)
	log.Info("starting the cluster", "instances", instances, "keyspace", o.keyspace, "logs", r.logDir)
	kafkaSec, tlsSrc, err := cluster.SecurityFromEnv()
	if err != nil {
		return nil, err
	}
	r.cl, err = cluster.Start(ctx, cluster.Config{
		Kafka: kafkaSec, TLS: tlsSrc,
		Brokers: strings.Split(o.brokers, ","), Cassandra: o.cassandra, Keyspace: o.keyspace,
		BinDir: binDir, LogDir: r.logDir, Name: "chaos", NodePrefix: "chaos" + runID,
		Instances: instances, Edges: instances, JWTSecret: chaosSecret, Env: []string{"PARLEY_LOG_LEVEL=info"},
	})
	if err != nil {
		return nil, err
	}
	rep, err := r.drive(ctx, runID)
	if rep != nil && rep.Logs == "" {
		os.RemoveAll(r.logDir)
	} else {
		log.Info("the services' logs are kept", "dir", r.logDir)
	}
	return rep, err
}

// drive runs the workload and the faults on the started cluster, then
// checks and reports. It stops the cluster before it returns.
func (r *runner) drive(ctx context.Context, runID string) (*report, error) {
	o, log := r.o, r.log
	r.faults = &faultLog{}
	kctx, stopKeepers := context.WithCancel(ctx)
	var keepers sync.WaitGroup
	for _, p := range r.cl.Procs {
		k := &keeper{p: p, log: log, faults: r.faults, up: true}
		r.keepers[p.Role] = append(r.keepers[p.Role], k)
		keepers.Go(func() { k.run(kctx) })
	}
	lctx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	minter, err := auth.NewHS256([]byte(chaosSecret))
	if err != nil {
		stopKeepers()
		r.cl.Stop()
		stopLoops()
		return nil, err
	}
	var edges []string
	for _, e := range r.cl.Edges {
		edges = append(edges, e.HTTPAddr)
	}
	r.w = newWorkload(o, runID, edges, minter)
	r.w.edgeUp = func(i int) bool { return r.keepers["edge"][i].isUp() }
	shutdown := sync.OnceFunc(func() {
		// Keepers first, so the stops are not taken for crashes.
		stopKeepers()
		keepers.Wait()
		r.w.close()
		stopLoops()
		r.w.bg.Wait()
		r.cl.Stop()
	})
	defer shutdown()

	log.Info("connecting devices and creating conversations", "devices", len(r.w.devices), "conversations", len(r.w.convs))
	if err := r.w.connect(ctx, lctx); err != nil {
		return nil, err
	}
	if err := r.w.createConversations(ctx); err != nil {
		return nil, err
	}
	if err := r.w.waitCreated(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	// Senders stop trying at the convergence deadline at the latest.
	sctx, stopSenders := context.WithCancel(lctx)
	defer stopSenders()
	r.w.startSenders(sctx, o.seed)
	progressDone := r.progress(lctx)
	log.Info("warming up", "for", o.warmup)
	sleepCtx(ctx, o.warmup)

	inj := &injector{o: o, log: log, faults: r.faults, keepers: r.keepers, w: r.w, stack: r.stack,
		kafkaAddr: strings.Split(o.brokers, ",")[0], cassandraAddr: strings.Split(o.cassandra, ",")[0]}
	r.faults.start = time.Now()
	log.Info("injecting faults", "for", o.duration, "kill_every", o.killEvery, "seed", o.seed)
	inj.run(ctx, o.seed)
	faultsEnded := time.Now()
	r.loadFaultsOver = stats.Loadavg()
	log.Info("faults over; waiting for every service and the stack")
	allUp := waitUntil(ctx, 3*time.Minute, func() bool {
		for _, ks := range r.keepers {
			for _, k := range ks {
				if !k.isUp() {
					return false
				}
			}
		}
		return true
	})
	stackErr := r.stack.run(context.WithoutCancel(ctx), "up")
	sleepCtx(ctx, o.settle)

	log.Info("stopping new sends; waiting for every send to be answered")
	close(r.w.stopNew)
	answered := make(chan struct{})
	go func() { r.w.sending.Wait(); close(answered) }()
	select {
	case <-answered:
	case <-time.After(o.converge):
		stopSenders()
		<-answered
	case <-ctx.Done():
		stopSenders()
		<-answered
	}
	lastAnswer := time.Now()
	conv := r.converge(ctx, lastAnswer, lastAnswer.Add(o.converge))
	close(progressDone)
	rep := r.report(conv, faultsEnded)
	if !allUp {
		rep.fail("a service did not get ready again within 3 minutes after the faults")
	}
	if stackErr != nil {
		rep.fail("stack.sh up after the faults: %s", firstLines(stackErr.Error(), 3))
	}
	if ctx.Err() != nil {
		rep.fail("interrupted")
	}
	shutdown()
	rep.finish(time.Since(r.began))
	if !rep.OK || o.keepLogs {
		rep.Logs = r.logDir
	}
	if err := rep.write(o.report); err != nil {
		return rep, err
	}
	log.Info("report written", "path", o.report)
	return rep, nil
}

// waitForeign waits until no Parley service of anyone else runs here:
// they would join the run's consumer groups.
func (r *runner) waitForeign(ctx context.Context) error {
	deadline := time.Now().Add(r.o.waitForeign)
	for {
		others := cluster.ForeignProcs(nil)
		if len(others) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("other Parley services are running (%s); they join the same consumer groups and would take partitions from the run's services", strings.Join(others, ", "))
		}
		r.log.Info("waiting for other Parley services to stop", "running", strings.Join(others, ", "))
		if !sleepCtx(ctx, 5*time.Second) {
			return ctx.Err()
		}
	}
}

// progress logs how the run goes every 10 s until done is closed.
func (r *runner) progress(ctx context.Context) chan struct{} {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			acked, pending := 0, 0
			for _, m := range r.w.ledger.messages() {
				if st := m.state(); st.acked {
					acked++
				} else if st.rejected == nil {
					pending++
				}
			}
			connected := 0
			for _, d := range r.w.devices {
				d.mu.Lock()
				if d.connected {
					connected++
				}
				d.mu.Unlock()
			}
			var down []string
			for _, ks := range r.keepers {
				for _, k := range ks {
					if !k.isUp() {
						down = append(down, k.p.Name)
					}
				}
			}
			r.log.Info("progress", "t", time.Since(r.began).Round(time.Second), "acked", acked, "unanswered", pending,
				"deliveries", r.w.tally.deliveries.Load(), "connected", fmt.Sprintf("%d/%d", connected, len(r.w.devices)),
				"faults", len(r.faults.snapshot()), "down", strings.Join(down, ","), "problems", r.w.tally.problemCountNow(),
				"load", stats.Loadavg())
		}
	}()
	return done
}

// convergence is the end of the run: history, then every device.
type convergence struct {
	Converged bool `json:"converged"`
	// HistoryS: from the last answered send until both persistence
	// instances served every conversation up to its last acknowledged
	// seq, the same events.
	HistoryS *float64 `json:"history_s"`
	// DevicesS: from the last answered send until every device held
	// exactly its conversations' histories.
	DevicesS  *float64 `json:"devices_s"`
	DeadlineS float64  `json:"deadline_s"`
	// DevicesNotConverged counts devices that did not; NotConverged says
	// what each lacked (the first of them).
	DevicesNotConverged int      `json:"devices_not_converged"`
	NotConverged        []string `json:"not_converged,omitempty"`
	HistoryProblems     []string `json:"history_problems,omitempty"`

	history  map[*conv][]*chatv1.Event
	findings map[*conv]historyFinding
}

// converge waits until deadline for persistence's history to reach every
// acknowledged seq and for every device to hold exactly that history.
func (r *runner) converge(ctx context.Context, since, deadline time.Time) *convergence {
	c := &convergence{DeadlineS: round1(deadline.Sub(since).Seconds()), history: map[*conv][]*chatv1.Event{}, findings: map[*conv]historyFinding{}}
	var sources []historySource
	for i, addr := range r.cl.PersistenceGRPC {
		conn, err := grpc.NewClient(addr, r.cl.DialOption())
		if err != nil {
			c.HistoryProblems = append(c.HistoryProblems, err.Error())
			return c
		}
		defer conn.Close()
		sources = append(sources, historySource{name: fmt.Sprintf("persistence%d", i), c: persistencev1.NewPersistenceServiceClient(conn)})
	}
	byConv := map[*conv][]*message{}
	heads := map[*conv]uint64{}
	for _, m := range r.w.ledger.messages() {
		byConv[m.conv] = append(byConv[m.conv], m)
		if st := m.state(); st.acked {
			heads[m.conv] = max(heads[m.conv], st.seq)
		}
	}
	r.log.Info("checking history", "conversations", len(r.w.convs), "deadline", deadline.Sub(since).Round(time.Second))
	pending := append([]*conv(nil), r.w.convs...)
	var lastErr map[*conv]string
	for len(pending) > 0 {
		lastErr = map[*conv]string{}
		var still []*conv
		for _, cv := range pending {
			reads := make([][]*chatv1.Event, len(sources))
			ok := true
			for i, s := range sources {
				evs, err := s.read(ctx, cv)
				reads[i] = evs
				switch {
				case err != nil:
					ok, lastErr[cv] = false, fmt.Sprintf("%s: %v", s.name, err)
				case len(evs) == 0 || evs[len(evs)-1].GetSeq() < max(heads[cv], 1):
					ok, lastErr[cv] = false, fmt.Sprintf("%s: history ends at seq %d, seq %d was acknowledged", s.name, lastSeq(evs), heads[cv])
				case i > 0 && !sameEvents(reads[0], evs):
					ok, lastErr[cv] = false, fmt.Sprintf("%s and %s serve different histories", sources[0].name, s.name)
				}
			}
			c.history[cv] = reads[0]
			if !ok {
				still = append(still, cv)
			}
		}
		pending = still
		if len(pending) == 0 || time.Now().After(deadline) || !sleepCtx(ctx, 500*time.Millisecond) {
			break
		}
	}
	if len(pending) == 0 {
		v := round1(time.Since(since).Seconds())
		c.HistoryS = &v
	}
	for _, cv := range pending {
		c.HistoryProblems = append(c.HistoryProblems, fmt.Sprintf("conversation %s (partition %d): %s", cv.id, cv.partition, lastErr[cv]))
	}
	for _, cv := range r.w.convs {
		c.findings[cv] = checkHistory(cv, c.history[cv], byConv[cv], r.w.ledger.get)
	}

	r.log.Info("waiting for every device to hold its conversations' history")
	for {
		n, notes := r.unconverged(c.history)
		c.DevicesNotConverged, c.NotConverged = n, notes
		if n == 0 {
			v := round1(time.Since(since).Seconds())
			c.DevicesS = &v
			break
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 500*time.Millisecond) {
			break
		}
	}
	c.Converged = c.DevicesS != nil && c.HistoryS != nil
	return c
}

func lastSeq(evs []*chatv1.Event) uint64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].GetSeq()
}

// unconverged counts the devices whose views differ from history and
// describes the first maxListed differences.
func (r *runner) unconverged(history map[*conv][]*chatv1.Event) (int, []string) {
	n := 0
	var notes []string
	for _, d := range r.w.devices {
		bad := false
		d.mu.Lock()
		for _, cv := range d.user.convs {
			f := compareView(d.views[cv.id], history[cv])
			if f.converged() {
				continue
			}
			bad = true
			if len(notes) < maxListed {
				notes = append(notes, fmt.Sprintf("%s: conversation %s (partition %d): missing %v, different %v, beyond history %v (client: %v)",
					d.name, cv.id, cv.partition, f.missing, f.wrong, f.beyond, d.ended))
			}
		}
		d.mu.Unlock()
		if bad {
			n++
		}
	}
	return n, notes
}

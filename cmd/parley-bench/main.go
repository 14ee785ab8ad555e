// Command parley-bench is Parley's load generator (`make bench`). It starts
// every service as its own process on the local real stack (or `parley
// run` with -embedded), drives SDK clients through direct and group
// conversations at a fixed rate, and measures, in one run: end-to-end
// delivery latency and throughput with lost and duplicate deliveries; a
// raw franz-go baseline through the same broker; the highest rate that
// keeps p99 under 100 ms; the edge's memory per idle connection; and
// history page latency under load. It writes bench/results/latest.json,
// latest.png and a table. Every loop is bounded and every address is on
// loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/consumer"
)

// idleWindow is how long the stack's CPU at rest is measured.
const idleWindow = 5 * time.Second

type options struct {
	embedded       bool
	duration       time.Duration
	rate           float64
	users          int
	devices        int
	groupSize      int
	directShare    float64
	edges          int
	payload        int
	grace          time.Duration
	warmup         time.Duration
	jitQuiet       float64
	warmupMax      time.Duration
	baselineDur    time.Duration
	kneeStep       time.Duration
	kneeGrace      time.Duration
	kneeSteps      int
	kneeRuns       int
	kneeMax        float64
	kneeP99        float64
	batchWindow    time.Duration
	bigRoom        bigRoomOptions
	conns          int
	historyRate    float64
	recoveryRounds int
	recoveryRoles  []string
	storm          stormOptions
	only           string
	out            string
	profile        string
	skip           string
	brokers        string
	cassandra      string
	keyspace       string
	force          bool
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("parley-bench", flag.ContinueOnError)
	fs.BoolVar(&o.embedded, "embedded", env("BENCH_EMBEDDED", "") == "1", "measure `parley run` (kfake + Pebble in one process) instead of the real stack (BENCH_EMBEDDED=1)")
	durS := fs.String("duration", env("BENCH_DURATION", "60s"), "length of the fixed-rate run (BENCH_DURATION); the other phases scale with it")
	rateS := fs.String("rate", env("BENCH_RATE", "100"), "messages per second of the fixed-rate run (BENCH_RATE)")
	fs.IntVar(&o.users, "users", 100, "users")
	fs.IntVar(&o.devices, "devices", 2, "connections (devices) per user, spread over the edges")
	fs.IntVar(&o.groupSize, "group-size", 8, "members per group conversation")
	fs.Float64Var(&o.directShare, "direct-share", 0.5, "share of messages sent to 1:1 conversations; the rest go to groups")
	fs.IntVar(&o.edges, "edges", 2, "edge processes (real stack only)")
	fs.IntVar(&o.payload, "payload", 128, "message text bytes (and baseline record bytes)")
	fs.DurationVar(&o.grace, "grace", 10*time.Second, "wait after the last send for deliveries still due; later ones count as lost")
	fs.Float64Var(&o.jitQuiet, "warmup-jit", 0.05, "on the stack, the warm-up goes on (10 s at a time) until the JVMs' JIT compilers use at most this share of a core; 0 turns it off")
	fs.DurationVar(&o.warmupMax, "warmup-max", 3*time.Minute, "the longest the warm-up goes on waiting for the JIT compilers")
	fs.DurationVar(&o.warmup, "warmup", 0, "unmeasured load at -rate before the measured run, so the JVMs' JIT and every pool are warm (default: -duration/6, 5-10s)")
	fs.DurationVar(&o.baselineDur, "baseline-duration", 0, "length of the raw Kafka baseline (default: half of -duration, 10-30s)")
	fs.DurationVar(&o.kneeStep, "knee-step", 0, "length of each knee step (default: -duration/6, 4-10s)")
	fs.DurationVar(&o.kneeGrace, "knee-grace", 5*time.Second, "deliveries still due after a knee step's last send may take this long")
	fs.IntVar(&o.kneeSteps, "knee-steps", 0, "knee steps at most (default 8, 6 when -duration < 60s)")
	fs.IntVar(&o.kneeRuns, "knee-runs", 0, "knee searches; the knee is their median (default 3, 1 when -duration < 60s)")
	fs.Float64Var(&o.kneeMax, "knee-max", 50_000, "highest rate the knee finder tries")
	fs.Float64Var(&o.kneeP99, "knee-p99", 100, "p99 latency (ms) a rate must keep to hold")
	fs.IntVar(&o.bigRoom.Members, "big-room-members", 1000, "members (one device each) of the big-room phase's one group; 0 leaves the phase out")
	fs.Float64Var(&o.bigRoom.Rate, "big-room-rate", 10, "messages per second posted to the big room")
	windowS := fs.String("batch-window", env("PARLEY_BATCH_WINDOW", consumer.DefaultBatchWindow.String()), "the sequencer's batch window, which the skeleton pipeline's relay uses too; the services read PARLEY_BATCH_WINDOW themselves")
	connsS := fs.String("conns", env("BENCH_CONNS", "50000"), "idle connections for the memory figure (BENCH_CONNS); capped by the file limit")
	fs.Float64Var(&o.historyRate, "history-rate", 20, "history page reads per second during the fixed-rate run")
	fs.StringVar(&o.out, "out", env("BENCH_OUT", "bench/results"), "folder for latest.json, latest.png and profiles (BENCH_OUT)")
	fs.StringVar(&o.profile, "profile", env("BENCH_PROFILE", ""), "take CPU profiles during the fixed-rate run: comma-separated roles (edge, ingest, fanout, persistence, presence, storm) or all (BENCH_PROFILE)")
	fs.StringVar(&o.skip, "skip", env("BENCH_SKIP", ""), "phases to leave out: comma-separated baseline, knee, skeleton, bigroom, memory, history, recovery, storm (BENCH_SKIP)")
	rolesS := fs.String("recovery-roles", env("BENCH_RECOVERY_ROLES", strings.Join(cluster.Roles, ",")), "service kinds the recovery phase kills and restarts, in order (BENCH_RECOVERY_ROLES)")
	roundsS := fs.String("recovery-rounds", env("BENCH_RECOVERY_ROUNDS", "10"), "kill -9 and restart rounds per service kind in the recovery phase (BENCH_RECOVERY_ROUNDS)")
	stormS := fs.String("storm-devices", env("BENCH_STORM_DEVICES", "10000"), "devices that reconnect at once in the storm phase, against a `parley run` of its own (BENCH_STORM_DEVICES); capped by the file limit")
	fs.IntVar(&o.storm.Convs, "storm-convs", 3, "group conversations per storm device")
	fs.IntVar(&o.storm.Group, "storm-group", 10, "storm devices per conversation (a feeder posts to each too)")
	fs.IntVar(&o.storm.Missed, "storm-missed", 5, "messages each storm conversation gets while its devices are away")
	fs.IntVar(&o.storm.Chatters, "storm-chatters", 200, "devices chatting in pairs through the storm")
	fs.Float64Var(&o.storm.ChatRate, "storm-chat-rate", 100, "messages per second the chatters send in all")
	fs.IntVar(&o.storm.Dialers, "storm-dialers", 1000, "storm connections being opened at once")
	fs.BoolVar(&o.storm.NoResume, "storm-no-resume", false, "storm devices dial without resume cursors: the connect cost alone")
	fs.IntVar(&o.storm.ClientNice, "storm-client-nice", 19, "niceness of this process (the storm's devices) during the storm, so the load generator takes only what the server and the chatters leave of the shared cores; 0 leaves it")
	fs.StringVar(&o.only, "only", env("BENCH_ONLY", ""), "run one phase alone: storm (BENCH_ONLY)")
	fs.StringVar(&o.brokers, "brokers", env("PARLEY_KAFKA_BROKERS", "127.0.0.1:19092"), "Kafka of the local stack (PARLEY_KAFKA_BROKERS)")
	fs.StringVar(&o.cassandra, "cassandra", env("PARLEY_CASSANDRA_HOSTS", "127.0.0.1:19042"), "Cassandra of the local stack (PARLEY_CASSANDRA_HOSTS)")
	fs.StringVar(&o.keyspace, "keyspace", "parley_bench", "Cassandra keyspace the benchmark's persistence writes")
	fs.BoolVar(&o.force, "force", false, "run although other Parley services (which share the consumer groups) are running")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if o.duration, err = time.ParseDuration(*durS); err != nil || o.duration < 5*time.Second {
		return nil, fmt.Errorf("duration %q: want a Go duration of at least 5s", *durS)
	}
	if o.rate, err = strconv.ParseFloat(*rateS, 64); err != nil || o.rate <= 0 {
		return nil, fmt.Errorf("rate %q: want a positive number", *rateS)
	}
	if o.batchWindow, err = time.ParseDuration(*windowS); err != nil {
		return nil, fmt.Errorf("batch window %q: want a Go duration", *windowS)
	}
	if o.conns, err = strconv.Atoi(*connsS); err != nil || o.conns < 0 {
		return nil, fmt.Errorf("conns %q: want a count", *connsS)
	}
	if o.storm.Devices, err = strconv.Atoi(*stormS); err != nil || o.storm.Devices < 0 {
		return nil, fmt.Errorf("storm-devices %q: want a count", *stormS)
	}
	if o.only != "" && o.only != "storm" {
		return nil, fmt.Errorf("only %q: the one phase that runs alone is storm", o.only)
	}
	if o.storm.Group < 2 || o.storm.Convs < 1 || o.storm.Missed < 0 || o.storm.Dialers < 1 || o.storm.ChatRate <= 0 {
		return nil, fmt.Errorf("storm: need -storm-group ≥ 2, -storm-convs ≥ 1, -storm-dialers ≥ 1, a positive -storm-chat-rate")
	}
	for _, r := range strings.Split(*rolesS, ",") {
		if r = strings.TrimSpace(r); !slices.Contains(cluster.Roles, r) {
			return nil, fmt.Errorf("recovery-roles: %q is not one of %s", r, strings.Join(cluster.Roles, ", "))
		}
		o.recoveryRoles = append(o.recoveryRoles, r)
	}
	if o.recoveryRounds, err = strconv.Atoi(*roundsS); err != nil || o.recoveryRounds < 1 {
		return nil, fmt.Errorf("recovery-rounds %q: want a positive count", *roundsS)
	}
	if o.users < 2 || o.devices < 1 || o.edges < 1 {
		return nil, fmt.Errorf("need at least 2 users, 1 device each and 1 edge")
	}
	clamp := func(d, lo, hi time.Duration) time.Duration { return max(lo, min(hi, d)) }
	if o.baselineDur == 0 {
		o.baselineDur = clamp(o.duration/2, 10*time.Second, 30*time.Second)
	}
	if o.warmup == 0 {
		o.warmup = clamp(o.duration/6, 5*time.Second, 10*time.Second)
	}
	if o.kneeStep == 0 {
		o.kneeStep = clamp(o.duration/6, 4*time.Second, 10*time.Second)
	}
	if o.kneeRuns <= 0 {
		o.kneeRuns = 3
		if o.duration < time.Minute {
			o.kneeRuns = 1
		}
	}
	if o.kneeSteps == 0 {
		o.kneeSteps = 8
		if o.duration < time.Minute {
			o.kneeSteps = 6
		}
	}
	if o.embedded {
		o.edges = 1
	}
	return o, nil
}

// stormProfile is where the storm's server CPU profile goes, if -profile
// names storm (or all).
func (o *options) stormProfile() string {
	roles := strings.Split(o.profile, ",")
	if !slices.Contains(roles, "storm") && !slices.Contains(roles, "all") {
		return ""
	}
	return filepath.Join(o.out, "cpu-storm.prof")
}

func (o *options) skips(phase string) bool { return slices.Contains(strings.Split(o.skip, ","), phase) }

func (o *options) asMap() map[string]any {
	return map[string]any{
		"duration_s": o.duration.Seconds(), "rate_msgs_per_s": o.rate, "users": o.users, "devices_per_user": o.devices,
		"connections": o.users * o.devices, "group_size": o.groupSize, "direct_share": o.directShare, "edges": o.edges,
		"payload_bytes": o.payload, "grace_s": o.grace.Seconds(), "warmup_s": o.warmup.Seconds(), "warmup_jit": o.jitQuiet, "warmup_max_s": o.warmupMax.Seconds(), "baseline_duration_s": o.baselineDur.Seconds(),
		"knee_step_s": o.kneeStep.Seconds(), "knee_steps_max": o.kneeSteps, "knee_p99_ms": o.kneeP99,
		"memory_connections_requested": o.conns, "history_reads_per_s": o.historyRate, "skip": o.skip,
		"recovery_rounds": o.recoveryRounds, "storm": o.storm, "only": o.only,
	}
}

func main() {
	if os.Getenv(chatChildEnv) != "" {
		if err := chatChild(); err != nil {
			fmt.Fprintln(os.Stderr, "parley-bench:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "parley-bench:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	began := time.Now()
	rep := &report{StartedAt: began.UTC().Format(time.RFC3339), Mode: "stack", Machine: machineInfo(), Config: o.asMap()}
	if o.embedded {
		rep.Mode = "embedded"
	}
	limit, err := raiseFileLimit()
	if err != nil {
		return err
	}
	rep.Machine.FileLimit = limit
	rep.Machine.BusyBeforePct = busyPct(2 * time.Second)
	progress := newProgressLine()
	defer progress.close()
	phase := func(name string) {
		rep.Machine.LoadPhases = append(rep.Machine.LoadPhases, fmt.Sprintf("%s: %s", name, stats.Loadavg()))
		progress.logf("== %s (load average %s)", name, stats.Loadavg())
	}

	phase("build")
	binDir, err := cluster.Build(ctx, o.embedded)
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	logDir, err := os.MkdirTemp("", "parley-bench-logs-")
	if err != nil {
		return err
	}
	if o.only == "storm" {
		return runOnlyStorm(ctx, o, rep, binDir, logDir, limit, began, phase, progress)
	}
	phase("start " + rep.Mode)
	var c *cluster.Cluster
	if o.embedded {
		dataDir, err := os.MkdirTemp("", "parley-bench-data-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dataDir)
		c, err = cluster.StartEmbedded(ctx, binDir, logDir, dataDir, benchSecret, procEnv)
		if err != nil {
			return err
		}
	} else {
		if others := cluster.ForeignProcs(nil); len(others) > 0 {
			msg := fmt.Sprintf("other Parley services are running (%s); they join the same consumer groups and would take partitions from the benchmark's services", strings.Join(others, ", "))
			if !o.force {
				return fmt.Errorf("%s: stop them or pass -force", msg)
			}
			rep.Notes = append(rep.Notes, msg+" (-force)")
		}
		c, err = startStack(ctx, o, binDir, logDir)
		if err != nil {
			return err
		}
	}
	stopped := false
	stopCluster := func() {
		if !stopped {
			stopped = true
			progress.logf("== stopping the services (logs in %s)", logDir)
			c.Stop()
		}
	}
	defer stopCluster()
	minter, err := auth.NewHS256([]byte(benchSecret))
	if err != nil {
		return err
	}
	runID := strconv.FormatInt(time.Now().Unix(), 36)

	phase("setup")
	progress.set(func() string {
		return fmt.Sprintf("setup: connecting %d devices and creating conversations", o.users*o.devices)
	})
	w, err := setupWorkload(ctx, o, c, minter, runID)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	closeWorkload := sync.OnceFunc(w.close)
	defer closeWorkload()
	var hr *historyReader
	closeHistory := func() {}
	if !o.skips("history") {
		progress.set(func() string {
			return fmt.Sprintf("setup: seeding a %d-message conversation for history reads", historySeed)
		})
		persistenceAddr := "" // none embedded: history is read over the WebSocket only
		if len(c.PersistenceGRPC) > 0 {
			persistenceAddr = c.PersistenceGRPC[0]
		}
		if hr, err = newHistoryReader(ctx, c.WSURL(0), persistenceAddr, c.DialOption(), minter, runID); err != nil {
			return err
		}
		closeHistory = sync.OnceFunc(hr.close)
		defer closeHistory()
	}

	phase("warm-up")
	rep.WarmUp = warmUp(ctx, w, o, jvmPIDs(c, o), rep, progress)

	// The stack at rest, after what the warm-up left queued has drained.
	phase("idle")
	time.Sleep(2 * time.Second)
	idle := newCPUMeter(c, o)
	time.Sleep(idleWindow)
	rep.IdleCPU = idle.report()

	// The fixed-rate run, with history reads and the CPU accounting (and
	// profiles, if asked) alongside.
	phase("e2e")
	cpu := newCPUMeter(c, o)
	counters0, countersErr := scrapeCounters(ctx, c.Procs)
	profDone := startProfiles(ctx, c, o, "", o.duration, progress)
	var hist historyResult
	hctx, stopHistory := context.WithCancel(ctx)
	histDone := make(chan struct{})
	go func() {
		defer close(histDone)
		if hr != nil {
			hist = hr.run(hctx, o.historyRate)
		}
	}()
	fixed := newLoadRun("e2e", o.rate, o.duration)
	progress.set(fixed.progress)
	w.runLoad(ctx, fixed, o.grace, o.directShare)
	stopHistory()
	<-histDone
	rep.CPU = cpu.report()
	e2e := fixed.result(w.disconnects.Swap(0))
	if per := newStepCPU(rep.CPU, e2e); per != nil {
		rep.CPU.USPerMessage, rep.CPU.USPerDelivery = per.USPerMessage, per.USPerDelivery
		rep.CPU.StackUSPerMsg, rep.CPU.StackUSPerDeliv = per.StackUSPerMsg, per.StackUSPerDeliv
	}
	rep.E2E = &e2e
	if counters1, err := scrapeCounters(ctx, c.Procs); err == nil && countersErr == nil {
		rep.Kafka = kafkaBetween(counters0.kafka, counters1.kafka, e2e.Accepted)
		rep.Cassandra = cassandraBetween(counters0.cql, counters1.cql, e2e.Accepted)
		rep.Batches = batchMeans(counters0.batches, counters1.batches)
	} else {
		rep.Notes = append(rep.Notes, fmt.Sprintf("Kafka and Cassandra requests not counted: %v", errors.Join(countersErr, err)))
	}
	if hr != nil {
		rep.History = &hist
	}
	rep.Profile = <-profDone
	if ctx.Err() != nil {
		return ctx.Err()
	}

	if !o.skips("baseline") {
		phase("baseline")
		b, err := runBaseline(ctx, c.KafkaOpts(), o.rate, o.baselineDur, o.grace, o.payload, progress)
		if err != nil {
			return err
		}
		rep.Baseline = &b
		rep.Ratio = &ratios{
			Throughput: ratio(e2e.Throughput, b.Throughput),
			LatencyP50: ratio(e2e.Latency.P50, b.Latency.P50),
			LatencyP99: ratio(e2e.Latency.P99, b.Latency.P99),
		}
	}
	if !o.skips("knee") && ctx.Err() == nil {
		phase("knee")
		// Single knee searches swing from run to run on this machine, so
		// the knee is the median of several, with their spread.
		for run := range o.kneeRuns {
			first := &e2e
			if run > 0 {
				first = nil // measure the main run's rate again too
			}
			k := findKnee(ctx, w, o, o.rate, first, func() *cpuMeter { return newCPUMeter(c, o) },
				func() (counters, error) { return scrapeCounters(ctx, c.Procs) }, progress)
			if rep.Knee == nil {
				rep.Knee = k
			} else {
				rep.Knee.Steps = append(rep.Knee.Steps, k.Steps...)
			}
			rep.Knee.Runs = append(rep.Knee.Runs, k.MsgsPerS)
			if ctx.Err() != nil {
				break
			}
		}
		rep.Knee.MsgsPerS = stats.Of(slices.Clone(rep.Knee.Runs)).P50
		if !o.skips("baseline") && ctx.Err() == nil && rep.Baseline != nil {
			// The raw pipeline's knee, from twice Parley's: how far
			// Parley is from what the broker and client allow here.
			phase("baseline knee")
			bk, err := baselineKnee(ctx, c.KafkaOpts(), o, max(2*rep.Knee.MsgsPerS, o.rate), progress)
			if err != nil {
				return err
			}
			rep.Baseline.Knee, rep.Baseline.KneeMsgsPerS = bk, bk.MsgsPerS
			if bk.MsgsPerS > 0 {
				rep.Ratio.KneeVsRaw = stats.Round3(rep.Knee.MsgsPerS / bk.MsgsPerS)
			}
		}
		if !o.skips("skeleton") && ctx.Err() == nil {
			// The same Kafka path with no Parley logic: how much of the
			// gap is Kafka's transactions, and how much Parley.
			phase("skeleton knee")
			sk, err := skeletonKnee(ctx, c.KafkaOpts(), o, max(2*rep.Knee.MsgsPerS, o.rate), progress)
			if err != nil {
				return err
			}
			rep.Skeleton = &skeletonResult{BatchWindowMS: float64(o.batchWindow) / float64(time.Millisecond), KneeMsgsPerS: sk.MsgsPerS, Knee: sk}
			if sk.MsgsPerS > 0 {
				if rep.Ratio == nil {
					rep.Ratio = &ratios{}
				}
				rep.Ratio.KneeVsSkeleton = stats.Round3(rep.Knee.MsgsPerS / sk.MsgsPerS)
			}
		}
	}
	// The memory figure is taken with nothing else connected.
	closeWorkload()
	closeHistory()

	if !o.skips("bigroom") && o.bigRoom.Members >= 2 && ctx.Err() == nil {
		phase("big room")
		br, err := runBigRoom(ctx, o, c, minter, runID, progress)
		if err != nil {
			return fmt.Errorf("big room: %w", err)
		}
		rep.BigRoom = br
	}

	// Recovery kills and restarts services, so it runs with no load and
	// after every phase that measures a steady platform but the memory
	// one, which starts an edge of its own.
	if !o.skips("recovery") && ctx.Err() == nil {
		phase("recovery")
		if c.Embedded {
			rep.Notes = append(rep.Notes, "recovery: not measured in embedded mode (one process holds every service)")
		} else {
			r, err := measureRecovery(ctx, c, o.recoveryRounds, o.recoveryRoles, minter, runID, progress)
			if err != nil {
				return err
			}
			rep.Recovery = r
		}
	}
	if !o.skips("memory") && o.conns > 0 && ctx.Err() == nil {
		phase("memory")
		m, err := measureMemory(ctx, c, o, limit, minter, runID, progress)
		if err != nil {
			rep.Notes = append(rep.Notes, "memory: "+err.Error())
		} else {
			rep.Memory = &m
		}
	}
	stopCluster()
	// The storm runs against a `parley run` of its own, with nothing
	// else running.
	if !o.skips("storm") && o.storm.Devices > 0 && ctx.Err() == nil {
		phase("storm")
		st, err := runStorm(ctx, o.storm, o.stormProfile(), binDir, logDir, limit, minter, runID, progress)
		if err != nil {
			rep.Notes = append(rep.Notes, err.Error())
		} else {
			rep.Storm = &st
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if n := w.setupDuplicates.Load(); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d events the load did not send (conversation creation) reached a device twice", n))
	}
	progress.set(nil)
	rep.Machine.LoadEnd = stats.Loadavg()
	rep.TookS = stats.Round3(time.Since(began).Seconds())
	rep.addNotes()
	path, err := rep.write(o.out)
	if err != nil {
		return err
	}
	png := filepath.Join(o.out, "latest.png")
	series := []plotSeries{{"Parley send → delivered", e2e.latencies}, {"Parley send → accepted", fixed.acceptLatenciesSorted()}}
	if rep.Baseline != nil {
		series = append(series, plotSeries{"Kafka baseline produce → consume", rep.Baseline.latencies})
	}
	if err := writePlot(png, series); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	progress.close()
	fmt.Println()
	rep.printTable(os.Stdout)
	fmt.Printf("\nwrote %s and %s (took %s)\n", path, png, time.Since(began).Round(time.Second))
	return nil
}

// runOnlyStorm is `parley-bench -only storm`: the storm phase alone, its
// report in storm.json beside latest.json.
func runOnlyStorm(ctx context.Context, o *options, rep *report, binDir, logDir string, limit uint64, began time.Time, phase func(string), progress *progressLine) error {
	minter, err := auth.NewHS256([]byte(benchSecret))
	if err != nil {
		return err
	}
	phase("storm")
	st, err := runStorm(ctx, o.storm, o.stormProfile(), binDir, logDir, limit, minter, strconv.FormatInt(time.Now().Unix(), 36), progress)
	if err != nil {
		return err
	}
	rep.Storm = &st
	rep.Mode = "storm"
	progress.set(nil)
	rep.Machine.LoadEnd = stats.Loadavg()
	rep.TookS = stats.Round3(time.Since(began).Seconds())
	path, err := rep.writeAs(o.out, "storm.json")
	if err != nil {
		return err
	}
	progress.close()
	fmt.Println()
	rep.printTable(os.Stdout)
	fmt.Printf("\nwrote %s (took %s; service logs in %s)\n", path, time.Since(began).Round(time.Second), logDir)
	return nil
}

// measureMemory opens the idle connections against a fresh edge process
// (real stack) or the platform process (embedded), as many as the file
// limit allows both ends.
func measureMemory(ctx context.Context, c *cluster.Cluster, o *options, limit uint64, minter *auth.HS256, runID string, progress *progressLine) (memoryResult, error) {
	n, limitedBy := o.conns, ""
	// Each end holds one descriptor per connection, plus its own few
	// hundred (Kafka, gRPC, files).
	if headroom := int(limit) - 1000; n > headroom {
		n = max(headroom, 0)
		limitedBy = fmt.Sprintf("RLIMIT_NOFILE %d of this machine (the hard limit; raising it needs CAP_SYS_RESOURCE)", limit)
	}
	p := c.Edges[0]
	if !c.Embedded {
		var err error
		if p, err = c.StartEdge(ctx, "edge-mem"); err != nil {
			return memoryResult{}, err
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return memoryResult{}, err
	}
	heap := filepath.Join(o.out, "heap-"+p.Name+".prof")
	return runMemory(ctx, p, "ws://"+p.HTTPAddr+"/ws", o.conns, n, limitedBy, heap, minter, runID, progress)
}

func (r *loadRun) acceptLatenciesSorted() []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	xs := slices.Clone(r.acceptLatencies)
	slices.Sort(xs)
	return xs
}

// addNotes says what a reader of the figures must know.
func (r *report) addNotes() {
	if r.Machine.BusyBeforePct > 25 {
		r.Notes = append(r.Notes, fmt.Sprintf("the machine was %.0f%% busy before the run started: other work was running and the figures are pessimistic", r.Machine.BusyBeforePct))
	}
	if c := r.CPU; c != nil && c.WindowS > 0 && c.Seconds["other"] > 0.15*c.WindowS*float64(r.Machine.Cores) {
		r.Notes = append(r.Notes, fmt.Sprintf("processes other than the benchmark's used %.1f CPU s during the e2e run (%.0f%% of the machine): the figures are pessimistic",
			c.Seconds["other"], 100*c.Seconds["other"]/(c.WindowS*float64(r.Machine.Cores))))
	}
	if e := r.E2E; e != nil && (e.Lost > 0 || e.Duplicates > 0) {
		r.Notes = append(r.Notes, fmt.Sprintf("e2e lost %d and duplicated %d deliveries: see the service logs", e.Lost, e.Duplicates))
	}
	if m := r.Memory; m != nil && m.Connections < m.Requested {
		r.Notes = append(r.Notes, fmt.Sprintf("memory measured with %d connections instead of %d: %s", m.Connections, m.Requested, m.LimitedBy))
	}
}

// progressLine prints what the benchmark is doing: rewritten in place on
// a terminal, one line every 5 s otherwise.
type progressLine struct {
	// mu guards f and the output.
	mu    sync.Mutex
	f     func() string
	tty   bool
	done  chan struct{}
	close func()
}

func newProgressLine() *progressLine {
	p := &progressLine{done: make(chan struct{})}
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		p.tty = true
	}
	p.close = sync.OnceFunc(func() {
		close(p.done)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.tty {
			fmt.Fprint(os.Stderr, "\r\033[K")
		}
	})
	every := 5 * time.Second
	if p.tty {
		every = time.Second
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
			}
			p.mu.Lock()
			if p.f != nil {
				if p.tty {
					fmt.Fprintf(os.Stderr, "\r\033[K%s", p.f())
				} else {
					fmt.Fprintln(os.Stderr, p.f())
				}
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *progressLine) set(f func() string) {
	p.mu.Lock()
	p.f = f
	p.mu.Unlock()
}

func (p *progressLine) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

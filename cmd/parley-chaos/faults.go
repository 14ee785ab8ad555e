package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
)

// Fault kinds. A run fails unless each was injected, and kindKill hit
// every role.
const (
	// kindKill: kill -9 of one service instance, started again after a
	// pause, as a crashed pod is.
	kindKill = "kill"
	// kindEdgeClients: kill -9 of the edge holding the most connected
	// clients, down long enough for them to reconnect to the other edge.
	kindEdgeClients = "edge-kill-with-clients"
	// kindKafka: the broker stopped and started again.
	kindKafka = "kafka-restart"
	// kindCassandra: Cassandra stopped for a while, then started.
	kindCassandra = "cassandra-stop"
)

var requiredKinds = []string{kindKill, kindEdgeClients, kindKafka, kindCassandra}

// fault is one injected fault and what it cost.
type fault struct {
	Kind   string    `json:"kind"`
	Target string    `json:"target"`
	At     time.Time `json:"at"`
	// AtS is seconds since the faults began.
	AtS float64 `json:"at_s"`
	// Back is when the target served again (the process ready, the server
	// started); DownS is At to Back.
	Back   *time.Time `json:"back_at,omitempty"`
	DownS  float64    `json:"down_s,omitempty"`
	Detail string     `json:"detail,omitempty"`
	// Error says the fault could not be injected as meant.
	Error string `json:"error,omitempty"`
	// See the report's definitions.
	RecoveryMS              *float64 `json:"recovery_ms"`
	RecoveryAllPartitionsMS *float64 `json:"recovery_all_partitions_ms"`
	UnrecoveredPartitions   []int32  `json:"unrecovered_partitions,omitempty"`
	// An edge kill's clients: how many were connected to it, how long the
	// last took to authenticate again, and where they went.
	Clients              int      `json:"clients,omitempty"`
	ClientsReconnectedMS *float64 `json:"clients_reconnected_ms,omitempty"`
	ClientsToOtherEdge   int      `json:"clients_to_other_edge,omitempty"`
	ClientsToRestarted   int      `json:"clients_to_restarted_edge,omitempty"`
	ClientsNotBack       int      `json:"clients_not_back,omitempty"`
	devices              []*device
	edge                 int
}

// faultLog is every fault of the run, in order.
type faultLog struct {
	mu    sync.Mutex
	start time.Time
	list  []*fault
}

func (l *faultLog) begin(kind, target, detail string) *fault {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	f := &fault{Kind: kind, Target: target, At: now, AtS: round1(now.Sub(l.start).Seconds()), Detail: detail}
	l.list = append(l.list, f)
	return f
}

// update changes a fault under the log's lock (faults are updated by the
// goroutine restarting their target while others read the log).
func (l *faultLog) update(f *fault, change func(*fault)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	change(f)
}

func (l *faultLog) back(f *fault, at time.Time) {
	l.update(f, func(f *fault) { f.Back, f.DownS = &at, round1(at.Sub(f.At).Seconds()) })
}

func (l *faultLog) failed(f *fault, err error) {
	l.update(f, func(f *fault) { f.Error = firstLines(err.Error(), 6) })
}

func (l *faultLog) snapshot() []*fault {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*fault(nil), l.list...)
}

// keeper restarts one process whenever it exits, as Kubernetes would: a
// planned kill after its pause, a crash (an exit nobody asked for) after
// a second, and again with backoff while the start fails (a persistence
// instance cannot start while Cassandra is down).
type keeper struct {
	p      *cluster.Proc
	log    *slog.Logger
	faults *faultLog

	// mu guards the fields below.
	mu      sync.Mutex
	planned *fault
	pause   time.Duration
	up      bool
	crashes []crash
	// startFailures counts starts that exited or did not get ready.
	startFailures int
}

// crash is an exit of a service nobody asked for.
type crash struct {
	Proc string    `json:"process"`
	At   time.Time `json:"at"`
	Tail string    `json:"log_tail"`
}

func (k *keeper) isUp() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.up
}

// kill sends SIGKILL; the keeper starts the process again after pause.
// It refuses (false) while the process is not up: it is down or
// starting already.
func (k *keeper) kill(f *fault, pause time.Duration) bool {
	k.mu.Lock()
	if !k.up {
		k.mu.Unlock()
		return false
	}
	k.planned, k.pause, k.up = f, pause, false
	k.mu.Unlock()
	k.p.Kill()
	return true
}

func (k *keeper) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.p.Exited():
		}
		if ctx.Err() != nil {
			return
		}
		k.mu.Lock()
		f, pause := k.planned, k.pause
		k.planned, k.up = nil, false
		if f == nil {
			pause = time.Second
			k.crashes = append(k.crashes, crash{Proc: k.p.Name, At: time.Now().UTC(), Tail: k.p.Tail(15)})
			k.log.Warn("service exited by itself; restarting it", "process", k.p.Name)
		}
		k.mu.Unlock()
		if !sleepCtx(ctx, pause) {
			return
		}
		backoff := time.Second
		for {
			err := k.p.Start()
			if err == nil {
				err = k.p.WaitReady(ctx, 90*time.Second)
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			k.mu.Lock()
			k.startFailures++
			k.mu.Unlock()
			k.log.Info("restart did not get ready; trying again", "process", k.p.Name, "err", firstLines(err.Error(), 1))
			k.p.Kill()
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		k.mu.Lock()
		k.up = true
		k.mu.Unlock()
		if f != nil {
			k.faults.back(f, time.Now())
		}
	}
}

// stackControl drives deployments/local/stack.sh, the only way the run
// touches the shared Kafka and Cassandra.
type stackControl struct {
	script string
	log    *slog.Logger
}

func (s stackControl) run(ctx context.Context, args ...string) error {
	start := time.Now()
	out, err := exec.CommandContext(ctx, "bash", append([]string{s.script}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", s.script, strings.Join(args, " "), err, out)
	}
	s.log.Info("stack.sh "+strings.Join(args, " "), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// accepting reports whether something accepts TCP connections at addr.
func accepting(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// injector runs the fault schedule.
type injector struct {
	o       *options
	log     *slog.Logger
	faults  *faultLog
	keepers map[string][]*keeper
	w       *workload
	stack   stackControl
	// kafkaAddr and cassandraAddr are checked to be refused after a stop,
	// so a stop that stopped nothing is not counted as a fault.
	kafkaAddr, cassandraAddr string
	// mu is held while a random victim is chosen and killed, so the edge
	// kill with clients never meets one already under way. edgeFault is
	// set while that runs: random kills then spare the edges, so the
	// clients have one to go to.
	mu        sync.Mutex
	edgeFault bool
}

// run injects faults for o.duration: a random kill every o.killEvery
// beside the scheduled ones (the edge with clients at a tenth of the
// window, the broker restart at a quarter, the Cassandra stop at half).
// It returns once every fault has ended, even past the window.
func (x *injector) run(ctx context.Context, seed uint64) {
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { x.killLoop(ctx, start.Add(x.o.duration), rand.New(rand.NewPCG(seed, 1))) })
	wg.Go(func() {
		at := func(frac float64) bool {
			return sleepCtx(ctx, time.Until(start.Add(time.Duration(frac*float64(x.o.duration)))))
		}
		if at(0.1) {
			x.killEdgeWithClients(ctx)
		}
		if at(0.25) {
			x.restartKafka(ctx)
		}
		if at(0.5) {
			x.stopCassandra(ctx)
		}
	})
	wg.Wait()
}

// killLoop kills a random instance every o.killEvery until end, taking
// the roles in a shuffled round so each is hit within five kills, and
// never a role with an instance already down: a run keeps one instance
// of each service serving while it is not a whole-stack fault.
func (x *injector) killLoop(ctx context.Context, end time.Time, rng *rand.Rand) {
	roles := append([]string(nil), cluster.Roles...)
	rng.Shuffle(len(roles), func(i, j int) { roles[i], roles[j] = roles[j], roles[i] })
	t := time.NewTicker(x.o.killEvery)
	defer t.Stop()
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.After(end) {
				return
			}
		}
		x.mu.Lock()
		for range roles {
			role := roles[next%len(roles)]
			next++
			if k := x.victim(role, rng); k != nil {
				pause := 500*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)))
				f := x.faults.begin(kindKill, k.p.Name, fmt.Sprintf("started again after %s", pause.Round(time.Millisecond)))
				x.log.Info("fault: kill -9", "process", k.p.Name, "pause", pause.Round(time.Millisecond))
				if !k.kill(f, pause) {
					x.faults.failed(f, fmt.Errorf("%s was not up", k.p.Name))
				}
				break
			}
		}
		x.mu.Unlock()
	}
}

// victim picks an instance of role to kill, or none; x.mu is held.
func (x *injector) victim(role string, rng *rand.Rand) *keeper {
	ks := x.keepers[role]
	if (role == "edge" && x.edgeFault) || len(ks) == 0 {
		return nil
	}
	for _, k := range ks {
		if !k.isUp() {
			return nil
		}
	}
	return ks[rng.IntN(len(ks))]
}

// edgePause is how long the killed edge stays down: past the clients'
// first redials, so they go to the other edge.
const edgePause = 5 * time.Second

// killEdgeWithClients kills the edge holding the most connected clients
// and waits until it is back and its clients reconnected, to either edge.
func (x *injector) killEdgeWithClients(ctx context.Context) {
	x.mu.Lock()
	x.edgeFault = true
	x.mu.Unlock()
	defer func() {
		x.mu.Lock()
		x.edgeFault = false
		x.mu.Unlock()
	}()
	edges := x.keepers["edge"]
	waitUntil(ctx, 30*time.Second, func() bool {
		for _, k := range edges {
			if !k.isUp() {
				return false
			}
		}
		return true
	})
	best, devs := 0, x.w.connectedTo(0)
	for i := 1; i < len(edges); i++ {
		if d := x.w.connectedTo(i); len(d) > len(devs) {
			best, devs = i, d
		}
	}
	k := edges[best]
	f := x.faults.begin(kindEdgeClients, k.p.Name, fmt.Sprintf("%d clients connected; started again after %s", len(devs), edgePause))
	x.faults.update(f, func(f *fault) { f.Clients, f.devices, f.edge = len(devs), devs, best })
	if len(devs) == 0 {
		x.faults.failed(f, fmt.Errorf("no edge held a connected client"))
		return
	}
	x.log.Info("fault: kill -9 of the edge with the most clients", "process", k.p.Name, "clients", len(devs))
	if !k.kill(f, edgePause) {
		x.faults.failed(f, fmt.Errorf("%s was not up", k.p.Name))
		return
	}
	waitUntil(ctx, 2*time.Minute, func() bool {
		if !k.isUp() {
			return false
		}
		for _, d := range devs {
			if _, ok := d.connectedAfter(f.At); !ok {
				return false
			}
		}
		return true
	})
}

// restartKafka stops the broker (stack.sh: SIGTERM, a controlled
// shutdown) and starts it again at once.
func (x *injector) restartKafka(ctx context.Context) {
	f := x.faults.begin(kindKafka, "kafka", "")
	x.log.Info("fault: restarting Kafka")
	stopErr := x.stack.run(ctx, "stop", "kafka")
	stopped := time.Now()
	if stopErr == nil && accepting(x.kafkaAddr) {
		stopErr = fmt.Errorf("%s still accepts connections after stack.sh stop kafka: is it the stack's broker?", x.kafkaAddr)
	}
	// Started whatever happened: the rest of the run needs it.
	startErr := x.stack.run(context.WithoutCancel(ctx), "start", "kafka")
	now := time.Now()
	x.faults.back(f, now)
	x.faults.update(f, func(f *fault) {
		f.Detail = fmt.Sprintf("stopped in %.1f s, started in %.1f s", stopped.Sub(f.At).Seconds(), now.Sub(stopped).Seconds())
	})
	if err := firstErr(stopErr, startErr); err != nil {
		x.faults.failed(f, err)
	}
}

// stopCassandra stops Cassandra, keeps it down for o.cassandraDown and
// starts it again.
func (x *injector) stopCassandra(ctx context.Context) {
	f := x.faults.begin(kindCassandra, "cassandra", "")
	x.log.Info("fault: stopping Cassandra", "for", x.o.cassandraDown)
	stopErr := x.stack.run(ctx, "stop", "cassandra")
	stopped := time.Now()
	if stopErr == nil && accepting(x.cassandraAddr) {
		stopErr = fmt.Errorf("%s still accepts connections after stack.sh stop cassandra: is it the stack's Cassandra?", x.cassandraAddr)
	}
	if stopErr == nil {
		sleepCtx(ctx, x.o.cassandraDown)
	}
	startAt := time.Now()
	startErr := x.stack.run(context.WithoutCancel(ctx), "start", "cassandra")
	now := time.Now()
	x.faults.back(f, now)
	x.faults.update(f, func(f *fault) {
		f.Detail = fmt.Sprintf("stopped in %.1f s, down %.1f s, started in %.1f s",
			stopped.Sub(f.At).Seconds(), startAt.Sub(stopped).Seconds(), now.Sub(startAt).Seconds())
	})
	if err := firstErr(stopErr, startErr); err != nil {
		x.faults.failed(f, err)
	}
}

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// waitUntil polls cond every 100 ms for up to timeout.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return false
		}
	}
	return true
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/freeport"
)

// Crash-loop knobs. The defaults are what `make test` runs; `make crash`
// raises the rounds.
const (
	// defaultCrashRounds keeps the test under a minute here (50-55 s,
	// with -race too): a round is a restart (0.05-0.3 s to ready), the
	// retries and checks (about a second), and the traffic until the
	// kill (1.4 s on average).
	defaultCrashRounds = 10
	// The kill lands uniformly within this window after the traffic of a
	// round starts: late enough that every sequencer partition in use has
	// transactions behind it, early enough to keep rounds short. With 24
	// sends in flight the sequencer is inside a transaction almost all the
	// time, so the kill nearly always leaves one open.
	killAfterMin = 300 * time.Millisecond
	killAfterMax = 2500 * time.Millisecond
)

// crashConfig is what one run of TestCrashLoop does, from the environment.
type crashConfig struct {
	rounds int
	// seed draws the kill moments; the same seed replays the same ones
	// (the interleaving of the traffic differs from run to run).
	seed uint64
	// dir holds the data folder and the server's logs; kept after the
	// test when PARLEY_CRASH_DIR named it.
	dir string
}

func crashConfigFrom(t *testing.T) crashConfig {
	t.Helper()
	cfg := crashConfig{rounds: defaultCrashRounds, seed: uint64(time.Now().UnixNano()), dir: os.Getenv("PARLEY_CRASH_DIR")}
	if v := os.Getenv("PARLEY_CRASH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("PARLEY_CRASH_ROUNDS=%q: want a positive number", v)
		}
		cfg.rounds = n
	}
	if v := os.Getenv("PARLEY_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("PARLEY_CRASH_SEED=%q: %v", v, err)
		}
		cfg.seed = n
	}
	if cfg.dir == "" {
		cfg.dir = t.TempDir()
	} else if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestCrashLoop kills `parley run` with SIGKILL at random moments of heavy
// traffic, round after round on the same data folder, and after every
// restart holds it to the guarantees a crash must not break:
//
//  1. every message left unanswered by the kill, retried with the same
//     client message id, is answered; an acknowledged one resent is a
//     duplicate with its original seq;
//  2. every acknowledged seq is in history exactly once, with its text;
//  3. each conversation's history is 1..head without holes, and no
//     (sender, client message id) holds two seqs;
//  4. every device connected across the restarts, resuming by itself from
//     its last seq, has exactly history: no gap, nothing twice, in order,
//     and no error frame about a gap.
//
// Rounds run on the same data folder on purpose: a kill that leaves a
// transaction open does its damage later, when a restarted sequencer
// commits again or rebuilds (issue 13: an acknowledged seq missing from
// history, and a resume that fails for ever at the hole).
//
// PARLEY_CRASH_ROUNDS sets the rounds (10), PARLEY_CRASH_SEED replays the
// kill moments of a logged run, PARLEY_CRASH_DIR keeps data and logs.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds parley and runs it through many kills")
	}
	cfg := crashConfigFrom(t)
	t.Logf("crash loop: %d rounds, seed %d (PARLEY_CRASH_SEED=%d replays the kill moments), data and logs in %s",
		cfg.rounds, cfg.seed, cfg.seed, cfg.dir)
	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed))
	ctx := t.Context()

	began := time.Now()
	srv := newServer(t, cfg.dir)
	t.Logf("built parley in %v", time.Since(began).Round(time.Millisecond))
	ready, err := srv.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("start 0: ready in %v", ready.Round(time.Millisecond))
	w, err := newWorld(ctx, t, srv.url(), cfg.seed)
	if err != nil {
		t.Fatal(err)
	}

	for round := 0; ; round++ {
		if round > 0 {
			ready, err := srv.start(ctx)
			if err != nil {
				t.Fatalf("round %d (seed %d): %v", round, cfg.seed, err)
			}
			t.Logf("round %d: restarted, ready in %v", round, ready.Round(time.Millisecond))
		}
		rep := w.check(ctx, round)
		t.Logf("round %d: %s", round, rep.summary)
		for _, n := range rep.notes {
			t.Logf("round %d: note: %s", round, n)
		}
		if len(rep.problems) > 0 {
			t.Fatalf("round %d of %d (seed %d, after %d kills on %s) broke a guarantee:\n  %s\n%s",
				round, cfg.rounds, cfg.seed, round, cfg.dir, strings.Join(capLines(rep.problems, 40), "\n  "), srv.warnings(2))
		}
		if round == cfg.rounds {
			break
		}
		after := killAfterMin + time.Duration(rng.Int64N(int64(killAfterMax-killAfterMin)))
		stats, err := w.trafficUntil(ctx, round, func() error {
			time.Sleep(after)
			return srv.kill()
		})
		if err != nil {
			t.Fatalf("round %d (seed %d): %v\n%s", round, cfg.seed, err, srv.warnings(1))
		}
		t.Logf("round %d: killed after %v: %s", round, after.Round(time.Millisecond), stats)
	}

	// The command line's own smoke test passes on the data the kills left.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	smoke := exec.CommandContext(sctx, srv.bin, "smoke", "-url", srv.url(), "-messages", "10", "-timeout", "45s")
	if out, err := smoke.CombinedOutput(); err != nil {
		t.Fatalf("after %d kills, parley smoke failed: %v\n%s", cfg.rounds, err, out)
	}
	t.Logf("%d rounds in %v", cfg.rounds, time.Since(began).Round(time.Second))
}

// server is `parley run`, started again and again on one data folder and
// one HTTP address, so clients reconnect to it by themselves.
type server struct {
	bin, dir string
	// addr is the WebSocket's, admin the probes'.
	addr, admin string
	starts      int
	cmd         *exec.Cmd
	// exited receives the process's end; kill and the cleanup wait on it.
	exited chan error
	// logs are the server's output files, one per start.
	logs []string
}

func newServer(t *testing.T, dir string) *server {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parley")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{bin: bin, dir: dir, addr: addr, admin: admin}
	t.Cleanup(func() {
		if s.cmd != nil {
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
	return s
}

func (s *server) url() string { return "ws://" + s.addr + "/ws" }

// start runs the server and waits until it is ready; it returns how long
// that took.
func (s *server) start(ctx context.Context) (time.Duration, error) {
	logPath := filepath.Join(s.dir, fmt.Sprintf("run-%03d.log", s.starts))
	s.starts++
	lf, err := os.Create(logPath)
	if err != nil {
		return 0, fmt.Errorf("server log: %w", err)
	}
	// The writers send as fast as the server answers: the limits, which
	// would slow them, are not what this test is about.
	cmd := exec.Command(s.bin, "run", "-data", filepath.Join(s.dir, "data"), "-http", s.addr, "-admin", s.admin, "-limits-off")
	cmd.Stdout, cmd.Stderr = lf, lf
	began := time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return 0, fmt.Errorf("start parley run: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan error, 1)
	s.logs = append(s.logs, logPath)
	go func() {
		err := cmd.Wait()
		lf.Close()
		s.exited <- err
	}()
	probe := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := probe.Get("http://" + s.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(began), nil
			}
		}
		select {
		case err := <-s.exited:
			s.exited <- err
			return 0, fmt.Errorf("parley run exited while starting: %v (log %s)", err, logPath)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("parley run not ready within 60 s (log %s)", logPath)
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone. A server that
// had already exited by itself is an error: it crashed without being
// asked.
func (s *server) kill() error {
	select {
	case err := <-s.exited:
		s.cmd = nil
		return fmt.Errorf("parley run exited by itself before the kill: %v (log %s)", err, s.logs[len(s.logs)-1])
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill parley run: %w", err)
	}
	<-s.exited
	s.cmd = nil
	return nil
}

// warnings returns the warning and error lines of the last n server logs,
// which is where a crash's aftermath shows (aborted transactions, failed
// resumes), at most 30 lines of each. Fan-out's failed pushes to the
// edge that died are only counted: every restart has a burst of them.
func (s *server) warnings(n int) string {
	var b strings.Builder
	for _, p := range s.logs[max(0, len(s.logs)-n):] {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var lines []string
		pushes := 0
		for _, l := range strings.Split(string(data), "\n") {
			switch {
			case strings.Contains(l, "fanout: delivery incomplete"):
				pushes++
			case strings.Contains(l, "level=WARN"), strings.Contains(l, "level=ERROR"):
				lines = append(lines, l)
			}
		}
		fmt.Fprintf(&b, "warnings and errors in %s (%d, and %d failed pushes):\n", p, len(lines), pushes)
		for _, l := range capLines(lines, 30) {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	return b.String()
}

// capLines keeps the first n lines and says how many it left out.
func capLines(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	return append(lines[:n:n], fmt.Sprintf("… and %d more", len(lines)-n))
}

package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
)

// cpuMeter samples the CPU time of the benchmark's processes, the local
// Kafka and Cassandra and the benchmark itself, to show where a run's time
// went.
type cpuMeter struct {
	start       time.Time
	pids        map[string]int
	before      map[string]float64
	busy, total uint64
}

func newCPUMeter(c *cluster.Cluster, o *options) *cpuMeter {
	m := &cpuMeter{start: time.Now(), pids: map[string]int{"bench": os.Getpid()}, before: map[string]float64{}}
	for _, p := range c.Procs {
		m.pids[p.Name] = p.PID()
	}
	maps.Copy(m.pids, jvmPIDs(c, o))
	for name, pid := range m.pids {
		if s, err := cpuSeconds(pid); err == nil {
			m.before[name] = s
		}
	}
	m.busy, m.total = machineBusy()
	return m
}

// jvmPIDs are the local Kafka's and Cassandra's processes, when the run
// is on the stack and they listen here.
func jvmPIDs(c *cluster.Cluster, o *options) map[string]int {
	pids := map[string]int{}
	if c.Embedded {
		return pids
	}
	if pid := pidListening(portOf(strings.Split(o.brokers, ",")[0])); pid != 0 {
		pids["kafka"] = pid
	}
	if pid := pidListening(portOf(strings.Split(o.cassandra, ",")[0])); pid != 0 {
		pids["cassandra"] = pid
	}
	return pids
}

func (m *cpuMeter) report() *cpuReport {
	r := &cpuReport{WindowS: stats.Round3(time.Since(m.start).Seconds()), Seconds: map[string]float64{}}
	for name, pid := range m.pids {
		if s, err := cpuSeconds(pid); err == nil {
			if b, ok := m.before[name]; ok {
				r.Seconds[name] = stats.Round3(s - b)
			}
		}
	}
	busy, total := machineBusy()
	if total > m.total {
		r.MachineBusyPct = stats.Round3(100 * float64(busy-m.busy) / float64(total-m.total))
		// Whatever the machine did beyond the processes measured: the
		// kernel, and work that has nothing to do with the benchmark.
		other := float64(busy-m.busy) / clockTicks
		for _, s := range r.Seconds {
			other -= s
		}
		r.Seconds["other"] = stats.Round3(max(0, other))
	}
	return r
}

// busyPct is the share of all cores busy over d: how much else the machine
// is doing before the benchmark starts.
func busyPct(d time.Duration) float64 {
	b0, t0 := machineBusy()
	time.Sleep(d)
	b1, t1 := machineBusy()
	if t1 <= t0 {
		return 0
	}
	return stats.Round3(100 * float64(b1-b0) / float64(t1-t0))
}

// startProfiles takes a CPU profile of each asked-for role while the
// fixed-rate run goes (one profile per process), and sends the files
// written, comma-separated, when done.
// A phase other than the fixed-rate run names itself in tag (the files
// are cpu-NAME-TAG.prof) and lasts dur.
func startProfiles(ctx context.Context, c *cluster.Cluster, o *options, tag string, dur time.Duration, progress *progressLine) <-chan string {
	out := make(chan string, 1)
	roles := strings.Split(o.profile, ",")
	if o.profile == "all" {
		roles = []string{"edge", "ingest", "fanout", "persistence", "presence"}
	}
	type job struct {
		p    *cluster.Proc
		path string
	}
	var jobs []job
	seen := map[*cluster.Proc]bool{}
	for _, role := range roles {
		p := c.First(strings.TrimSpace(role))
		if p == nil || seen[p] {
			continue
		}
		seen[p] = true
		name := p.Name
		if tag != "" {
			name += "-" + tag
		}
		jobs = append(jobs, job{p, filepath.Join(o.out, fmt.Sprintf("cpu-%s.prof", name))})
	}
	if len(jobs) == 0 {
		out <- ""
		return out
	}
	// Profile the middle of the run, leaving out the ramp at either end.
	secs := max(1, min(30, int(dur.Seconds())-4))
	go func() {
		var files []string
		results := make(chan string, len(jobs))
		for _, j := range jobs {
			go func() {
				select {
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
					results <- ""
					return
				}
				data, err := j.p.PprofGet(ctx, fmt.Sprintf("profile?seconds=%d", secs))
				if err == nil {
					err = saveProfile(j.path, data)
				}
				if err != nil {
					progress.logf("profile %s: %v", j.p.Name, err)
					results <- ""
					return
				}
				results <- j.path
			}()
		}
		for range jobs {
			if f := <-results; f != "" {
				files = append(files, f)
			}
		}
		out <- strings.Join(files, ",")
	}()
	return out
}

// saveProfile writes a profile to path, making its folder if need be.
func saveProfile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	return nil
}

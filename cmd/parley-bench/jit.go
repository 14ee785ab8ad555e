package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parleychat/parley/cmd/internal/stats"
)

// The JVMs of a freshly started stack spend minutes compiling: on this
// machine Kafka's and Cassandra's JIT threads used 38 and 33 CPU seconds
// over their first three 30 s runs, and the first run measured p99 394 ms
// where the third measured 54. A benchmark of a cold stack measures the
// compiler, so the warm-up goes on until the compilers are nearly idle.

// jitSeconds is the CPU time of a JVM's compiler threads (HotSpot names
// them "C1 CompilerThread<n>" and "C2 CompilerThread<n>", cut to 15
// characters in comm).
func jitSeconds(pid int) (float64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("threads of %d: %v", pid, err)
	}
	var sum float64
	for _, t := range tasks {
		comm, err := os.ReadFile(filepath.Join(t, "comm"))
		if err != nil || !strings.HasPrefix(string(comm), "C1 Compiler") && !strings.HasPrefix(string(comm), "C2 Compiler") {
			continue
		}
		if s, err := threadCPUSeconds(t); err == nil {
			sum += s
		}
	}
	return sum, nil
}

// threadCPUSeconds reads a thread's user+system time from its stat.
func threadCPUSeconds(taskDir string) (float64, error) {
	data, err := os.ReadFile(filepath.Join(taskDir, "stat"))
	if err != nil {
		return 0, err
	}
	return statCPUSeconds(data, taskDir)
}

// jitWarmth tracks the JVMs' compilers across warm-up slices.
type jitWarmth struct {
	pids map[string]int
	last map[string]float64
	at   time.Time
}

func newJITWarmth(pids map[string]int) *jitWarmth {
	w := &jitWarmth{pids: pids, last: map[string]float64{}, at: time.Now()}
	for name, pid := range pids {
		if s, err := jitSeconds(pid); err == nil {
			w.last[name] = s
		}
	}
	return w
}

// share is the compilers' CPU since the last call, as a share of one
// core, per JVM; the highest of them is what warm compares.
func (w *jitWarmth) share() (map[string]float64, float64) {
	now := time.Now()
	span := now.Sub(w.at).Seconds()
	out, top := map[string]float64{}, 0.0
	for name, pid := range w.pids {
		s, err := jitSeconds(pid)
		if err != nil || span <= 0 {
			continue
		}
		out[name] = stats.Round3((s - w.last[name]) / span)
		top = max(top, out[name])
		w.last[name] = s
	}
	w.at = now
	return out, top
}

// warmUpReport is what the warm-up took.
type warmUpReport struct {
	Seconds float64 `json:"seconds"`
	// JITShare is each JVM's compilers' share of a core over the last
	// slice of the warm-up.
	JITShare map[string]float64 `json:"jit_share_of_core_last_slice,omitempty"`
	// Warm is false when the compilers were still busy at -warmup-max.
	Warm bool `json:"warm"`
}

// warmUp runs the unmeasured load at -rate for -warmup, then, on the
// stack, 10 s more at a time until the JVMs' compilers are nearly idle.
func warmUp(ctx context.Context, w *workload, o *options, jvms map[string]int, rep *report, progress *progressLine) *warmUpReport {
	began := time.Now()
	jw := newJITWarmth(jvms)
	r := &warmUpReport{Warm: true}
	slice, n := o.warmup, 0
	for ctx.Err() == nil {
		n++
		run := newLoadRun(fmt.Sprintf("warm-up %d", n), o.rate, slice)
		progress.set(run.progress)
		w.runLoad(ctx, run, o.grace, o.directShare)
		if res := run.result(w.disconnects.Swap(0)); res.Lost > 0 || res.Errors > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("warm-up %d lost %d deliveries and had %d errors", n, res.Lost, res.Errors))
		}
		if len(jvms) == 0 || o.jitQuiet <= 0 {
			break
		}
		var top float64
		r.JITShare, top = jw.share()
		if top <= o.jitQuiet {
			break
		}
		if time.Since(began) >= o.warmupMax {
			r.Warm = false
			rep.Notes = append(rep.Notes, fmt.Sprintf("the JVMs' compilers still used %.2f of a core after %s of warm-up: the figures include JIT compilation", top, o.warmupMax))
			break
		}
		slice = 10 * time.Second
	}
	r.Seconds = stats.Round3(time.Since(began).Seconds())
	return r
}

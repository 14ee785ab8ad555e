package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
)

// report is bench/results/latest.json.
type report struct {
	StartedAt string          `json:"started_at"`
	TookS     float64         `json:"took_s"`
	Mode      string          `json:"mode"`
	Machine   machine         `json:"machine"`
	Config    map[string]any  `json:"config"`
	E2E       *loadResult     `json:"e2e,omitempty"`
	Baseline  *baselineResult `json:"baseline,omitempty"`
	Skeleton  *skeletonResult `json:"skeleton,omitempty"`
	BigRoom   *bigRoomResult  `json:"big_room,omitempty"`
	// Cassandra is the e2e run's statements per message, and Batches
	// the mean of each batch kind over it.
	Cassandra *cassandraReport   `json:"cassandra,omitempty"`
	Batches   map[string]float64 `json:"batch_mean,omitempty"`
	Ratio     *ratios            `json:"ratio,omitempty"`
	Knee      *kneeResult        `json:"knee,omitempty"`
	Memory    *memoryResult      `json:"memory,omitempty"`
	History   *historyResult     `json:"history,omitempty"`
	Recovery  *recoveryResult    `json:"recovery,omitempty"`
	Storm     *stormResult       `json:"storm,omitempty"`
	// CPU is the CPU time each process used during the e2e phase.
	CPU *cpuReport `json:"cpu,omitempty"`
	// IdleCPU is every process's CPU over a few seconds with the
	// devices connected and nothing sent: what the stack costs at rest.
	IdleCPU *cpuReport `json:"idle_cpu,omitempty"`
	// WarmUp is how long the unmeasured load ran before the measured one.
	WarmUp *warmUpReport `json:"warm_up,omitempty"`
	// Kafka is the requests the services made during the fixed-rate run.
	Kafka   *kafkaReport `json:"kafka,omitempty"`
	Profile string       `json:"cpu_profile,omitempty"`
	Notes   []string     `json:"notes,omitempty"`
}

type ratios struct {
	// Throughput is Parley's e2e throughput over the baseline's.
	Throughput float64 `json:"throughput"`
	// LatencyP50 and LatencyP99 are Parley's send→delivery stats.Percentiles
	// over the baseline's produce→consume ones.
	LatencyP50 float64 `json:"latency_p50"`
	LatencyP99 float64 `json:"latency_p99"`
	// KneeVsRaw is Parley's knee over the raw franz-go pipeline's.
	KneeVsRaw float64 `json:"knee_vs_raw,omitempty"`
	// KneeVsSkeleton is Parley's knee over the skeleton pipeline's.
	KneeVsSkeleton float64 `json:"knee_vs_skeleton,omitempty"`
}

// skeletonResult is the knee of the skeleton pipeline (runSkeleton).
type skeletonResult struct {
	BatchWindowMS float64     `json:"batch_window_ms"`
	KneeMsgsPerS  float64     `json:"knee_msgs_per_s"`
	Knee          *kneeResult `json:"knee"`
}

type machine struct {
	Cores       int    `json:"cores"`
	CPU         string `json:"cpu"`
	MemTotalKiB int64  `json:"mem_total_kib"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"go_version"`
	GitCommit   string `json:"git_commit"`
	// BusyBeforePct is the share of the cores busy in the 2 s before the
	// benchmark started anything.
	BusyBeforePct float64  `json:"busy_before_pct"`
	LoadStart     string   `json:"loadavg_start"`
	LoadEnd       string   `json:"loadavg_end"`
	LoadPhases    []string `json:"loadavg_by_phase,omitempty"`
	FileLimit     uint64   `json:"file_limit"`
}

type cpuReport struct {
	WindowS float64 `json:"window_s"`
	// MachineBusyPct is the share of all cores that was busy.
	MachineBusyPct float64            `json:"machine_busy_pct"`
	Seconds        map[string]float64 `json:"seconds_by_process"`
	// The e2e run's CPU per accepted message and per delivery, by
	// process and for the stack (every process but the load generator
	// and "other"); unset for the idle window.
	USPerMessage    map[string]float64 `json:"us_per_message,omitempty"`
	USPerDelivery   map[string]float64 `json:"us_per_delivery,omitempty"`
	StackUSPerMsg   float64            `json:"stack_us_per_message,omitempty"`
	StackUSPerDeliv float64            `json:"stack_us_per_delivery,omitempty"`
}

func machineInfo() machine {
	m := machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: stats.Loadavg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &m.MemTotalKiB)
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		m.GitCommit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.GitCommit += "+dirty"
		}
	}
	return m
}

func (r *report) write(dir string) (string, error) { return r.writeAs(dir, "latest.json") }

// writeAs writes the report as dir/name.
func (r *report) writeAs(dir, name string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, append(data, '\n'), 0o644)
}

// printTable writes the human summary.
func (r *report) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cols ...any) {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			switch v := c.(type) {
			case float64:
				fmt.Fprint(tw, fmtNum(v))
			default:
				fmt.Fprint(tw, v)
			}
		}
		fmt.Fprintln(tw)
	}
	row("figure", "value", "detail")
	row("------", "-----", "------")
	if e := r.E2E; e != nil {
		row("e2e rate", e.RateTarget, fmt.Sprintf("msg/s for %.0fs", e.DurationS))
		row("e2e sent / accepted / errors", fmt.Sprintf("%d / %d / %d", e.Sent, e.Accepted, e.Errors), fmtErrors(e.ErrorsByCode))
		row("e2e delivered / expected", fmt.Sprintf("%d / %d", e.Delivered, e.Expected), "deliveries to recipient devices")
		row("e2e lost / duplicates", fmt.Sprintf("%d / %d", e.Lost, e.Duplicates), fmt.Sprintf("out of order %d, disconnects %d", e.OutOfOrder, e.Disconnects))
		row("e2e throughput", e.Throughput, fmt.Sprintf("msg/s fully delivered (%.0f deliveries/s)", e.DeliveriesPerS))
		row("e2e latency p50/p90/p99/max", fmtP(e.Latency, true), "ms, send → received on each recipient device")
		if ws, ok := e.worstSecond(); ok {
			under := 0
			for _, s := range e.Timeline {
				if s.Deliveries > 0 && s.P99 <= 100 {
					under++
				}
			}
			row("e2e p99 per second", fmt.Sprintf("%d of %d s ≤ 100 ms", under, len(e.Timeline)), fmt.Sprintf("worst second %d: p99 %s ms, max %s ms", ws.T, fmtNum(ws.P99), fmtNum(ws.Max)))
		}
		row("e2e accept latency p50/p99", fmt.Sprintf("%s / %s", fmtNum(e.AcceptLatency.P50), fmtNum(e.AcceptLatency.P99)), "ms, send → accepted (seq assigned)")
	}
	if b := r.Baseline; b != nil {
		row("baseline throughput", b.Throughput, fmt.Sprintf("records/s, raw franz-go through the same broker (lost %d)", b.Lost))
		row("baseline latency p50/p99", fmt.Sprintf("%s / %s", fmtNum(b.Latency.P50), fmtNum(b.Latency.P99)), "ms, produce → consume")
	}
	if x := r.Ratio; x != nil {
		row("ratio throughput", x.Throughput, "parley / baseline")
		row("ratio latency p99", x.LatencyP99, fmt.Sprintf("parley / baseline (p50 %s)", fmtNum(x.LatencyP50)))
	}
	if k := r.Knee; k != nil {
		detail := fmt.Sprintf("msg/s: highest rate with p99 ≤ %.0f ms, nothing lost, no errors (%d steps)", k.P99LimitMS, len(k.Steps))
		if len(k.Runs) > 1 {
			detail += fmt.Sprintf("; median of %d searches: %s", len(k.Runs), strings.Trim(fmt.Sprint(k.Runs), "[]"))
		}
		row("knee", k.MsgsPerS, detail)
		if b := r.Baseline; b != nil && b.Knee != nil {
			row("raw Kafka knee", b.KneeMsgsPerS, fmt.Sprintf("msg/s: franz-go produce → consume under the same criterion (%d steps); Parley's knee is %.3f of it", len(b.Knee.Steps), r.Ratio.KneeVsRaw))
		}
		if sk := r.Skeleton; sk != nil {
			row("skeleton knee", sk.KneeMsgsPerS, fmt.Sprintf("msg/s: produce → transactional relay → read committed, no Parley logic (%d steps); Parley's knee is %.3f of it", len(sk.Knee.Steps), r.Ratio.KneeVsSkeleton))
		}
	}
	if b := r.BigRoom; b != nil {
		detail := fmt.Sprintf("us of stack CPU per delivery; %d members, %.0f msg/s, %.0f deliveries/s, p50/p99 %s / %s ms, lost %d, duplicates %d",
			b.Members, b.Run.RateTarget, b.Run.DeliveriesPerS, fmtNum(b.Run.Latency.P50), fmtNum(b.Run.Latency.P99), b.Run.Lost, b.Run.Duplicates)
		if b.CPU != nil {
			row("big room", fmtNum(b.CPU.StackUSPerDeliv), detail)
		}
	}
	if m := r.Memory; m != nil {
		row("memory per idle connection", m.KiBPerConn, fmt.Sprintf("KiB RSS, %d connections on %s (heap %s, stack %s KiB)", m.Connections, m.Process, fmtNum(m.HeapInuseKiBPerConn), fmtNum(m.StackInuseKiBPerConn)))
	}
	if h := r.History; h != nil {
		detail := fmt.Sprintf("ms, %d-event page over WebSocket, %d reads", h.PageSize, h.Reads)
		if h.GRPCLatency != nil {
			detail += fmt.Sprintf("; PersistenceService direct %s / %s", fmtNum(h.GRPCLatency.P50), fmtNum(h.GRPCLatency.P99))
		}
		row("history p50/p99", fmt.Sprintf("%s / %s", fmtNum(h.Latency.P50), fmtNum(h.Latency.P99)), detail)
	}
	if rc := r.Recovery; rc != nil {
		for _, role := range cluster.Roles {
			rr := rc.Roles[role]
			if rr == nil {
				continue
			}
			detail := fmt.Sprintf("s from restart, %d rounds; delivered p50/max %s / %s, history max %s", rc.Rounds, fmtNum(rr.DeliveredP50), fmtNum(rr.DeliveredMax), fmtNum(rr.HistoryMax))
			if len(rr.Failures) > 0 {
				detail += fmt.Sprintf("; %d rounds failed", len(rr.Failures))
			}
			row("recovery "+role+" accepted p50/max", fmt.Sprintf("%s / %s", fmtNum(rr.AcceptedP50), fmtNum(rr.AcceptedMax)), detail)
		}
	}
	if st := r.Storm; st != nil {
		o := st.Options
		row("storm devices resumed / failed", fmt.Sprintf("%d / %d", st.Resumed, st.Failed), fmt.Sprintf("%d conversations each (%d devices per conversation), %d missed messages each; errors %s", o.Convs, o.Group, o.Missed, fmtErrors(st.Errors)))
		row("storm connect rate", st.ConnectPerS, fmt.Sprintf("authenticated/s; all in %s s, connect p50/p99 %s / %s ms", fmtNum(st.AllAuthenticatedS), fmtNum(st.Connect.P50), fmtNum(st.Connect.P99)))
		row("storm all resumed", st.AllResumedS, fmt.Sprintf("s from the first dial; resume p50/p99 %s / %s ms", fmtNum(st.Resume.P50), fmtNum(st.Resume.P99)))
		row("storm missing / duplicates", fmt.Sprintf("%d / %d", st.Missing, st.Duplicates), fmt.Sprintf("of %d events owed; out of order %d", st.Expected, st.OutOfOrder))
		row("storm cpu", fmt.Sprintf("%s / %s / %s", fmtNum(st.ServerCPUS), fmtNum(st.ClientCPUS), fmtNum(st.MachineCPUS)), fmt.Sprintf("CPU s of the server / this client / the whole machine from the first dial to the last resumed (%s s); %s s waited for a quiet machine before (%s%% busy)", fmtNum(st.AllResumedS), fmtNum(st.QuietWaitS), fmtNum(st.BusyBeforePct)))
		row("storm chat p50/p99 before / during", fmt.Sprintf("%s / %s, %s / %s", fmtNum(st.ChatBefore.P50), fmtNum(st.ChatBefore.P99), fmtNum(st.ChatDuring.P50), fmtNum(st.ChatDuring.P99)), fmt.Sprintf("ms, %d chatters at %s msg/s; lost %d", o.Chatters, fmtNum(o.ChatRate), st.ChatLost))
	}
	if c := r.CPU; c != nil {
		names := make([]string, 0, len(c.Seconds))
		for n := range c.Seconds {
			names = append(names, n)
		}
		slices.SortFunc(names, func(a, b string) int { return int(math.Copysign(1, c.Seconds[b]-c.Seconds[a])) })
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %.1f", n, c.Seconds[n]))
		}
		row("cpu during e2e", fmt.Sprintf("%.0f%% busy", c.MachineBusyPct), "CPU s: "+strings.Join(parts, ", "))
		if c.StackUSPerMsg > 0 {
			row("cpu per message", fmtNum(c.StackUSPerMsg), fmt.Sprintf("us of stack CPU per accepted message (%s per delivery), the load generator left out", fmtNum(c.StackUSPerDeliv)))
		}
	}
	if c := r.IdleCPU; c != nil && c.WindowS > 0 {
		var parts []string
		for _, n := range slices.Sorted(maps.Keys(c.Seconds)) {
			parts = append(parts, fmt.Sprintf("%s %.3f", n, c.Seconds[n]/c.WindowS))
		}
		row("cpu at rest", fmt.Sprintf("%.0f%% busy", c.MachineBusyPct), "cores, devices connected and nothing sent: "+strings.Join(parts, ", "))
	}
	if wu := r.WarmUp; wu != nil {
		var parts []string
		for _, n := range slices.Sorted(maps.Keys(wu.JITShare)) {
			parts = append(parts, fmt.Sprintf("%s %.3f", n, wu.JITShare[n]))
		}
		detail := "unmeasured load at the run's rate"
		if len(parts) > 0 {
			detail = fmt.Sprintf("until the JIT compilers were quiet (warm %v); share of a core in the last slice: %s", wu.Warm, strings.Join(parts, ", "))
		}
		row("warm-up", fmt.Sprintf("%.0f s", wu.Seconds), detail)
	}
	if k := r.Kafka; k != nil {
		names := slices.Sorted(maps.Keys(k.PerMessageByClient))
		slices.SortStableFunc(names, func(a, b string) int { return cmp.Compare(k.PerMessageByClient[b], k.PerMessageByClient[a]) })
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %.2f", n, k.PerMessageByClient[n]))
		}
		row("kafka requests", fmt.Sprintf("%.1f", k.RequestsPerMessage), "per accepted message: "+strings.Join(parts, ", "))
	}
	if c := r.Cassandra; c != nil {
		row("cassandra statements", fmt.Sprintf("%.1f", c.StatementsPerMessage), fmt.Sprintf("written per accepted message, in %.2f requests; %.2f read", c.RequestsPerMessage, c.ReadStatementsPerMessage))
	}
	if len(r.Batches) > 0 {
		var parts []string
		for _, kind := range slices.Sorted(maps.Keys(r.Batches)) {
			parts = append(parts, fmt.Sprintf("%s %.2f", kind, r.Batches[kind]))
		}
		row("mean batches", "", strings.Join(parts, ", "))
	}
	row("machine", fmt.Sprintf("%d cores", r.Machine.Cores), fmt.Sprintf("%.0f%% busy before the run, load %s → %s, %s, %s",
		r.Machine.BusyBeforePct, r.Machine.LoadStart, r.Machine.LoadEnd, r.Machine.GoVersion, r.Machine.GitCommit))
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtP(p stats.Percentiles, p90 bool) string {
	if p90 {
		return fmt.Sprintf("%s / %s / %s / %s", fmtNum(p.P50), fmtNum(p.P90), fmtNum(p.P99), fmtNum(p.Max))
	}
	return fmt.Sprintf("%s / %s", fmtNum(p.P50), fmtNum(p.P99))
}

func fmtErrors(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// cdf is a step CDF of sorted xs, thinned to at most 400 points.
func cdf(sorted []float64) plotter.XYs {
	n := len(sorted)
	step := max(1, n/400)
	var xy plotter.XYs
	for i := 0; i < n; i += step {
		xy = append(xy, plotter.XY{X: max(sorted[i], 0.01), Y: float64(i+1) / float64(n)})
	}
	return append(xy, plotter.XY{X: max(sorted[n-1], 0.01), Y: 1})
}

// writePlot draws the latency distributions as CDFs on a log axis.
func writePlot(path string, series []plotSeries) error {
	p := plot.New()
	p.Title.Text = "Parley latency distribution"
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction ≤ latency"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.YOffs = vg.Points(20)
	p.Add(plotter.NewGrid())
	colors := []color.RGBA{{R: 0x1f, G: 0x77, B: 0xb4, A: 255}, {R: 0xff, G: 0x7f, B: 0x0e, A: 255}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 255}, {R: 0xd6, G: 0x27, B: 0x28, A: 255}}
	drawn := 0
	for i, s := range series {
		if len(s.sorted) == 0 {
			continue
		}
		l, err := plotter.NewLine(cdf(s.sorted))
		if err != nil {
			return err
		}
		l.Color = colors[i%len(colors)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		pc := stats.Of(s.sorted)
		p.Legend.Add(fmt.Sprintf("%s (p50 %s, p99 %s ms)", s.name, fmtNum(pc.P50), fmtNum(pc.P99)), l)
		drawn++
	}
	if drawn == 0 {
		return nil
	}
	return p.Save(20*vg.Centimeter, 12*vg.Centimeter, path)
}

type plotSeries struct {
	name   string
	sorted []float64
}

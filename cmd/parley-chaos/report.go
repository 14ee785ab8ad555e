package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
)

// report is the run's JSON report; definitions says what each figure is.
type report struct {
	Summary  string   `json:"summary"`
	OK       bool     `json:"ok"`
	Failures []string `json:"failures,omitempty"`
	// Notes are worth a look without failing the run.
	Notes     []string       `json:"notes,omitempty"`
	StartedAt string         `json:"started_at"`
	TookS     float64        `json:"took_s"`
	Seed      uint64         `json:"seed"`
	Config    map[string]any `json:"config"`
	// Load averages of the machine (shared with others) at the start,
	// after the faults and at the end.
	Load []string `json:"load"`

	Messages         int            `json:"messages"`
	Attempted        int            `json:"messages_attempted"`
	Unacknowledged   int            `json:"unacknowledged"`
	DuplicateAnswers int            `json:"duplicate_answers"`
	SendAttempts     int            `json:"send_attempts"`
	SendErrors       map[string]int `json:"send_errors,omitempty"`
	Rejected         int64          `json:"rejected"`

	Deliveries         int64         `json:"deliveries"`
	ExpectedDeliveries int64         `json:"expected_deliveries"`
	Lost               int           `json:"lost"`
	LostDeliveries     int           `json:"lost_deliveries"`
	LostMessages       []lostMessage `json:"lost_messages,omitempty"`
	Duplicates         int64         `json:"duplicates"`
	Reordered          int64         `json:"reordered"`
	Mismatched         int64         `json:"mismatched"`
	Unknown            int64         `json:"unknown"`
	Gaps               int64         `json:"gaps"`
	GapSeqs            int64         `json:"gap_seqs"`
	GapFilled          int64         `json:"gap_seqs_filled_from_history"`
	GapList            []gapRecord   `json:"gap_list,omitempty"`

	MaxLatencyMS float64           `json:"max_latency_ms"`
	Slowest      []delivery        `json:"slowest_deliveries"`
	Latency      stats.Percentiles `json:"delivery_latency_ms"`
	AckLatency   stats.Percentiles `json:"ack_latency_ms"`
	Convergence  *convergence      `json:"convergence"`

	Faults           []*fault                 `json:"faults"`
	FaultCounts      map[string]int           `json:"fault_counts"`
	KillsByRole      map[string]int           `json:"kills_by_role"`
	RecoveryByKind   map[string]recoveryRange `json:"recovery_by_kind"`
	MissingFaults    []string                 `json:"missing_faults,omitempty"`
	Crashes          []crash                  `json:"crashes,omitempty"`
	RestartFailures  map[string]int           `json:"restart_failures,omitempty"`
	ClientDrops      int                      `json:"client_drops"`
	ClientsMovedHome int64                    `json:"clients_moved_home"`
	RedialCauses     map[string]int           `json:"redial_causes,omitempty"`
	SDKErrors        map[string]int           `json:"sdk_errors,omitempty"`
	SDKErrorSample   []string                 `json:"sdk_error_sample,omitempty"`
	ProblemCount     int                      `json:"problem_count"`
	Problems         []string                 `json:"problems,omitempty"`
	Definitions      map[string]string        `json:"definitions"`
	Logs             string                   `json:"logs,omitempty"`
}

// lostMessage is the evidence for one acknowledged message that history
// or a member device lacks at the end.
type lostMessage struct {
	msgRef
	Partition        int32  `json:"partition"`
	ClientID         string `json:"client_msg_id"`
	Sender           string `json:"sender"`
	Attempts         int    `json:"attempts"`
	DuplicateAnswers int    `json:"duplicate_answers"`
	InHistory        bool   `json:"in_history"`
	// HistoryHolds is what history holds at Seq instead, if anything.
	HistoryHolds   string   `json:"history_holds,omitempty"`
	DevicesMissing []string `json:"devices_missing,omitempty"`
	// FaultsAround lists the faults from 30 s before the first attempt to
	// 5 s after the answer.
	FaultsAround []string `json:"faults_around"`
}

type recoveryRange struct {
	Count int `json:"count"`
	// The largest of the kind's faults.
	MaxRecoveryMS              *float64 `json:"max_recovery_ms"`
	MaxRecoveryAllPartitionsMS *float64 `json:"max_recovery_all_partitions_ms"`
}

var definitions = map[string]string{
	"messages":                   "distinct client message ids acknowledged: answered accepted, or duplicate to a retry",
	"deliveries":                 "first copies of sent messages delivered on a device's SDK Events(), every member device (the sender's own included); expected_deliveries is acknowledged messages times their conversation's devices",
	"lost":                       "acknowledged messages that, at the convergence deadline, persistence's history lacks at their acknowledged seq or a member device does not hold; lost_deliveries counts the (device, message) pairs",
	"duplicates":                 "a seq delivered twice to a device, a client message id at two seqs (on a device or in history), or one client message id answered with two seqs",
	"reordered":                  "an event delivered on Events() after a later seq of its conversation that the device did not hold",
	"gaps":                       "the SDK delivered an event past seqs it could not read from history within its 10 s (it reports them on Errors()); the device then reads them from history itself, as the SDK asks of apps (gap_seqs_filled_from_history); not a failure unless they stay missing",
	"delivery_latency_ms":        "first send attempt of a message to its delivery on another device's Events(), retries and resumes included",
	"ack_latency_ms":             "first send attempt to the accepted answer, retries included",
	"recovery_ms":                "per fault: from the fault to the first message first sent at or after it that was both acknowledged and delivered to a device other than the sender's",
	"recovery_all_partitions_ms": "per fault: the same, until it held in every partition of parley.events.v1 that messages sent after the fault went to (a partition stalled by a killed sequencer's open transaction, up to the 10 s transaction timeout, or by a restarting consumer shows here); null if a partition never got there (unrecovered_partitions). Faults come every few seconds, so a figure can include the next fault's effect",
	"clients_reconnected_ms":     "edge kill: from the kill until the last client that was connected to that edge authenticated again, on either edge",
	"down_s":                     "from the fault to its target serving again: the killed process ready, or stack.sh start done",
	"convergence":                "after the last send was answered: history_s until both persistence instances served every conversation up to its last acknowledged seq, the same events; devices_s until every device held exactly each of its conversations' history (same seqs, event ids, client ids and texts)",
	"crashes":                    "service exits nobody asked for; the run restarts them like the killed ones",
	"clients_moved_home":         "devices that had failed over, cut off (their TCP connection closed) to move back to their home edge once it served again, so clients stay spread over both edges",
	"redial_causes":              "why devices' connections dropped or redials failed (the SDK's StateReconnecting errors, numbers blanked), counted",
}

func (r *report) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// report builds the report from what the run saw; the convergence check
// has ended.
func (r *runner) report(c *convergence, faultsEnded time.Time) *report {
	o, w, t := r.o, r.w, r.w.tally
	rep := &report{
		StartedAt: r.began.UTC().Format(time.RFC3339), Seed: o.seed, Convergence: c, Definitions: definitions,
		Config: map[string]any{
			"duration_s": o.duration.Seconds(), "devices": len(w.devices), "users": len(w.users), "conversations": len(w.convs),
			"kill_every_s": o.killEvery.Seconds(), "rate_msgs_per_s": o.rate, "warmup_s": o.warmup.Seconds(), "settle_s": o.settle.Seconds(),
			"converge_s": o.converge.Seconds(), "cassandra_down_s": o.cassandraDown.Seconds(), "short": o.short,
			"instances_per_service": instances, "cores": runtime.NumCPU(), "keyspace": o.keyspace,
			// cluster.Start gives each process one address per service it
			// calls: no load balancer in front, as a Kubernetes Service is.
			"topology":             "edge i calls ingest i and persistence i (one address each) and both presence instances; fan-out calls both presence instances",
			"faults_ended_after_s": round1(faultsEnded.Sub(r.faults.start).Seconds()),
		},
		Load:       []string{"start " + r.loadStart, "faults over " + r.loadFaultsOver},
		SendErrors: map[string]int{}, FaultCounts: map[string]int{}, KillsByRole: map[string]int{},
		RecoveryByKind: map[string]recoveryRange{}, RestartFailures: map[string]int{},
	}
	t.mu.Lock()
	rep.Latency, rep.AckLatency = stats.Of(t.latencies), stats.Of(t.ackLatencies)
	rep.Slowest = slices.Clone(t.slowest)
	for i, d := range rep.Slowest {
		if st := d.msg.state(); st.acked {
			at := st.ackAt.UTC()
			rep.Slowest[i].AckedAt = &at
		}
	}
	for k, v := range t.sendErrors {
		rep.SendErrors[k] = v
	}
	rep.SDKErrors, rep.SDKErrorSample, rep.GapList, rep.RedialCauses = t.sdkErrors, t.sdkSample, t.gapList, t.dropCauses
	rep.Problems, rep.ProblemCount = append([]string(nil), t.problems...), t.problemCount
	t.mu.Unlock()
	rep.MaxLatencyMS = rep.Latency.Max
	rep.Deliveries, rep.Duplicates, rep.Reordered = t.deliveries.Load(), t.duplicates.Load(), t.reordered.Load()
	rep.Mismatched, rep.Unknown, rep.Rejected = t.mismatched.Load(), t.unknown.Load(), t.rejected.Load()
	rep.Gaps, rep.GapSeqs, rep.GapFilled = t.gaps.Load(), t.gapSeqs.Load(), t.filled.Load()
	rep.ClientsMovedHome = t.movedHome.Load()

	msgs := w.ledger.messages()
	faults := r.faults.snapshot()
	rep.Attempted = len(msgs)
	outs := make([]outcome, 0, len(msgs))
	for _, m := range msgs {
		outs = append(outs, outcomeOf(m))
		st := m.state()
		rep.SendAttempts += st.attempts
		rep.DuplicateAnswers += st.duplicateAnswers
		if !st.acked {
			if st.rejected == nil {
				rep.Unacknowledged++
			}
			continue
		}
		rep.Messages++
		devs := 0
		for _, u := range m.conv.members {
			devs += len(u.devices)
		}
		rep.ExpectedDeliveries += int64(devs)
		if lm, missing := r.lostCheck(m, st, c, faults); lm != nil {
			rep.LostDeliveries += missing
			rep.Lost++
			if len(rep.LostMessages) < maxListed {
				rep.LostMessages = append(rep.LostMessages, *lm)
			}
		}
	}
	for _, cv := range w.convs {
		f := c.findings[cv]
		rep.Duplicates += int64(len(f.duplicates))
		rep.Unknown += int64(len(f.unknown))
		rep.Mismatched += int64(len(f.mismatched) + len(f.holes))
		c.HistoryProblems = append(c.HistoryProblems, slices.Concat(f.duplicates, f.unknown, f.mismatched, f.holes)...)
	}
	r.faultFigures(rep, faults, outs)
	for _, ks := range r.keepers {
		for _, k := range ks {
			k.mu.Lock()
			rep.Crashes = append(rep.Crashes, k.crashes...)
			if k.startFailures > 0 {
				rep.RestartFailures[k.p.Name] = k.startFailures
			}
			k.mu.Unlock()
		}
	}
	var ended []string
	for _, d := range w.devices {
		d.mu.Lock()
		rep.ClientDrops += d.drops
		if d.ended != nil {
			ended = append(ended, fmt.Sprintf("%s: %v", d.name, d.ended))
		}
		d.mu.Unlock()
	}
	r.judge(rep, c, ended)
	return rep
}

// lostCheck returns the evidence if an acknowledged message is missing
// from history or a member device, and how many devices miss it.
func (r *runner) lostCheck(m *message, st msgState, c *convergence, faults []*fault) (*lostMessage, int) {
	acked := st.ackAt.UTC()
	lm := &lostMessage{msgRef: msgRef{Conv: m.conv.id, Seq: st.seq, FirstAttempt: m.first.UTC(), AckedAt: &acked},
		Partition: m.conv.partition, ClientID: m.id, Sender: m.from.name, Attempts: st.attempts, DuplicateAnswers: st.duplicateAnswers}
	for _, ev := range c.history[m.conv] {
		if ev.GetSeq() == st.seq {
			lm.InHistory = ev.GetClientMsgId() == m.id
			if !lm.InHistory {
				lm.HistoryHolds = fmt.Sprintf("client id %s %q", ev.GetClientMsgId(), ev.GetMessagePosted().GetText())
			}
		}
	}
	for _, u := range m.conv.members {
		for _, d := range u.devices {
			d.mu.Lock()
			v := d.views[m.conv.id]
			holds := v != nil && v.events[st.seq].clientID == m.id
			d.mu.Unlock()
			if !holds {
				lm.DevicesMissing = append(lm.DevicesMissing, d.name)
			}
		}
	}
	if lm.InHistory && len(lm.DevicesMissing) == 0 {
		return nil, 0
	}
	for _, f := range faults {
		if f.At.After(m.first.Add(-30*time.Second)) && f.At.Before(st.ackAt.Add(5*time.Second)) {
			lm.FaultsAround = append(lm.FaultsAround, fmt.Sprintf("%s %s at %s (%.1f s before the answer)",
				f.Kind, f.Target, f.At.UTC().Format("15:04:05.000"), st.ackAt.Sub(f.At).Seconds()))
		}
	}
	return lm, len(lm.DevicesMissing)
}

// faultFigures measures each fault's recovery and counts the kinds.
func (r *runner) faultFigures(rep *report, faults []*fault, outs []outcome) {
	roleOf := map[string]string{}
	for role, ks := range r.keepers {
		for _, k := range ks {
			roleOf[k.p.Name] = role
		}
	}
	for _, f := range faults {
		first, all, unrecovered := recovery(f.At, outs)
		r.faults.update(f, func(f *fault) {
			f.RecoveryMS, f.RecoveryAllPartitionsMS, f.UnrecoveredPartitions = first, all, unrecovered
			if f.Kind == kindEdgeClients {
				clientsBack(f)
			}
		})
		if f.Error != "" {
			rep.fail("fault %s of %s not injected as meant: %s", f.Kind, f.Target, f.Error)
			continue
		}
		rep.FaultCounts[f.Kind]++
		if f.Kind == kindKill {
			rep.KillsByRole[roleOf[f.Target]]++
		}
		rr := rep.RecoveryByKind[f.Kind]
		rr.Count++
		rr.MaxRecoveryMS = maxPtr(rr.MaxRecoveryMS, first)
		rr.MaxRecoveryAllPartitionsMS = maxPtr(rr.MaxRecoveryAllPartitionsMS, all)
		rep.RecoveryByKind[f.Kind] = rr
	}
	rep.Faults = faults
	for _, k := range requiredKinds {
		if rep.FaultCounts[k] == 0 {
			rep.MissingFaults = append(rep.MissingFaults, k)
		}
	}
	for _, role := range cluster.Roles {
		if rep.KillsByRole[role] == 0 {
			rep.MissingFaults = append(rep.MissingFaults, kindKill+" of "+role)
		}
	}
}

// clientsBack works out where an edge kill's clients went and how long
// the last took to authenticate again.
func clientsBack(f *fault) {
	var last time.Duration
	for _, d := range f.devices {
		c, ok := d.connectedAfter(f.At)
		switch {
		case !ok:
			f.ClientsNotBack++
			continue
		case c.edge == f.edge:
			f.ClientsToRestarted++
		default:
			f.ClientsToOtherEdge++
		}
		last = max(last, c.at.Sub(f.At))
	}
	if f.ClientsNotBack == 0 && len(f.devices) > 0 {
		v := round1(float64(last) / float64(time.Millisecond))
		f.ClientsReconnectedMS = &v
	}
}

func maxPtr(a, b *float64) *float64 {
	if a == nil || (b != nil && *b > *a) {
		return b
	}
	return a
}

// judge decides the run.
func (r *runner) judge(rep *report, c *convergence, ended []string) {
	if rep.Messages == 0 {
		rep.fail("no message was acknowledged")
	}
	for _, x := range []struct {
		n    int64
		what string
	}{
		{int64(rep.Lost), "acknowledged messages lost"},
		{rep.Duplicates, "duplicates"},
		{rep.Reordered, "reordered deliveries"},
		{rep.Mismatched, "events not as sent"},
		{rep.Unknown, "events nobody sent"},
		{rep.Rejected, "sends refused for good"},
		{int64(rep.Unacknowledged), "sends never answered"},
	} {
		if x.n > 0 {
			rep.fail("%d %s", x.n, x.what)
		}
	}
	if c.HistoryS == nil {
		rep.fail("history did not reach every acknowledged seq on both persistence instances within %.0f s", c.DeadlineS)
	}
	if c.DevicesS == nil {
		rep.fail("%d devices did not converge on history within %.0f s", c.DevicesNotConverged, c.DeadlineS)
	}
	if len(rep.MissingFaults) > 0 {
		rep.fail("faults not injected: %s", strings.Join(rep.MissingFaults, ", "))
	}
	if len(ended) > 0 {
		rep.fail("%d clients ended for good: %s", len(ended), strings.Join(ended[:min(3, len(ended))], "; "))
	}
	if len(rep.Crashes) > 0 {
		names := make([]string, 0, len(rep.Crashes))
		for _, c := range rep.Crashes {
			names = append(names, c.Proc)
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d service exits nobody asked for (restarted): %s", len(rep.Crashes), strings.Join(names, ", ")))
	}
	if rep.Gaps > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the SDK skipped %d gaps (%d seqs) it could not read from history in time; the devices read them later (see gap_list)", rep.Gaps, rep.GapSeqs))
	}
}

// finish sets the wall time and the summary line.
func (rep *report) finish(took time.Duration) {
	rep.TookS = round1(took.Seconds())
	rep.Load = append(rep.Load, "end "+stats.Loadavg())
	rep.OK = len(rep.Failures) == 0
	faults := 0
	for _, n := range rep.FaultCounts {
		faults += n
	}
	conv := "never"
	if c := rep.Convergence; c != nil && c.DevicesS != nil {
		conv = fmt.Sprintf("%.1fs", *c.DevicesS)
	}
	rep.Summary = fmt.Sprintf("chaos: messages=%d deliveries=%d lost=%d duplicates=%d reordered=%d gaps=%d faults=%d max_latency=%.1fs converged=%s took=%s ",
		rep.Messages, rep.Deliveries, rep.Lost, rep.Duplicates, rep.Reordered, rep.Gaps, faults, rep.MaxLatencyMS/1000, conv, took.Round(time.Second))
	if rep.OK {
		rep.Summary += "ok"
	} else {
		rep.Summary += "FAIL: " + strings.Join(rep.Failures, "; ")
	}
}

func (rep *report) write(path string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

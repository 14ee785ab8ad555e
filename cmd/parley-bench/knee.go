package main

import (
	"context"
	"fmt"
	"github.com/twmb/franz-go/pkg/kgo"
	"math"
	"time"

	"github.com/parleychat/parley/cmd/internal/stats"
)

type kneeStep struct {
	Rate       float64 `json:"rate_msgs_per_s"`
	Throughput float64 `json:"throughput_msgs_per_s"`
	P99        float64 `json:"latency_p99_ms"`
	Lost       int64   `json:"lost"`
	Errors     int64   `json:"errors"`
	Held       bool    `json:"held"`
	LoadAvg    string  `json:"loadavg"`
	// CPU is where the step's CPU went, per process and per message and
	// delivery; nil for the step the main run measured.
	CPU *stepCPU `json:"cpu,omitempty"`
	// KafkaPerMessage is the services' Kafka requests per accepted
	// message, and Batches the mean of each batch kind (commands per
	// transaction, events per apply, deliveries per push, events per
	// frame): what the step's messages shared their fixed costs with.
	// Unset for the step the main run measured.
	KafkaPerMessage float64            `json:"kafka_requests_per_message,omitempty"`
	Cassandra       *cassandraReport   `json:"cassandra,omitempty"`
	Batches         map[string]float64 `json:"batch_mean,omitempty"`
}

// stepCPU is one knee step's CPU: seconds per process over the step, and
// microseconds per accepted message and per delivery, for each process
// and for the stack as a whole (every process but the load generator and
// "other").
type stepCPU struct {
	Seconds         map[string]float64 `json:"seconds_by_process"`
	MachineBusyPct  float64            `json:"machine_busy_pct"`
	USPerMessage    map[string]float64 `json:"us_per_message"`
	USPerDelivery   map[string]float64 `json:"us_per_delivery"`
	StackUSPerMsg   float64            `json:"stack_us_per_message"`
	StackUSPerDeliv float64            `json:"stack_us_per_delivery"`
}

// newStepCPU divides a step's CPU report by its messages and deliveries.
func newStepCPU(r *cpuReport, res loadResult) *stepCPU {
	s := &stepCPU{Seconds: r.Seconds, MachineBusyPct: r.MachineBusyPct, USPerMessage: map[string]float64{}, USPerDelivery: map[string]float64{}}
	if res.Accepted == 0 || res.Delivered == 0 {
		return s
	}
	var stack float64
	for name, sec := range r.Seconds {
		s.USPerMessage[name] = stats.Round3(sec * 1e6 / float64(res.Accepted))
		s.USPerDelivery[name] = stats.Round3(sec * 1e6 / float64(res.Delivered))
		if name != "bench" && name != "other" {
			stack += sec
		}
	}
	s.StackUSPerMsg = stats.Round3(stack * 1e6 / float64(res.Accepted))
	s.StackUSPerDeliv = stats.Round3(stack * 1e6 / float64(res.Delivered))
	return s
}

type kneeResult struct {
	// MsgsPerS is the highest rate that held (the median over Runs when
	// there are several searches); 0 if none did.
	MsgsPerS float64 `json:"msgs_per_s"`
	// Runs is each search's knee, in order, when there were several; the
	// steps of all of them are in Steps.
	Runs       []float64  `json:"runs_msgs_per_s,omitempty"`
	P99LimitMS float64    `json:"p99_limit_ms"`
	StepS      float64    `json:"step_s"`
	Steps      []kneeStep `json:"steps"`
}

// held is the knee's criterion: p99 within the limit, every delivery there,
// no send refused, and at least 95% of the target rate accepted.
func held(r loadResult, limitMS float64) bool {
	return r.Latency.N > 0 && r.Latency.P99 <= limitMS && r.Lost == 0 && r.Errors == 0 && r.Disconnects == 0 &&
		r.AcceptedPerS >= 0.95*r.RateTarget
}

// findKnee doubles the rate from start until a step fails, then bisects
// between the last rate that held and the first that did not. A failing
// first step halves instead. At most maxSteps steps of stepDur each;
// meter starts the CPU meter of a step.
// scrape reads the services' request and batch counters.
func findKnee(ctx context.Context, w *workload, o *options, start float64, first *loadResult, meter func() *cpuMeter, scrape func() (counters, error), progress *progressLine) *kneeResult {
	k := &kneeResult{P99LimitMS: o.kneeP99, StepS: o.kneeStep.Seconds()}
	step := func(rate float64) bool {
		var res loadResult
		var cpu *stepCPU
		var perMsg float64
		var cql *cassandraReport
		var batches map[string]float64
		if first != nil && rate == first.RateTarget {
			res = *first // the main run already measured this rate
		} else {
			r := newLoadRun(fmt.Sprintf("knee step %d", len(k.Steps)+1), rate, o.kneeStep)
			progress.set(r.progress)
			m := meter()
			c0, cerr := scrape()
			w.runLoad(ctx, r, o.kneeGrace, o.directShare)
			res = r.result(w.disconnects.Swap(0))
			cpu = newStepCPU(m.report(), res)
			if c1, err := scrape(); err == nil && cerr == nil {
				perMsg = kafkaBetween(c0.kafka, c1.kafka, res.Accepted).RequestsPerMessage
				cql = cassandraBetween(c0.cql, c1.cql, res.Accepted)
				batches = batchMeans(c0.batches, c1.batches)
			}
			// Let what is still queued drain before the next step.
			time.Sleep(time.Second)
		}
		ok := held(res, o.kneeP99)
		k.Steps = append(k.Steps, kneeStep{Rate: rate, Throughput: stats.Round3(res.Throughput), P99: res.Latency.P99, Lost: res.Lost, Errors: res.Errors, Held: ok, LoadAvg: stats.Loadavg(), CPU: cpu, KafkaPerMessage: perMsg, Cassandra: cql, Batches: batches})
		return ok
	}
	k.MsgsPerS = bisect(ctx, start, o.kneeSteps, o.kneeMax, func() int { return len(k.Steps) }, step)
	return k
}

// bisect doubles rate from start while step holds, then bisects between
// the last rate that held and the first that did not, until the bracket
// is within 10%; a failing first step halves instead. It stops once
// steps() reaches maxSteps, and returns the highest rate that held (0 if
// none did).
func bisect(ctx context.Context, start float64, maxSteps int, maxRate float64, steps func() int, step func(rate float64) bool) float64 {
	good, bad := 0.0, 0.0
	rate := start
	for steps() < maxSteps && ctx.Err() == nil {
		if step(rate) {
			good = rate
		} else {
			bad = rate
		}
		switch {
		case bad == 0:
			rate *= 2
		case good == 0:
			rate = math.Round(rate / 2)
		default:
			if bad-good <= 0.1*good {
				return good
			}
			rate = math.Round((good + bad) / 2)
		}
		if rate > maxRate || rate < 1 {
			break
		}
	}
	return good
}

// baselineKnee is the raw franz-go produce→consume knee through the same
// broker under the same criterion (p99 within -knee-p99, nothing lost, no
// error, 95% of the rate carried), searched from start.
func baselineKnee(ctx context.Context, conn []kgo.Opt, o *options, start float64, progress *progressLine) (*kneeResult, error) {
	return pathKnee(ctx, o, start, func(rate float64) (baselineResult, error) {
		return runBaseline(ctx, conn, rate, o.kneeStep, o.kneeGrace, o.payload, progress)
	})
}

// skeletonKnee is the skeleton pipeline's knee (runSkeleton) under the
// same criterion, searched from start.
func skeletonKnee(ctx context.Context, conn []kgo.Opt, o *options, start float64, progress *progressLine) (*kneeResult, error) {
	return pathKnee(ctx, o, start, func(rate float64) (baselineResult, error) {
		return runSkeleton(ctx, conn, o.batchWindow, rate, o.kneeStep, o.kneeGrace, o.payload, progress)
	})
}

// pathKnee searches the knee of a bare Kafka path; run measures one step.
func pathKnee(ctx context.Context, o *options, start float64, run func(rate float64) (baselineResult, error)) (*kneeResult, error) {
	k := &kneeResult{P99LimitMS: o.kneeP99, StepS: o.kneeStep.Seconds()}
	var failed error
	step := func(rate float64) bool {
		b, err := run(rate)
		if err != nil {
			failed = err
			return false
		}
		ok := b.Latency.N > 0 && b.Latency.P99 <= o.kneeP99 && b.Lost == 0 && b.Errors == 0 && b.Throughput >= 0.95*rate
		k.Steps = append(k.Steps, kneeStep{Rate: rate, Throughput: stats.Round3(b.Throughput), P99: b.Latency.P99, Lost: b.Lost, Errors: b.Errors, Held: ok, LoadAvg: stats.Loadavg()})
		return ok
	}
	k.MsgsPerS = bisect(ctx, start, o.kneeSteps, o.kneeMax, func() int {
		if failed != nil {
			return o.kneeSteps
		}
		return len(k.Steps)
	}, step)
	return k, failed
}

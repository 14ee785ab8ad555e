package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
)

// kafkaCounts are the Kafka requests the services' clients made so far,
// by "service/client": the count of franz-go's request histogram, which
// every Parley Kafka client exports.
type kafkaCounts map[string]float64

// kafkaReport is the Kafka requests of a run: by client and per accepted
// message.
type kafkaReport struct {
	Requests           map[string]float64 `json:"requests_by_client"`
	RequestsPerMessage float64            `json:"requests_per_message"`
	PerMessageByClient map[string]float64 `json:"requests_per_message_by_client"`
}

// scrapeKafka reads the counts from every process's /metrics.
func scrapeKafka(ctx context.Context, procs []*cluster.Proc) (kafkaCounts, error) {
	out := kafkaCounts{}
	for _, p := range procs {
		body, err := fetchMetrics(ctx, p.AdminAddr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		parseKafka(body, p.Name, out)
	}
	return out, nil
}

func parseKafka(body []byte, proc string, into kafkaCounts) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "parley_kafka_request_duration_e2e_seconds_count{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		// Two edges are two processes of one service: the process names
		// them apart.
		into[proc+"/"+label(labels, "client")] += n
	}
}

// kafkaBetween is the report of the requests from a to b over msgs
// accepted messages.
func kafkaBetween(a, b kafkaCounts, msgs int64) *kafkaReport {
	r := &kafkaReport{Requests: map[string]float64{}, PerMessageByClient: map[string]float64{}}
	var total float64
	for k, v := range b {
		if d := v - a[k]; d > 0 {
			r.Requests[k] = d
			total += d
			if msgs > 0 {
				r.PerMessageByClient[k] = stats.Round3(d / float64(msgs))
			}
		}
	}
	if msgs > 0 {
		r.RequestsPerMessage = stats.Round3(total / float64(msgs))
	}
	return r
}

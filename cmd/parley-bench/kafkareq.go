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

// counters are the services' request and batch counters at one moment.
type counters struct {
	kafka   kafkaCounts
	batches batchCounts
	cql     cqlCounts
}

// scrapeCounters reads the Kafka request counts, the Cassandra statement
// counts and the batch sizes from every process's /metrics.
func scrapeCounters(ctx context.Context, procs []*cluster.Proc) (counters, error) {
	c := counters{kafka: kafkaCounts{}, batches: batchCounts{}}
	for _, p := range procs {
		body, err := fetchMetrics(ctx, p.AdminAddr)
		if err != nil {
			return counters{}, fmt.Errorf("%s: %w", p.Name, err)
		}
		parseKafka(body, p.Name, c.kafka)
		parseBatches(body, c.batches)
		parseCQL(body, &c.cql)
	}
	return c, nil
}

// cqlCounts are the Cassandra statements and requests the services sent
// so far, writes and reads (select_ ops) apart.
type cqlCounts struct {
	WriteStatements, WriteRequests, ReadStatements, ReadRequests float64
}

func parseCQL(body []byte, into *cqlCounts) {
	eachSample(body, func(name, labels string, n float64) {
		read := strings.HasPrefix(label(labels, "op"), "select_")
		switch {
		case name == "parley_cassandra_query_seconds_count" && read:
			into.ReadRequests += n
		case name == "parley_cassandra_query_seconds_count":
			into.WriteRequests += n
		case name == "parley_cassandra_statements_total" && read:
			into.ReadStatements += n
		case name == "parley_cassandra_statements_total":
			into.WriteStatements += n
		}
	})
}

// cassandraReport is the Cassandra work of a run per accepted message.
type cassandraReport struct {
	StatementsPerMessage     float64 `json:"statements_per_message"`
	RequestsPerMessage       float64 `json:"requests_per_message"`
	ReadStatementsPerMessage float64 `json:"read_statements_per_message"`
}

// cassandraBetween is the report from a to b over msgs accepted messages;
// nil without messages.
func cassandraBetween(a, b cqlCounts, msgs int64) *cassandraReport {
	if msgs <= 0 {
		return nil
	}
	per := func(x, y float64) float64 { return stats.Round3((y - x) / float64(msgs)) }
	return &cassandraReport{
		StatementsPerMessage:     per(a.WriteStatements, b.WriteStatements),
		RequestsPerMessage:       per(a.WriteRequests, b.WriteRequests),
		ReadStatementsPerMessage: per(a.ReadStatements, b.ReadStatements),
	}
}

// batchCounts are the services' batch-size histograms summed over the
// processes, by kind (commands_per_txn, events_per_apply,
// deliveries_per_push, events_per_frame): items and batches so far.
type batchCounts map[string]struct{ Items, Batches float64 }

func parseBatches(body []byte, into batchCounts) {
	eachSample(body, func(name, labels string, n float64) {
		kind := label(labels, "kind")
		if kind == "" || name != "parley_batch_size_sum" && name != "parley_batch_size_count" {
			return
		}
		c := into[kind]
		if name == "parley_batch_size_count" {
			c.Batches += n
		} else {
			c.Items += n
		}
		into[kind] = c
	})
}

// batchMeans is the mean batch of each kind from a to b: items per batch.
func batchMeans(a, b batchCounts) map[string]float64 {
	out := map[string]float64{}
	for kind, cb := range b {
		if n := cb.Batches - a[kind].Batches; n > 0 {
			out[kind] = stats.Round3((cb.Items - a[kind].Items) / n)
		}
	}
	return out
}

func parseKafka(body []byte, proc string, into kafkaCounts) {
	eachSample(body, func(name, labels string, n float64) {
		if name == "parley_kafka_request_duration_e2e_seconds_count" {
			// Two edges are two processes of one service: the process
			// names them apart.
			into[proc+"/"+label(labels, "client")] += n
		}
	})
}

// eachSample calls f with every sample of a Prometheus text page that has
// labels: its metric name, its labels (between the braces) and its value.
func eachSample(body []byte, f func(name, labels string, value float64)) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), "{")
		if !ok || strings.HasPrefix(name, "#") {
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
		f(name, labels, n)
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

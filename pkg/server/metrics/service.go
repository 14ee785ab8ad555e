package metrics

import (
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"google.golang.org/grpc"
)

// Stages of an event, each measured from the time ingest accepted its
// command (see ObserveStage) to the moment the service named did its part.
const (
	StageSequenced = "sequenced" // ingest: the transaction holding the event committed
	StagePersisted = "persisted" // persistence: the batch holding it was applied to the store
	StagePushed    = "pushed"    // fan-out: the Push carrying it returned
	StageWritten   = "written"   // edge: the frame carrying it was written to a socket
)

// Kinds of batch sizes.
const (
	BatchCommandsPerTxn    = "commands_per_txn"    // ingest: commands decided in one transaction
	BatchEventsPerApply    = "events_per_apply"    // persistence: records applied to the store at once
	BatchDeliveriesPerPush = "deliveries_per_push" // fan-out: deliveries in one Push to one edge
	BatchEventsPerFrame    = "events_per_frame"    // edge: events in one frame written to a socket
)

// Service is what one service measures beyond its own counters: the
// families every service shares, on the service's registry and labelled
// service="name". Its gRPC and Kafka parts register on first use, so a
// service exports only those it has.
type Service struct {
	name string
	reg  *prometheus.Registry

	stages  *prometheus.HistogramVec
	batches *prometheus.HistogramVec
	// Lag is the consumer lag of the partitions the service reads.
	Lag *Lag

	serverOnce sync.Once
	server     *grpcprom.ServerMetrics
	clientOnce sync.Once
	client     *grpcprom.ClientMetrics
}

// ForService registers parley_build_info and the shared families of
// service on reg.
func ForService(reg *prometheus.Registry, service string) *Service {
	labels := prometheus.Labels{"service": service}
	m := &Service{
		name: service, reg: reg,
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_event_stage_seconds", ConstLabels: labels,
			Help: "Seconds from ingest accepting an event's command to a stage of the event: sequenced, persisted, pushed, written (see docs/ARCHITECTURE.md, Metrics).",
			// 1 ms to about 65 s: a hop takes milliseconds, and a
			// backlog after an outage minutes.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}, []string{"stage"}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_batch_size", ConstLabels: labels,
			Help:    "Items per batch at each hop that batches: commands_per_txn, events_per_apply, deliveries_per_push, events_per_frame.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}, []string{"kind"}),
		Lag: newLag(labels),
	}
	registerBuild(reg, service, BuildOf())
	reg.MustRegister(m.stages, m.batches, m.Lag.gauge)
	return m
}

// Stage is the histogram of one stage; the series exists from this call.
func (m *Service) Stage(stage string) prometheus.Observer { return m.stages.WithLabelValues(stage) }

// BatchSize is the histogram of one kind of batch; the series exists from
// this call.
func (m *Service) BatchSize(kind string) prometheus.Observer {
	return m.batches.WithLabelValues(kind)
}

// ObserveStage observes the seconds from accepted to now on o. Hosts'
// clocks differ, so a negative span (now before accepted) counts as 0
// rather than being dropped: the event did reach the stage. A zero
// accepted (an event without a time) is not observed.
func ObserveStage(o prometheus.Observer, accepted, now time.Time) {
	if accepted.IsZero() || accepted.Unix() <= 0 {
		return
	}
	o.Observe(max(now.Sub(accepted), 0).Seconds())
}

// GRPCServer is the options that measure a gRPC server's calls:
// grpc_server_handled_total, grpc_server_handling_seconds and the
// started and message counters of
// github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus.
func (m *Service) GRPCServer() []grpc.ServerOption {
	m.serverOnce.Do(func() {
		m.server = grpcprom.NewServerMetrics(
			grpcprom.WithServerCounterOptions(grpcprom.WithConstLabels(prometheus.Labels{"service": m.name})),
			grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramConstLabels(prometheus.Labels{"service": m.name})),
		)
		m.reg.MustRegister(m.server)
	})
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.server.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.server.StreamServerInterceptor()),
	}
}

// GRPCClient is the dial options that measure a client's calls:
// grpc_client_handled_total, grpc_client_handling_seconds and the started
// and message counters. Every connection of the service shares them.
func (m *Service) GRPCClient() []grpc.DialOption {
	m.clientOnce.Do(func() {
		m.client = grpcprom.NewClientMetrics(
			grpcprom.WithClientCounterOptions(grpcprom.WithConstLabels(prometheus.Labels{"service": m.name})),
			grpcprom.WithClientHandlingTimeHistogram(grpcprom.WithHistogramConstLabels(prometheus.Labels{"service": m.name})),
		)
		m.reg.MustRegister(m.client)
	})
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(m.client.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(m.client.StreamClientInterceptor()),
	}
}

// Kafka is the option that measures one Kafka client with franz-go's kprom
// plugin: parley_kafka_connects_total, parley_kafka_write_bytes_total,
// parley_kafka_read_bytes_total, parley_kafka_request_duration_e2e_seconds
// and the rest, labelled service and client. client must be unique among
// the service's live Kafka clients: kprom registers its families when the
// client starts and unregisters them when it closes, and two clients with
// the same labels would collide.
func (m *Service) Kafka(client string) kgo.Opt {
	return kgo.WithHooks(kprom.NewMetrics("parley",
		kprom.Registerer(m.reg),
		kprom.Subsystem("kafka"),
		kprom.WithStaticLabel(prometheus.Labels{"service": m.name, "client": client}),
		kprom.Histograms(kprom.RequestDurationE2E),
	))
}

package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaClientAgain: a Kafka client made again with the same option
// (the sequencer renews its session after a failed transaction) measures
// on the same registry: the first client's families leave with it, so
// the second's do not collide with them.
func TestKafkaClientAgain(t *testing.T) {
	brokers, _ := topicstest.Cluster(t, 1)
	reg := NewRegistry()
	opt := ForService(reg, "ingest").Kafka("sequencer")
	for i := range 2 {
		cl, err := kgo.NewClient(append(topics.ClientOpts(brokers), opt)...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = cl.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		series := gatherOne(t, reg, "parley_kafka_connects_total")
		if len(series) == 0 || labels(series[0])["client"] != "sequencer" || labels(series[0])["service"] != "ingest" || series[0].GetCounter().GetValue() == 0 {
			t.Fatalf("client %d: parley_kafka_connects_total = %v", i, series)
		}
		cl.Close()
	}
}

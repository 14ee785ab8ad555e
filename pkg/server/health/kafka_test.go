package health_test

import (
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaReadiness: readiness fails for a consumer outside its group,
// holds for one in it while Kafka answers, and names Kafka once the
// cluster is gone.
func TestKafkaReadiness(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics.Events))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(append(topics.ClientOpts(c.ListenAddrs()), kgo.ConsumerGroup("g"), kgo.ConsumeTopics(topics.Events))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var p health.Probe
	p.SetReady(true)
	p.NeedKafka(t.Context(), cl)
	p.NeedGroup("consumer group", func() *kgo.Client { return cl })

	wait := func(what string, ok func(error) bool) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if err = p.NotReady(); ok(err) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("readiness not %s after 30s: %v", what, err)
			}
		}
	}
	// A consumer that cannot reach its group is not in it.
	dead, err := kgo.NewClient(append(topics.ClientOpts([]string{"127.0.0.1:1"}), kgo.ConsumerGroup("g"), kgo.ConsumeTopics(topics.Events))...)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	var q health.Probe
	q.SetReady(true)
	q.NeedGroup("consumer group", func() *kgo.Client { return dead })
	if err := q.NotReady(); err == nil || err.Error() != "consumer group: not in the consumer group yet" {
		t.Fatalf("readiness of a consumer outside its group: %v", err)
	}
	wait("ready", func(err error) bool { return err == nil })
	c.Close()
	wait("naming kafka", func(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "kafka: ") })
}

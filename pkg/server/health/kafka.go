package health

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// PingEvery is how often the readiness pings (Kafka, Cassandra) ask.
const PingEvery = 5 * time.Second

// NeedKafka makes readiness follow cl's reach to the brokers, pinged
// every PingEvery until ctx ends.
func (p *Probe) NeedKafka(ctx context.Context, cl *kgo.Client) {
	p.Need("kafka", Ping(ctx, PingEvery, cl.Ping).Err)
}

// NeedGroup makes readiness wait until cl, a group consumer, is a member
// of its group (it has joined and holds a generation; its assignment,
// possibly empty, is settled).
func (p *Probe) NeedGroup(name string, cl func() *kgo.Client) {
	p.Need(name, func() error {
		if _, gen := cl().GroupMetadata(); gen < 0 {
			return errors.New("not in the consumer group yet")
		}
		return nil
	})
}

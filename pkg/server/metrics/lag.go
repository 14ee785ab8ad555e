package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Lag is parley_consumer_lag{group,topic,partition}: how many records a
// consumer is behind the high watermark of each partition it reads, as of
// its last fetch from that partition. It is measured from what fetches
// return, so it costs no request of its own.
//
// A read-committed reader of a transactional topic (parley.events.v1)
// counts the commit marker after the last transaction as one record:
// markers are offsets but never returned, so a caught-up consumer of the
// events reads 1, not 0.
type Lag struct {
	gauge *prometheus.GaugeVec
}

func newLag(labels prometheus.Labels) *Lag {
	return &Lag{gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_consumer_lag", ConstLabels: labels,
		Help: "Records behind the partition's high watermark as of the consumer's last fetch from it (a transaction's commit marker counts as one).",
	}, []string{"group", "topic", "partition"})}
}

// Observe sets the lag of every partition fetches returned records of.
// group names the consumer: its Kafka group, or for a consumer that
// assigns itself partitions the name it goes by.
func (l *Lag) Observe(group string, fetches kgo.Fetches) {
	if l == nil {
		return
	}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 || p.HighWatermark < 0 {
			return
		}
		next := p.Records[len(p.Records)-1].Offset + 1
		l.gauge.WithLabelValues(group, p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(max(p.HighWatermark-next, 0)))
	})
}

// Forget drops the series of partitions the consumer no longer owns
// (revoked or lost), so that the member that owns them now is the only
// one reporting them.
func (l *Lag) Forget(group string, partitions map[string][]int32) {
	if l == nil {
		return
	}
	for topic, ps := range partitions {
		for _, p := range ps {
			l.gauge.DeleteLabelValues(group, topic, strconv.Itoa(int(p)))
		}
	}
}

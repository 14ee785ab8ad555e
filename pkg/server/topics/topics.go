// Package topics names Parley's Kafka topics, provisions them and holds the
// client options every service starts from.
package topics

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic names. Every topic is keyed by conversation id, and commands,
// events and outcomes must have the same partition count: the sequencer
// writes a command's event and outcome to the command's partition number.
// DeadLetter holds the records a consumer could not use, unchanged; its
// partition count is free.
const (
	Commands   = "parley.commands.v1"
	Events     = "parley.events.v1"
	Outcomes   = "parley.outcomes.v1"
	DeadLetter = "parley.deadletter.v1"
	// Presence is the compacted log of sessions, node heartbeats and last
	// seen times that presence rebuilds its state from.
	Presence = "parley.presence.v1"
	// Notifications holds, keyed by user, the messages for users with no
	// connected device that fan-out's notifier delivers to a webhook
	// (logv1.NotificationRecord); its partition count is free.
	Notifications = "parley.notifications.v1"
)

// UserShard maps a user to one of n shards. The partition of a user's
// presence records is UserShard(user, partitions) and the presence
// instance that owns them UserShard(user, instances); the two agree because
// the instance count must divide the partition count.
func UserShard(user string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(user))
	return int(h.Sum32() % uint32(n))
}

// Spec sizes the topics.
type Spec struct {
	Partitions        int32
	ReplicationFactor int16
	// MinInsyncReplicas is 2 in production (with RF 3) so that acks=all
	// survives one broker loss; 1 locally.
	MinInsyncReplicas int
}

// LocalSpec is for one broker on a laptop or in tests.
var LocalSpec = Spec{Partitions: 8, ReplicationFactor: 1, MinInsyncReplicas: 1}

// Ensure creates missing topics and checks that existing ones have the
// partition count the sequencer relies on.
func Ensure(ctx context.Context, adm *kadm.Client, spec Spec) error {
	minISR := strconv.Itoa(spec.MinInsyncReplicas)
	// The event log is the source of truth and is never deleted; outcomes
	// only need to live until the waiting Submit has read them; dead letters
	// long enough for someone to look at them after a holiday.
	configs := map[string]map[string]*string{
		Commands:   {"min.insync.replicas": &minISR, "retention.ms": ptr(strconv.FormatInt((7 * 24 * time.Hour).Milliseconds(), 10))},
		Events:     {"min.insync.replicas": &minISR, "retention.ms": ptr("-1")},
		Outcomes:   {"min.insync.replicas": &minISR, "retention.ms": ptr(strconv.FormatInt(time.Hour.Milliseconds(), 10))},
		DeadLetter: {"min.insync.replicas": &minISR, "retention.ms": ptr(strconv.FormatInt((30 * 24 * time.Hour).Milliseconds(), 10))},
		// Compaction keeps the latest record per session, node and user:
		// the state, not its history. Tombstones of ended sessions stay a
		// day, so an instance replaying meanwhile still sees them.
		Presence: {"min.insync.replicas": &minISR, "cleanup.policy": ptr("compact"), "delete.retention.ms": ptr(strconv.FormatInt((24 * time.Hour).Milliseconds(), 10))},
		// A notification is worth little after a day.
		Notifications: {"min.insync.replicas": &minISR, "retention.ms": ptr(strconv.FormatInt((24 * time.Hour).Milliseconds(), 10))},
	}
	for _, name := range []string{Commands, Events, Outcomes, DeadLetter, Presence, Notifications} {
		if err := CreateIfMissing(ctx, adm, name, spec.Partitions, spec.ReplicationFactor, configs[name]); err != nil {
			return err
		}
	}
	// A topic just created may take a moment to show in metadata.
	for attempt := 0; ; attempt++ {
		err := checkPartitions(ctx, adm)
		if err == nil || attempt == 50 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CreateIfMissing creates a topic; one that already exists is left as it
// is, whatever its settings.
func CreateIfMissing(ctx context.Context, adm *kadm.Client, name string, partitions int32, replicationFactor int16, configs map[string]*string) error {
	resp, err := adm.CreateTopic(ctx, partitions, replicationFactor, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	return nil
}

func checkPartitions(ctx context.Context, adm *kadm.Client) error {
	details, err := adm.ListTopics(ctx, Commands, Events, Outcomes, DeadLetter, Presence, Notifications)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	// DeadLetter only has to exist: consumers produce to it before they
	// commit, so a missing one would stall them.
	if d, ok := details[DeadLetter]; !ok || d.Err != nil {
		return fmt.Errorf("describe topic %s: %v", DeadLetter, d.Err)
	}
	for _, name := range []string{Presence, Notifications} {
		if d, ok := details[name]; !ok || d.Err != nil {
			return fmt.Errorf("describe topic %s: %v", name, d.Err)
		}
	}
	want := -1
	for _, name := range []string{Commands, Events, Outcomes} {
		d, ok := details[name]
		if !ok || d.Err != nil {
			return fmt.Errorf("describe topic %s: %v", name, d.Err)
		}
		if want == -1 {
			want = len(d.Partitions)
		} else if len(d.Partitions) != want {
			return fmt.Errorf("topic %s has %d partitions but %s has %d: they must match", name, len(d.Partitions), Commands, want)
		}
	}
	return nil
}

func ptr(s string) *string { return &s }

// ClientOpts are the options every Parley Kafka client starts from:
// idempotent acks=all producing (franz-go's default) and fetches that return
// as soon as a record is there, followed by security, the connection's TLS
// and SASL options (kafkaconf.Config.Opts; none for plaintext).
func ClientOpts(brokers []string, security ...kgo.Opt) []kgo.Opt {
	return append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, security...)
}

// GroupOpts joins group, as a static member when instanceID is set, and
// appends extra. Static members keep their partitions across a restart
// (a StatefulSet pod, or a process killed and started again) without a
// rebalance; the cost is that a member that never returns holds its
// partitions until the session timeout.
func GroupOpts(group, instanceID string, extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.ConsumerGroup(group), kgo.SessionTimeout(15 * time.Second)}
	if instanceID != "" {
		opts = append(opts, kgo.InstanceID(instanceID))
	}
	return append(opts, extra...)
}

// WaitReady pings the cluster until it answers or ctx ends.
func WaitReady(ctx context.Context, cl *kgo.Client) error {
	if err := ping(ctx, cl); err != nil {
		return fmt.Errorf("kafka not reachable: %w", err)
	}
	return nil
}

// StartupTimeout is how long a service waits by default, when it starts,
// for Kafka (and Cassandra) to answer: long enough for a cluster started
// beside it, short enough that a wrong address ends in an error rather
// than in a process that waits, silent and unready, for ever.
const StartupTimeout = 60 * time.Second

// WaitReadyWithin is WaitReady bounded by timeout (StartupTimeout if 0),
// for a service that cannot start without Kafka: its error names the seed
// brokers it could not reach. When ctx ends first it returns ctx's error.
func WaitReadyWithin(ctx context.Context, cl *kgo.Client, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = StartupTimeout
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := ping(wctx, cl)
	if err == nil || ctx.Err() != nil {
		return ctx.Err()
	}
	seeds, _ := cl.OptValue(kgo.SeedBrokers).([]string)
	return fmt.Errorf("kafka at %s not reachable within %s: %w", strings.Join(seeds, ","), timeout, err)
}

// ping pings until the cluster answers, nil, or ctx ends, the last
// reason it did not.
func ping(ctx context.Context, cl *kgo.Client) error {
	var last error
	for {
		err := cl.Ping(ctx)
		if err == nil {
			return nil
		}
		// A ping that ctx cut short says nothing about the cluster; the
		// one before it does (a refused connection, say).
		if last == nil || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

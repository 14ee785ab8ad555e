package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/kafkaconf"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicsCmd creates Parley's topics. Production: -replication-factor 3
// -min-isr 2, so acks=all survives the loss of one broker.
func topicsCmd(args []string) int {
	fs := flag.NewFlagSet("parley topics", flag.ExitOnError)
	brokers := fs.String("brokers", daemon.Env("PARLEY_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers (PARLEY_KAFKA_BROKERS)")
	partitions := fs.Int("partitions", int(topics.LocalSpec.Partitions), "partitions per topic (the same for all three)")
	rf := fs.Int("replication-factor", int(topics.LocalSpec.ReplicationFactor), "replication factor (3 in production)")
	minISR := fs.Int("min-isr", topics.LocalSpec.MinInsyncReplicas, "min.insync.replicas (2 in production)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	kafkaSec := kafkaconf.Register(fs)
	daemon.Parse(fs, args)
	sec, err := kafkaSec.Opts()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cl, err := kgo.NewClient(topics.ClientOpts(daemon.List(*brokers), sec...)...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cl.Close()
	if err := topics.WaitReady(ctx, cl); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	spec := topics.Spec{Partitions: int32(*partitions), ReplicationFactor: int16(*rf), MinInsyncReplicas: *minISR}
	if err := topics.Ensure(ctx, kadm.NewClient(cl), spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("topics ready: %s %s %s %s %s %s (%d partitions, RF %d, min ISR %d)\n", topics.Commands, topics.Events, topics.Outcomes, topics.DeadLetter, topics.Presence, topics.Notifications, spec.Partitions, spec.ReplicationFactor, spec.MinInsyncReplicas)
	return 0
}

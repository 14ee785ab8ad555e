// Command parley-chaos is Parley's chaos run (`make chaos`). It starts two
// instances of every service as processes on the local real stack,
// connects devices through both edges with the Go SDK (which reconnects
// and resumes by itself) and has them send continuously into direct and
// group conversations, retrying every unanswered message with its client
// message id, while it kills -9 a random service instance every few
// seconds (started again after a pause), kills the edge holding the most
// clients, restarts the Kafka broker and stops Cassandra for a while.
// Then it checks, per device, that nothing acknowledged was lost, nothing
// was delivered twice or out of order, and that every device converged on
// exactly the history persistence serves. It writes a JSON report, prints
// a one-line summary and exits non-zero if a guarantee broke, a device did
// not converge or a fault kind was not injected.
//
// It stops and starts the shared Kafka and Cassandra through
// deployments/local/stack.sh, so it runs only with PARLEY_STACK_CONTROL=1
// (the Makefile sets it) and alone on the stack.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/pkg/server/daemon"
)

type options struct {
	duration, killEvery, warmup, settle, converge, cassandraDown, waitForeign time.Duration
	devices                                                                   int
	rate                                                                      float64
	report, brokers, cassandra, keyspace, stackScript                         string
	short, keepLogs                                                           bool
	seed                                                                      uint64
}

// shortDefaults are the -short run's: about two minutes in all, every
// fault kind still injected.
var shortDefaults = map[string]string{
	"duration": "60s", "devices": "60", "rate": "20", "warmup": "3s", "settle": "5s", "converge": "45s",
}

func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("parley-chaos", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 5*time.Minute, "how long the devices send while faults are injected")
	fs.IntVar(&o.devices, "devices", 200, "devices (SDK clients), two per user, one on each edge")
	fs.DurationVar(&o.killEvery, "kill-every", 5*time.Second, "kill -9 a random service instance this often")
	fs.Float64Var(&o.rate, "rate", 25, "messages per second, all devices together")
	fs.StringVar(&o.report, "report", "bench/results/chaos.json", "where to write the JSON report")
	fs.BoolVar(&o.short, "short", false, "the short run (make test): "+fmtDefaults(shortDefaults)+" unless given")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "sending before the first fault")
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "sending after the faults, so the last one's recovery is measured")
	fs.DurationVar(&o.converge, "converge", 90*time.Second, "after the last send is answered, how long every device may take to hold exactly what history holds")
	fs.DurationVar(&o.cassandraDown, "cassandra-down", 20*time.Second, "how long Cassandra stays stopped")
	fs.DurationVar(&o.waitForeign, "wait-foreign", 10*time.Minute, "wait this long for other Parley services on the machine (they share the consumer groups) to stop")
	fs.StringVar(&o.brokers, "brokers", daemon.Env("PARLEY_KAFKA_BROKERS", "127.0.0.1:19092"), "Kafka of the local stack (PARLEY_KAFKA_BROKERS)")
	fs.StringVar(&o.cassandra, "cassandra", daemon.Env("PARLEY_CASSANDRA_HOSTS", "127.0.0.1:19042"), "Cassandra of the local stack (PARLEY_CASSANDRA_HOSTS)")
	fs.StringVar(&o.keyspace, "keyspace", "parley_chaos", "Cassandra keyspace the run's persistence writes")
	fs.StringVar(&o.stackScript, "stack", "deployments/local/stack.sh", "the local stack's control script")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep the services' logs after a run that passed (a failed run always keeps them)")
	seed := fs.String("seed", "", "seed of the fault schedule and the senders (random if empty; the report names it)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.short {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range shortDefaults {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, err
				}
			}
		}
	}
	if *seed == "" {
		o.seed = uint64(time.Now().UnixNano())
	} else {
		var err error
		if o.seed, err = strconv.ParseUint(*seed, 10, 64); err != nil {
			return nil, fmt.Errorf("seed %q: %w", *seed, err)
		}
	}
	switch {
	case o.devices < 2*2*groupSize || o.devices%2 != 0:
		return nil, fmt.Errorf("devices %d: want an even number, at least %d", o.devices, 2*2*groupSize)
	case o.rate <= 0:
		return nil, fmt.Errorf("rate %v: want a positive rate", o.rate)
	case o.killEvery <= 0 || o.duration < 4*o.killEvery:
		return nil, fmt.Errorf("want -kill-every > 0 and -duration at least four of them")
	// The Cassandra stop begins at half the window and must end in it.
	case o.duration < 2*o.cassandraDown+10*time.Second:
		return nil, fmt.Errorf("duration %s: want at least twice -cassandra-down plus 10s", o.duration)
	}
	return o, nil
}

func fmtDefaults(m map[string]string) string {
	var parts []string
	for _, k := range []string{"duration", "devices", "rate", "warmup", "settle", "converge"} {
		parts = append(parts, "-"+k+" "+m[k])
	}
	return strings.Join(parts, ", ")
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-chaos:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	rep, err := run(ctx, o, log)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-chaos:", err)
		os.Exit(1)
	}
	fmt.Println(rep.Summary)
	if !rep.OK {
		os.Exit(1)
	}
}

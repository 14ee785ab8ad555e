package integration

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartupFailures: every service binary that cannot start exits
// non-zero, within a bound, with one line saying why and where: a port
// it must bind is held, a secret is refused, Kafka or Cassandra does not
// answer within PARLEY_STARTUP_TIMEOUT. It needs no stack: what it points at is
// closed on purpose.
func TestStartupFailures(t *testing.T) {
	bin := binaries(t)
	taken := freeAddr(t)
	held, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	// Not defer: the parallel subtests run after this function returns.
	t.Cleanup(func() { held.Close() })
	// Reserved by freeport and never listened on: connections are refused.
	kafka, cassandra, presence := freeAddr(t), freeAddr(t), freeAddr(t)
	const startup = 2 * time.Second
	inUse := []string{taken, "address already in use"}
	noKafka := []string{"kafka at " + kafka + " not reachable within 2s"}

	type tc struct {
		name, bin string
		args      []string
		want      []string
		// waits: the exit comes after the startup timeout, not before.
		waits bool
	}
	var cases []tc
	// kafkaService adds the cases every service on Kafka shares; extra
	// gives each its own further flags.
	kafkaService := func(name string, grpc bool, extra func() []string) {
		args := func(grpcAddr, httpAddr string) []string {
			a := append([]string{"-http", httpAddr, "-brokers", kafka}, extra()...)
			if grpc {
				a = append(a, "-grpc", grpcAddr)
			}
			return a
		}
		cases = append(cases,
			tc{name: name + "/http taken", bin: name, args: args(freeAddr(t), taken), want: inUse},
			tc{name: name + "/kafka unreachable", bin: name, args: args(freeAddr(t), freeAddr(t)), want: noKafka, waits: true})
		if grpc {
			cases = append(cases, tc{name: name + "/grpc taken", bin: name, args: args(taken, freeAddr(t)), want: inUse})
		}
	}
	none := func() []string { return nil }
	kafkaService("parley-ingest", true, none)
	kafkaService("parley-fanout", false, func() []string { return []string{"-presence", presence} })
	kafkaService("parley-presence", true, none)
	// A store folder each: the cases run side by side.
	kafkaService("parley-persistence", true, func() []string { return []string{"-pebble-dir", t.TempDir()} })
	cases = append(cases,
		tc{name: "parley-persistence/cassandra unreachable", bin: "parley-persistence", waits: true,
			args: []string{"-http", freeAddr(t), "-grpc", freeAddr(t), "-brokers", kafka, "-store", "cassandra", "-cassandra-hosts", cassandra},
			want: []string{"cassandra at " + cassandra + " not reachable within 2s"}},
		tc{name: "parley-edge/http taken", bin: "parley-edge", args: []string{"-http", taken, "-grpc", freeAddr(t), "-jwt-secret", secret}, want: inUse},
		tc{name: "parley-edge/grpc taken", bin: "parley-edge", args: []string{"-http", freeAddr(t), "-grpc", taken, "-jwt-secret", secret}, want: inUse},
		tc{name: "parley-edge/admin taken", bin: "parley-edge", args: []string{"-http", freeAddr(t), "-grpc", freeAddr(t), "-admin", taken, "-jwt-secret", secret},
			want: []string{"admin address", taken, "address already in use"}},
		tc{name: "parley-edge/jwt secret too short", bin: "parley-edge", args: []string{"-http", freeAddr(t), "-grpc", freeAddr(t), "-jwt-secret", "short"},
			want: []string{"jwt secret must be at least 16 bytes"}},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The processes mostly wait: side by side they take the
			// startup timeout once, not once each.
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, c.bin), c.args...)
			cmd.Env = append(os.Environ(), "PARLEY_LOG_LEVEL=info", "PARLEY_STARTUP_TIMEOUT="+startup.String())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("still running after %s:\n%s", took.Round(time.Millisecond), &out)
			}
			if exit := (*exec.ExitError)(nil); !errors.As(err, &exit) || exit.ExitCode() <= 0 {
				t.Fatalf("exit: %v, want a non-zero exit code:\n%s", err, &out)
			}
			switch {
			case c.waits && (took < startup || took > startup+10*time.Second):
				t.Errorf("exited after %s, want soon after the %s startup timeout", took.Round(time.Millisecond), startup)
			case !c.waits && took > 10*time.Second:
				t.Errorf("exited after %s, want at once", took.Round(time.Millisecond))
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 1 || strings.Contains(out.String(), "panic") || strings.Contains(out.String(), "goroutine ") {
				t.Fatalf("output of %d lines, want one line and no panic:\n%s", len(lines), &out)
			}
			for _, w := range c.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("output %q does not say %q", lines[0], w)
				}
			}
		})
	}
}

package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/freeport"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/tracing"
)

// TestRunWithMetricsServesThemBesideTheProbes runs a service whose run
// function reads its own /metrics and /healthz, then returns.
func TestRunWithMetricsServesThemBesideTheProbes(t *testing.T) {
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "parley_up 1\n") })
	got := map[string]string{}
	var probe health.Probe
	probe.SetReady(true)
	code := RunWithMetrics(slog.New(slog.DiscardHandler), addr, &probe, metrics, func(ctx context.Context) error {
		for _, path := range []string{"/metrics", "/healthz"} {
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				resp, err := http.Get("http://" + addr + path)
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got[path] = string(b)
				break
			}
		}
		return nil
	})
	if code != 0 || got["/metrics"] != "parley_up 1\n" || got["/healthz"] != "ok\n" {
		t.Fatalf("exit %d, served %q", code, got)
	}
}

// TestRunFailsOnTakenHealthAddress: a health address another process holds
// fails the start with one line naming it, and run is never called. (It
// once ran the service, then stopped it with exit code 0.)
func TestRunFailsOnTakenHealthAddress(t *testing.T) {
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var out bytes.Buffer
	ran := false
	code := Run(slog.New(slog.NewTextHandler(&out, nil)), addr, nil, func(ctx context.Context) error {
		ran = true
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
		return nil
	})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if code == 0 || ran || len(lines) != 1 || !strings.Contains(lines[0], addr) || !strings.Contains(lines[0], "address already in use") {
		t.Fatalf("exit %d, run called %v, log:\n%s\nwant a non-zero exit, no run, one line naming %s in use", code, ran, out.String(), addr)
	}
}

func TestNewLoggerFormats(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("below the level")
	log.WarnContext(tracing.WithRequestID(context.Background(), "r1"), "kept", "k", "v")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("json format wrote %q: %v", buf.String(), err)
	}
	if line["msg"] != "kept" || line["k"] != "v" || line["request_id"] != "r1" {
		t.Fatalf("line %v", line)
	}
	buf.Reset()
	if log, err = NewLogger(&buf, "text", "info"); err != nil {
		t.Fatal(err)
	}
	log.Info("plain", "k", "v")
	if !strings.Contains(buf.String(), "msg=plain k=v") {
		t.Fatalf("text format wrote %q", buf.String())
	}
	if _, err := NewLogger(&buf, "xml", "info"); err == nil {
		t.Fatal("format xml accepted")
	}
	if _, err := NewLogger(&buf, "json", "loud"); err == nil {
		t.Fatal("level loud accepted")
	}
}

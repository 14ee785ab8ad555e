package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/freeport"
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
	code := RunWithMetrics(slog.New(slog.DiscardHandler), addr, func() bool { return true }, metrics, func(ctx context.Context) error {
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

package platform_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/freeport"
	"github.com/parleychat/parley/services/platform"
)

// TestStartFailsCleanly: a Start that cannot bind its address returns an
// error naming the address (it once panicked on the nil *Platform its error
// path returned), and releases what it had opened: its goroutines end, and
// a Start right after, on the same data folder and Kafka port, succeeds.
func TestStartFailsCleanly(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	kafka, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(kafka)
	kafkaPort, _ := strconv.Atoi(port)
	cfg := platform.Config{DataDir: t.TempDir(), HTTPAddr: held.Addr().String(), KafkaPort: kafkaPort, JWTSecret: secret, Partitions: 4}

	goroutines := runtime.NumGoroutine()
	_, err = platform.Start(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), held.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a taken address: %v, want an error naming %s in use", err, held.Addr())
	}
	// The services it had built (Kafka clients, listeners) are closed too.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the failed Start, %d before:\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
		}
	}

	cfg.HTTPAddr = "127.0.0.1:0"
	p, err := platform.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start after a failed Start: %v (the failed one kept its store or Kafka port?)", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for deadline := time.Now().Add(20 * time.Second); !p.Ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("platform not ready in 20s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

// TestStartRefusesShortSecret: a secret the edge would refuse fails Start
// before anything is started or written.
func TestStartRefusesShortSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, err := platform.Start(t.Context(), platform.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", JWTSecret: []byte("short")})
	if err == nil || !strings.Contains(err.Error(), "at least 16 bytes") {
		t.Fatalf("Start with a 5-byte secret: %v, want the secret refused", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data folder %s: %v, want none created", dir, err)
	}
}

package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/freeport"
)

// TestRunRecoversFromKill: `parley run` killed with SIGKILL in the middle
// of traffic, then started again on its data folder, serves again: a
// scripted conversation passes. (The sequencer's rebuild once waited for
// ever on a transaction the crash left without its marker.)
func TestRunRecoversFromKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the platform twice")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "parley")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// The address must stay free across three restarts.
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "run", "-data", data, "-http", addr)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if resp, err := http.Get("http://" + addr + "/"); err == nil {
				resp.Body.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatal("parley run did not serve within 60 s")
			}
		}
	}
	smoke := func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, bin, "smoke", "-url", "ws://"+addr+"/ws", "-messages", "10", "-timeout", "45s")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}

	// Several kills at different points of the traffic: one of them
	// tends to land inside a transaction's commit.
	for _, after := range []time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond, 3500 * time.Millisecond} {
		run := start()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- smoke(ctx) }()
		time.Sleep(after)
		if err := run.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		run.Wait()
		cancel()
		<-done
	}

	start()
	if err := smoke(t.Context()); err != nil {
		t.Fatalf("after the kill and a restart, the scripted conversation failed: %v", err)
	}
}

package main

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

	"github.com/parleychat/parley/pkg/server/freeport"
)

// TestRunStartupFailures: `parley run` that cannot start exits non-zero
// with one line on stderr saying why. (It once panicked with a nil pointer
// in platform.(*Platform).close and exit code 2.)
func TestRunStartupFailures(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "parley")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	taken, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, http, secret string
		want               []string
	}{
		{"http address taken", taken, "a-secret-long-enough-for-hs256", []string{taken, "address already in use"}},
		{"jwt secret too short", free, "short", []string{"jwt secret", "at least 16 bytes"}},
		// parley run always serves dev tokens, so it keeps to loopback.
		{"dev tokens on every interface", "0.0.0.0:0", "a-secret-long-enough-for-hs256", []string{"refusing dev tokens", "non-loopback", "-insecure-dev"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "run", "-data", filepath.Join(t.TempDir(), "data"), "-http", tc.http, "-admin", "127.0.0.1:0")
			cmd.Env = append(os.Environ(), "PARLEY_JWT_SECRET="+tc.secret, "PARLEY_LOG_LEVEL=info")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("still running after %s; stderr:\n%s", time.Since(start), &stderr)
			}
			if exit := (*exec.ExitError)(nil); !errors.As(err, &exit) || exit.ExitCode() <= 0 {
				t.Fatalf("exit: %v, want a non-zero exit code; stderr:\n%s", err, &stderr)
			}
			checkOneLine(t, stdout.String()+stderr.String(), tc.want...)
		})
	}
}

// checkOneLine fails unless out is one line, naming each of want, with no
// trace of a panic.
func checkOneLine(t *testing.T, out string, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Fatalf("output of %d lines, want one line and no panic:\n%s", len(lines), out)
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("output %q does not say %q", lines[0], w)
		}
	}
}

// TestRunHelpListsJWTSecret: `parley run -h` names PARLEY_JWT_SECRET, which
// no flag carries, and its minimum length.
func TestRunHelpListsJWTSecret(t *testing.T) {
	out, err := exec.Command("go", "run", ".", "run", "-h").CombinedOutput()
	if exit := (*exec.ExitError)(nil); err != nil && !errors.As(err, &exit) {
		t.Fatalf("go run . run -h: %v\n%s", err, out)
	}
	for _, want := range []string{"PARLEY_JWT_SECRET", "at least 16 bytes", "-insecure-dev"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("parley run -h does not say %q:\n%s", want, out)
		}
	}
}

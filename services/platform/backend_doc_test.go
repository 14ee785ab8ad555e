package platform_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"
)

// docExample is a grpcurl command of docs/BACKEND_API.md and the output
// shown after it: JSON (the command succeeds and prints it) or text (every
// line of it appears in what the command prints).
type docExample struct {
	line           int
	command        string
	lang, expected string
}

// docExamples reads every ```sh block that starts with grpcurl, with the
// fenced block that follows it.
func docExamples(t *testing.T, path string) []docExample {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type block struct {
		line       int
		lang, body string
	}
	var blocks []block
	sc := bufio.NewScanner(bytes.NewReader(data))
	var cur *block
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &block{line: n, lang: strings.TrimPrefix(line, "```")}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += line + "\n"
		}
	}
	var out []docExample
	for i, b := range blocks {
		if b.lang != "sh" || !strings.HasPrefix(b.body, "grpcurl ") {
			continue
		}
		if i+1 >= len(blocks) || (blocks[i+1].lang != "json" && blocks[i+1].lang != "text") {
			t.Fatalf("%s:%d: a grpcurl example needs its output in a json or text block after it", path, b.line)
		}
		out = append(out, docExample{line: b.line, command: b.body, lang: blocks[i+1].lang, expected: blocks[i+1].body})
	}
	return out
}

// grpcurlPath is the grpcurl `make test` installs into bin/ (or
// PARLEY_GRPCURL). Without it the test skips, except where the suite must
// run whole (PARLEY_INTEGRATION=require, as in CI).
func grpcurlPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("PARLEY_GRPCURL")
	if path == "" {
		path, _ = filepath.Abs("../../bin/grpcurl")
	}
	if _, err := os.Stat(path); err != nil {
		msg := "grpcurl not found at " + path + ": `make test-all` installs it (GOBIN=$PWD/bin go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4), or set PARLEY_GRPCURL"
		if os.Getenv("PARLEY_INTEGRATION") == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// withoutVolatile drops what differs between runs (event ids, times).
func withoutVolatile(v any) any {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "eventId")
		delete(x, "time")
		for k, e := range x {
			x[k] = withoutVolatile(e)
		}
	case []any:
		for i, e := range x {
			x[i] = withoutVolatile(e)
		}
	}
	return v
}

// TestBackendAPIDocExamples runs every grpcurl example of
// docs/BACKEND_API.md, in order, against a fresh platform serving the
// backend API, and compares what each prints with what the doc shows.
func TestBackendAPIDocExamples(t *testing.T) {
	grpcurl := grpcurlPath(t)
	const token = "doc-example-token-0123456789abcdef0123"
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), BackendAddr: "127.0.0.1:0",
		BackendTokens: []edge.BackendToken{{Name: "my-app", Token: token}}})
	defer stop()
	addr := e.p.Edge.BackendAddr()
	examples := docExamples(t, "../../docs/BACKEND_API.md")
	if len(examples) < 7 {
		t.Fatalf("found %d grpcurl examples in docs/BACKEND_API.md, want one per RPC and the refusals", len(examples))
	}
	for _, ex := range examples {
		cmd := strings.ReplaceAll(ex.command, "127.0.0.1:8090", addr)
		cmd = strings.Replace(cmd, "grpcurl ", grpcurl+" ", 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c := exec.CommandContext(ctx, "bash", "-c", cmd)
		c.Env = append(os.Environ(), "PARLEY_BACKEND_TOKEN="+token)
		got, err := c.CombinedOutput()
		cancel()
		switch ex.lang {
		case "json":
			if err != nil {
				t.Fatalf("docs/BACKEND_API.md:%d: %v\n%s", ex.line, err, got)
			}
			var want, have any
			if err := json.Unmarshal([]byte(ex.expected), &want); err != nil {
				t.Fatalf("docs/BACKEND_API.md:%d: the output shown is not JSON: %v", ex.line, err)
			}
			if err := json.Unmarshal(got, &have); err != nil {
				t.Fatalf("docs/BACKEND_API.md:%d: grpcurl printed no JSON: %v\n%s", ex.line, err, got)
			}
			if !reflect.DeepEqual(withoutVolatile(want), withoutVolatile(have)) {
				t.Errorf("docs/BACKEND_API.md:%d: grpcurl printed\n%s\nthe doc shows\n%s", ex.line, got, ex.expected)
			}
		case "text":
			// A refusal shown must be one: grpcurl exits non-zero.
			refusal := strings.Contains(ex.expected, "ERROR:") || strings.Contains(ex.expected, "rpc error:")
			if refusal != (err != nil) {
				t.Errorf("docs/BACKEND_API.md:%d: refusal shown %v, grpcurl's exit %v\n%s", ex.line, refusal, err, got)
			}
			for _, line := range strings.Split(strings.TrimSpace(ex.expected), "\n") {
				if !strings.Contains(string(got), strings.TrimSpace(line)) {
					t.Errorf("docs/BACKEND_API.md:%d: grpcurl's output lacks %q:\n%s", ex.line, strings.TrimSpace(line), got)
				}
			}
		}
	}
}

package metrics

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGapsCountEachLogOnce: every hole is counted, and only the first of
// each conversation is logged, with the conversation.
func TestGapsCountEachLogOnce(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	g := NewGaps(NewRegistry(), "test")
	g.Report(log, "a", 3, 4)
	g.Report(log, "a", 3, 4)
	g.Report(log, "b", 9, 9)
	if n := testutil.ToFloat64(g.counter); n != 3 {
		t.Fatalf("counted %v holes, want 3", n)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "conversation=a") || !strings.Contains(lines[1], "conversation=b") {
		t.Fatalf("logged %q, want one line for a and one for b", lines)
	}
}

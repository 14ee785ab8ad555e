package ingest

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestDirectIDDocumented: docs/PROTOCOL.md ("Direct conversation ids")
// tells clients how to derive a direct conversation's id; computed the way
// it says, from the namespace it names, the id is the server's, and its
// example is right.
func TestDirectIDDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(doc)), " ")
	m := regexp.MustCompile("\\*\\*Direct conversation ids\\.\\*\\*.*?in the namespace `([0-9a-f-]{36})` of the two user ids in byte order joined by one NUL byte\\. " +
		"For alice and bob the name is `alice\\\\x00bob` and the id `([0-9a-f-]{36})`").FindStringSubmatch(text)
	if m == nil {
		t.Fatal("docs/PROTOCOL.md no longer states the derivation this test checks: update both together")
	}
	ns, err := uuid.Parse(m[1])
	if err != nil {
		t.Fatalf("documented namespace %q: %v", m[1], err)
	}
	documented := func(a, b string) string {
		if b < a {
			a, b = b, a
		}
		return uuid.NewSHA1(ns, []byte(a+"\x00"+b)).String()
	}
	if got := documented("alice", "bob"); got != m[2] {
		t.Errorf("the documented example id is %s, computed %s", m[2], got)
	}
	for _, p := range [][2]string{{"alice", "bob"}, {"bob", "alice"}, {"Zed", "amy"}, {"a@example.com", "a.b_c-d"}} {
		if got, want := documented(p[0], p[1]), DirectID(p[0], p[1]); got != want {
			t.Errorf("documented id of (%s, %s) = %s, the server's %s", p[0], p[1], got, want)
		}
	}
}

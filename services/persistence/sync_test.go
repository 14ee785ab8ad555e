package persistence

import (
	"testing"
	"time"
)

func TestSyncToken(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_123)
	since, err := parseSyncToken(syncToken(now, 0))
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(-defaultSyncMargin); !since.Equal(want) {
		t.Fatalf("token reaches back to %v, want %v", since, want)
	}
	if since, err := parseSyncToken(""); err != nil || !since.IsZero() {
		t.Fatalf("empty token = %v, %v; want everything", since, err)
	}
	for _, bad := range []string{"x", "s1.", "s1.-5", "s1.12x", "s2.100", "100"} {
		if _, err := parseSyncToken(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
}

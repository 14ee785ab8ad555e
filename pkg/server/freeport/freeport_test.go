package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestAddrsAreDistinctAndBindable(t *testing.T) {
	seen := map[string]bool{}
	for range 300 {
		a, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		_, port, _ := net.SplitHostPort(a)
		if p, _ := strconv.Atoi(port); p < lowPort || p > highPort {
			t.Fatalf("%s is outside %d-%d", a, lowPort, highPort)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("cannot bind %s: %v", a, err)
		}
		l.Close()
	}
}

// A port another process has reserved is not handed out: flock locks
// belong to an open file, so a second open in this process stands in for
// the other process.
func TestReservedPortIsRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := reserve(dir, 25000)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := reserve(dir, 25000); err == nil {
		f.Close()
		t.Fatal("a reserved port was reserved again")
	}
	first.Close()
	again, err := reserve(dir, 25000)
	if err != nil {
		t.Fatalf("a released port stays reserved: %v", err)
	}
	again.Close()
}

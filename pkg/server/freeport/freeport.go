// Package freeport hands out loopback addresses for processes a test or
// a benchmark starts and must tell each other about before they listen.
//
// Asking the kernel for port 0 and closing the listener is not enough:
// the kernel may give the same port to the next caller (CI once saw two
// services of one cluster handed 127.0.0.1:45685), and an outgoing
// connection may take an ephemeral port before the service binds it. So
// ports come from below the kernel's ephemeral range, where outgoing
// connections never land, are never handed out twice by one process, and
// are reserved across processes with a lock file held until the process
// ends.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// The range lies above the local stack's ports (17000-19093) and below
// Linux's default ephemeral range (32768-60999).
const (
	lowPort  = 20000
	highPort = 32767
)

var (
	mu    sync.Mutex
	given = map[int]*os.File{}
)

// Addr returns "127.0.0.1:port" with a port that is free now and that no
// other caller of Addr, in this process or another, gets while this
// process lives.
func Addr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	dir := filepath.Join(os.TempDir(), "parley-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", fmt.Errorf("freeport: %w", err)
	}
	span := highPort - lowPort + 1
	first := rand.IntN(span)
	for i := range span {
		port := lowPort + (first+i)%span
		if given[port] != nil {
			continue
		}
		lock, err := reserve(dir, port)
		if err != nil {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			lock.Close()
			continue
		}
		l.Close()
		given[port] = lock
		return l.Addr().String(), nil
	}
	return "", errors.New("freeport: no free port between 20000 and 32767")
}

// reserve takes an exclusive lock on the port's file; the kernel drops it
// when the process ends, however it ends, so no reservation goes stale.
func reserve(dir string, port int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

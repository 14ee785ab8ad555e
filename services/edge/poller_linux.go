//go:build linux

package edge

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// poller holds the read loops of idle connections without a goroutine
// each: a connection with nothing to read registers its socket here and
// its read loop's goroutine ends (park); when the socket turns readable,
// the poller starts the loop again. An idle connection then costs no
// stack and no goroutine, which were 2 of its 8 KiB even when the loop
// waited at the top of its goroutine.
//
// The registration is level-triggered and one-shot: bytes that arrive
// between the loop's last look and its registration wake it at once, and
// a socket wakes at most one loop. A wake that finds nothing to read (a
// socket number reused after a close) re-parks; correct, if wasted.
//
// The epoll set is itself waited for through Go's netpoller (an epoll
// descriptor is readable when a socket in it is), so the poller's
// goroutine is woken by the scheduler like any network read, and holds
// no thread in a blocking system call.
type poller struct {
	epfd int
	file *os.File
	// mu guards parked and orders registrations with their removal; a
	// leaf in the lock order.
	mu     sync.Mutex
	parked map[int32]*conn
}

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("edge: epoll: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("edge: epoll: %w", err)
	}
	f := os.NewFile(uintptr(fd), "edge-poller")
	// A descriptor Go's netpoller cannot wait for has no deadlines: then
	// there is no poller, and idle loops wait in their goroutines.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("edge: epoll not pollable: %w", err)
	}
	return &poller{epfd: fd, file: f, parked: map[int32]*conn{}}, nil
}

// park registers c's socket; false if it cannot be (the loop then waits
// in its goroutine). The caller holds c.gate.pmu and has seen the
// connection open.
func (p *poller) park(c *conn) bool {
	if p == nil || c.gate.fd < 0 {
		return false
	}
	fd := c.gate.fd
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked == nil {
		return false // stopped
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		return false
	}
	p.parked[fd] = c
	return true
}

// unpark takes c's socket out before it closes; true if c was parked,
// and so its read loop is the caller's to start.
func (p *poller) unpark(c *conn) bool {
	if p == nil {
		return false
	}
	fd := c.gate.fd
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[fd] != c {
		return false
	}
	delete(p.parked, fd)
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	return true
}

// wake takes the connection parked on fd, if any, out of the set.
func (p *poller) wake(fd int32) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.parked[fd]
	if c != nil {
		delete(p.parked, fd)
		// Under mu: a connection that reuses the number must not have
		// its registration removed by this one's.
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	}
	return c
}

// run starts the read loops of parked connections whose sockets turn
// readable, until ctx ends; then it starts those still parked, which
// find their connections closed or read on in goroutines of their own.
func (p *poller) run(ctx context.Context) {
	if p == nil {
		return
	}
	rc, err := p.file.SyscallConn()
	if err != nil {
		p.stop()
		return
	}
	stop := context.AfterFunc(ctx, func() { _ = p.file.SetReadDeadline(time.Now()) })
	defer stop()
	events := make([]syscall.EpollEvent, 256)
	for {
		err := rc.Read(func(fd uintptr) bool {
			n, err := syscall.EpollWait(int(fd), events, 0)
			if err != nil || n <= 0 {
				return err != nil && err != syscall.EINTR
			}
			for _, ev := range events[:n] {
				if c := p.wake(ev.Fd); c != nil {
					go c.readLoop()
				}
			}
			return true
		})
		if err != nil {
			p.stop()
			return
		}
	}
}

// stop closes the set; loops still parked are started.
func (p *poller) stop() {
	p.mu.Lock()
	parked := p.parked
	p.parked = nil
	p.mu.Unlock()
	_ = p.file.Close()
	for _, c := range parked {
		go c.readLoop()
	}
}

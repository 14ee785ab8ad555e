//go:build !linux

package edge

import "context"

// poller is Linux's epoll (poller_linux.go); elsewhere an idle
// connection's read loop waits in its goroutine.
type poller struct{}

func newPoller() (*poller, error)     { return nil, nil }
func (p *poller) park(*conn) bool     { return false }
func (p *poller) unpark(*conn) bool   { return false }
func (p *poller) run(context.Context) {}

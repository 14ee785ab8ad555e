package platform_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// proxy is a TCP proxy in front of the edge that a test can use to cut
// every connection through it, refuse new ones, hold what the edge sends,
// or point at another edge (after a restart).
type proxy struct {
	t   *testing.T
	lis net.Listener

	mu       sync.Mutex
	upstream string
	refuse   bool
	// flow is closed while bytes from the edge flow to clients; an open
	// channel holds them.
	flow  chan struct{}
	pairs map[*pair]struct{}
	// accepted counts the connections forwarded.
	accepted int
}

type pair struct {
	client, edge net.Conn
	once         sync.Once
	// cut is closed when the pair is cut, releasing a held pipe.
	cut chan struct{}
}

func (pr *pair) close() {
	pr.once.Do(func() {
		close(pr.cut)
		pr.client.Close()
		pr.edge.Close()
	})
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flow := make(chan struct{})
	close(flow)
	p := &proxy{t: t, lis: lis, upstream: upstream, flow: flow, pairs: map[*pair]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		lis.Close()
		p.sever()
	})
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, upstream := p.refuse, p.upstream
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			continue
		}
		pr := &pair{client: c, edge: u, cut: make(chan struct{})}
		p.mu.Lock()
		p.pairs[pr] = struct{}{}
		p.accepted++
		p.mu.Unlock()
		go p.pipe(pr, u, c, true)
		go p.pipe(pr, c, u, false)
	}
}

// pipe copies src to dst; bytes from the edge wait while the flow is held.
func (p *proxy) pipe(pr *pair, src, dst net.Conn, fromEdge bool) {
	defer p.drop(pr)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromEdge {
				p.mu.Lock()
				flow := p.flow
				p.mu.Unlock()
				select {
				case <-flow:
				case <-pr.cut:
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.t.Logf("proxy: %v", err)
			}
			return
		}
	}
}

func (p *proxy) drop(pr *pair) {
	pr.close()
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}

// sever cuts every connection through the proxy, as a network failure
// would: no close frame, just closed sockets.
func (p *proxy) sever() {
	p.mu.Lock()
	pairs := p.pairs
	p.pairs = map[*pair]struct{}{}
	p.mu.Unlock()
	for pr := range pairs {
		pr.close()
	}
}

// setRefuse makes new connections fail (or work again).
func (p *proxy) setRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// hold stops bytes from the edge reaching clients; release lets them go.
func (p *proxy) hold() {
	p.mu.Lock()
	p.flow = make(chan struct{})
	p.mu.Unlock()
}

func (p *proxy) release() {
	p.mu.Lock()
	select {
	case <-p.flow:
	default:
		close(p.flow)
	}
	p.mu.Unlock()
}

func (p *proxy) setUpstream(addr string) {
	p.mu.Lock()
	p.upstream = addr
	p.mu.Unlock()
}

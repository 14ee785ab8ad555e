package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/wire"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

type memoryResult struct {
	Process   string `json:"process"`
	Requested int    `json:"requested"`
	// Connections is how many idle authenticated connections were open
	// when the edge was measured.
	Connections int `json:"connections"`
	// LimitedBy says why fewer were opened than requested.
	LimitedBy      string  `json:"limited_by,omitempty"`
	Failed         int     `json:"failed"`
	ConnectSeconds float64 `json:"connect_seconds"`
	ConnectPerS    float64 `json:"connects_per_s"`
	RSSBeforeKiB   int64   `json:"rss_before_kib"`
	RSSAfterKiB    int64   `json:"rss_after_kib"`
	KiBPerConn     float64 `json:"kib_per_connection"`
	// The Go runtime's view of the same growth, from the edge's
	// /debug/pprof/heap?debug=1 (after a GC).
	HeapInuseKiBPerConn  float64 `json:"heap_inuse_kib_per_connection"`
	StackInuseKiBPerConn float64 `json:"stack_inuse_kib_per_connection"`
	GoroutinesPerConn    float64 `json:"goroutines_per_connection"`
	HeapProfile          string  `json:"heap_profile,omitempty"`
}

// runtimeStats is what the edge's heap profile header says about memory.
type runtimeStats struct {
	heapInuse, stackInuse, goroutines int64
}

func readRuntimeStats(ctx context.Context, p *cluster.Proc) (runtimeStats, error) {
	var s runtimeStats
	// gc=1 collects first, so freed memory does not count.
	heap, err := p.PprofGet(ctx, "heap?gc=1&debug=1")
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(heap))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			s.heapInuse, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok {
			// "# Stack = StackInuse / StackSys"
			inuse, _, _ := strings.Cut(v, " ")
			s.stackInuse, _ = strconv.ParseInt(inuse, 10, 64)
		}
	}
	g, err := p.PprofGet(ctx, "goroutine?debug=1")
	if err != nil {
		return s, err
	}
	first, _, _ := strings.Cut(string(g), "\n")
	if v, ok := strings.CutPrefix(first, "goroutine profile: total "); ok {
		s.goroutines, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	}
	return s, nil
}

// settledRSS collects garbage in the process and waits until its RSS
// stops moving (within 0.5% over three one-second samples, at most 20 s).
func settledRSS(ctx context.Context, p *cluster.Proc) (int64, error) {
	var prev []int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := p.PprofGet(ctx, "heap?gc=1"); err != nil {
			return 0, err
		}
		rss, err := rssKiB(p.PID())
		if err != nil {
			return 0, err
		}
		prev = append(prev, rss)
		if n := len(prev); n >= 3 {
			lo, hi := min(prev[n-1], prev[n-2], prev[n-3]), max(prev[n-1], prev[n-2], prev[n-3])
			if float64(hi-lo) <= 0.005*float64(hi) || time.Now().After(deadline) {
				return rss, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// runMemory opens n idle, authenticated connections to the edge process p
// and reports its RSS growth per connection. Source addresses rotate over
// 127.0.0.2-254 so the client side never runs out of ephemeral ports.
// Connections are opened by a bounded pool of dialers.
func runMemory(ctx context.Context, p *cluster.Proc, url string, requested, n int, limitedBy, heapProfile string, minter *auth.HS256, runID string, progress *progressLine) (memoryResult, error) {
	res := memoryResult{Process: p.Name, Requested: requested, LimitedBy: limitedBy}
	before, err := settledRSS(ctx, p)
	if err != nil {
		return res, err
	}
	rtBefore, err := readRuntimeStats(ctx, p)
	if err != nil {
		return res, err
	}
	res.RSSBeforeKiB = before

	clients := sourceClients()
	conns := make([]*websocket.Conn, n)
	var opened, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	progress.set(func() string {
		return fmt.Sprintf("memory: %d/%d idle connections open (%d failed) after %s", opened.Load(), n, failed.Load(), time.Since(start).Truncate(time.Second))
	})
	next := atomic.Int64{}
	var wg sync.WaitGroup
	const dialers = 64
	// The whole phase is bounded: connecting stops after 5 minutes.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := dialIdle(cctx, clients[i%len(clients)], url, minter, fmt.Sprintf("b%s-idle%05d", runID, i))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					// Too many failures means something is wrong; stop.
					if failed.Load() > int64(n/100+10) {
						cancel()
					}
					continue
				}
				conns[i] = c
				opened.Add(1)
			}
		}()
	}
	wg.Wait()
	res.ConnectSeconds = stats.Round3(time.Since(start).Seconds())
	res.Connections, res.Failed = int(opened.Load()), int(failed.Load())
	res.ConnectPerS = stats.Round3(float64(res.Connections) / res.ConnectSeconds)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	if res.Connections == 0 {
		return res, fmt.Errorf("memory: no connection opened: %v", firstErr.Load())
	}
	progress.set(func() string {
		return fmt.Sprintf("memory: %d connections open, waiting for the edge's RSS to settle", res.Connections)
	})
	after, err := settledRSS(ctx, p)
	if err != nil {
		return res, err
	}
	rtAfter, err := readRuntimeStats(ctx, p)
	if err != nil {
		return res, err
	}
	// A heap profile of the loaded edge shows where the per-connection
	// memory goes (go tool pprof -sample_index=inuse_space -top).
	if heap, err := p.PprofGet(ctx, "heap"); err == nil && heapProfile != "" {
		if err := os.WriteFile(heapProfile, heap, 0o644); err == nil {
			res.HeapProfile = heapProfile
		}
	}
	c := float64(res.Connections)
	res.RSSAfterKiB = after
	res.KiBPerConn = stats.Round3(float64(after-before) / c)
	res.HeapInuseKiBPerConn = stats.Round3(float64(rtAfter.heapInuse-rtBefore.heapInuse) / 1024 / c)
	res.StackInuseKiBPerConn = stats.Round3(float64(rtAfter.stackInuse-rtBefore.stackInuse) / 1024 / c)
	res.GoroutinesPerConn = stats.Round3(float64(rtAfter.goroutines-rtBefore.goroutines) / c)
	if res.Failed > 0 {
		if err, _ := firstErr.Load().(error); err != nil {
			res.LimitedBy = strings.TrimPrefix(res.LimitedBy+"; ", "; ") + "first connect error: " + err.Error()
		}
	}
	return res, nil
}

// dialIdle opens one connection with coder/websocket and authenticates it
// by hand with the wire package; it then stays idle.
func dialIdle(ctx context.Context, hc *http.Client, url string, minter *auth.HS256, userID string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{wire.SubprotocolProto}})
	if err != nil {
		return nil, err
	}
	tok, err := minter.Mint(userID, 24*time.Hour)
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	auth, err := wire.Encode(wire.Binary, &clientv1.ClientFrame{RequestId: "1", Frame: &clientv1.ClientFrame_Authenticate{
		Authenticate: &clientv1.Authenticate{Token: tok, DeviceId: "idle"},
	}})
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	if err := c.Write(ctx, websocket.MessageBinary, auth); err != nil {
		c.CloseNow()
		return nil, err
	}
	_, data, err := c.Read(ctx)
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	f, err := wire.DecodeServer(wire.Binary, data)
	if err != nil || f.GetAuthenticated() == nil {
		c.CloseNow()
		return nil, errors.Join(errors.New("authenticate: unexpected answer"), err)
	}
	// Answer the edge's keepalive pings, as any client that reads does;
	// one that does not is closed as dead within a ping interval.
	c.CloseRead(context.Background())
	return c, nil
}

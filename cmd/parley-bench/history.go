package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

const (
	historyPage = 50
	// historySeed messages fill the conversation the reads page through.
	historySeed = 300
)

// historyReader pages one seeded conversation while the load runs.
type historyReader struct {
	user  string
	conv  string
	cl    *sdk.Client
	grpc  persistencev1.PersistenceServiceClient
	gconn *grpc.ClientConn
	done  chan struct{}
}

type historyResult struct {
	PageSize int               `json:"page_size"`
	Reads    int               `json:"reads"`
	Errors   int               `json:"errors"`
	Short    int               `json:"short_pages"`
	Latency  stats.Percentiles `json:"latency_ms"`
	// GRPCLatency is the same page straight from PersistenceService, when
	// the benchmark knows its address (not in embedded mode).
	GRPCLatency *stats.Percentiles `json:"grpc_latency_ms,omitempty"`
}

// newHistoryReader connects a reader of its own, creates its conversation
// and seeds it, then waits until persistence has stored the last message.
func newHistoryReader(ctx context.Context, url, persistenceAddr string, creds grpc.DialOption, minter *auth.HS256, runID string) (*historyReader, error) {
	h := &historyReader{user: "b" + runID + "-history", done: make(chan struct{})}
	tok, err := minter.Mint(h.user, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if h.cl, err = sdk.Dial(dctx, sdk.Options{URL: url, Token: tok, EventBuffer: 1 << 12}); err != nil {
		return nil, fmt.Errorf("history reader: %w", err)
	}
	go func() {
		defer close(h.done)
		for range h.cl.Events() {
		}
	}()
	a, err := h.cl.CreateGroup(dctx, "history", "b"+runID+"-history-peer")
	if err != nil {
		h.close()
		return nil, fmt.Errorf("history reader: create conversation: %w", err)
	}
	h.conv = a.GetConversationId()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	text := payload(128)
	for range historySeed {
		g.Go(func() error {
			sctx, cancel := context.WithTimeout(gctx, sendTimeout)
			defer cancel()
			_, err := h.cl.Send(sctx, h.conv, text)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		h.close()
		return nil, fmt.Errorf("history reader: seed: %w", err)
	}
	// Creation is seq 1, so the last seeded message is historySeed+1.
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, err := h.cl.History(ctx, &clientv1.GetHistory{ConversationId: h.conv, Limit: historyPage})
		if err == nil && len(p.GetEvents()) > 0 && p.GetEvents()[len(p.GetEvents())-1].GetSeq() == historySeed+1 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			h.close()
			return nil, fmt.Errorf("history reader: the seeded messages were not stored within 60s (last error %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if persistenceAddr != "" {
		if h.gconn, err = grpc.NewClient(persistenceAddr, creds); err != nil {
			h.close()
			return nil, fmt.Errorf("history reader: %w", err)
		}
		h.grpc = persistencev1.NewPersistenceServiceClient(h.gconn)
	}
	return h, nil
}

// run reads pages at rate per second until ctx ends, alternating between
// the WebSocket and (if known) PersistenceService, each page ending at a
// random seq of the seeded range or at the newest message.
func (h *historyReader) run(ctx context.Context, rate float64) historyResult {
	res := historyResult{PageSize: historyPage}
	var mu sync.Mutex
	var ws, direct []float64
	rng := rand.New(rand.NewPCG(3, 4))
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
		var before uint64
		if i%4 != 0 {
			before = uint64(historyPage + 2 + rng.IntN(historySeed-historyPage))
		}
		viaGRPC := h.grpc != nil && i%2 == 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			var n int
			var err error
			if viaGRPC {
				var resp *persistencev1.HistoryResponse
				resp, err = h.grpc.History(rctx, &persistencev1.HistoryRequest{UserId: h.user, ConversationId: h.conv, BeforeSeq: before, Limit: historyPage})
				n = len(resp.GetEvents())
			} else {
				var p *clientv1.HistoryPage
				p, err = h.cl.History(rctx, &clientv1.GetHistory{ConversationId: h.conv, BeforeSeq: before, Limit: historyPage})
				n = len(p.GetEvents())
			}
			ms := float64(time.Since(start)) / float64(time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			res.Reads++
			switch {
			case err != nil:
				res.Errors++
			case n != historyPage:
				res.Short++
			}
			if viaGRPC {
				direct = append(direct, ms)
			} else {
				ws = append(ws, ms)
			}
		}()
	}
	wg.Wait()
	res.Latency = stats.Of(ws)
	if h.grpc != nil {
		p := stats.Of(direct)
		res.GRPCLatency = &p
	}
	return res
}

func (h *historyReader) close() {
	_ = h.cl.Close()
	<-h.done
	if h.gconn != nil {
		h.gconn.Close()
	}
}

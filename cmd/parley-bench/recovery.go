package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"google.golang.org/protobuf/proto"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// recoveryResult is how long the platform takes to serve again after one
// instance of each service is killed with SIGKILL and started again at
// once: from the restart to the first message accepted, to the first one
// delivered, and to the first one readable in history.
type recoveryResult struct {
	Rounds int                      `json:"rounds"`
	Roles  map[string]*recoveryRole `json:"roles"`
}

type recoveryRole struct {
	// Per round, seconds from the restart (the new process's start).
	ReadyS     []float64 `json:"ready_s"`
	AcceptedS  []float64 `json:"accepted_s"`
	DeliveredS []float64 `json:"delivered_s"`
	HistoryS   []float64 `json:"history_s"`
	// Medians and maxima of the rounds.
	AcceptedP50  float64  `json:"accepted_p50_s"`
	AcceptedMax  float64  `json:"accepted_max_s"`
	DeliveredP50 float64  `json:"delivered_p50_s"`
	DeliveredMax float64  `json:"delivered_max_s"`
	HistoryMax   float64  `json:"history_max_s"`
	Failures     []string `json:"failures,omitempty"`
}

// recoveryBudget is how long one round may take before it counts as a
// failure; the target is about a second.
const recoveryBudget = 60 * time.Second

// prober is a pair of users in a direct conversation, both on edge 0:
// alice sends, bob receives, and alice reads history.
type prober struct {
	alice, bob *sdk.Client
	conv       string
	n          int
	runID      string
}

func newProber(ctx context.Context, url string, minter *auth.HS256, runID string) (*prober, error) {
	p := &prober{runID: runID}
	// Redial quickly: the figure is the platform's recovery, not the
	// client's backoff.
	policy := &sdk.ReconnectPolicy{MinDelay: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond, KeepAlive: time.Second, AttemptTimeout: 2 * time.Second}
	dial := func(user string) (*sdk.Client, error) {
		tok, err := minter.Mint(user, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		return sdk.Dial(ctx, sdk.Options{URL: url, Token: tok, DeviceID: "probe", Reconnect: policy, EventBuffer: 1 << 12})
	}
	var err error
	if p.alice, err = dial("r" + runID + "-alice"); err != nil {
		return nil, fmt.Errorf("recovery prober: %w", err)
	}
	if p.bob, err = dial("r" + runID + "-bob"); err != nil {
		p.alice.Close()
		return nil, fmt.Errorf("recovery prober: %w", err)
	}
	a, err := p.alice.OpenDirect(ctx, p.bob.UserID)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("recovery prober: open direct: %w", err)
	}
	p.conv = a.GetConversationId()
	return p, nil
}

func (p *prober) close() {
	p.alice.Close()
	p.bob.Close()
}

// probe sends one message, retrying it under the same client_msg_id until
// it is accepted, then waits for bob to receive it and for history to hold
// it. Each time is measured from since; a zero means it did not happen
// within deadline.
func (p *prober) probe(ctx context.Context, since time.Time, deadline time.Time) (accepted, delivered, history time.Duration, err error) {
	p.n++
	id := sdk.NewClientMsgID()
	text := "probe " + p.runID + " " + strconv.Itoa(p.n)
	var seq uint64
	for seq == 0 {
		if time.Now().After(deadline) {
			return 0, 0, 0, errors.New("no send accepted")
		}
		actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		a, err := p.alice.SendWithID(actx, p.conv, id, text)
		cancel()
		if err == nil {
			seq = a.GetSeq()
			accepted = time.Since(since)
			break
		}
		if ctx.Err() != nil {
			return 0, 0, 0, ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for delivered == 0 {
		select {
		case ev := <-p.bob.Events():
			if ev.GetConversationId() == p.conv && ev.GetClientMsgId() == id {
				delivered = time.Since(since)
			}
		case <-dctx.Done():
			return accepted, 0, 0, errors.New("accepted but not delivered")
		}
	}
	for history == 0 {
		hctx, cancel := context.WithTimeout(dctx, 300*time.Millisecond)
		page, err := p.alice.History(hctx, &clientv1.GetHistory{ConversationId: p.conv, AfterSeq: proto.Uint64(seq - 1), Limit: 1})
		cancel()
		if err == nil && len(page.GetEvents()) == 1 && page.GetEvents()[0].GetSeq() == seq {
			history = time.Since(since)
			break
		}
		if dctx.Err() != nil {
			return accepted, delivered, 0, errors.New("delivered but not in history")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return accepted, delivered, history, nil
}

// measureRecovery kills and restarts the first instance of each role
// rounds times, with the prober's pair on edge 0 (the edge killed is
// edge 0, so the pair reconnects to the restarted process), while a second
// pair on edge 1 keeps closed-loop traffic going.
func measureRecovery(ctx context.Context, c *cluster.Cluster, rounds int, roles []string, minter *auth.HS256, runID string, progress *progressLine) (*recoveryResult, error) {
	p, err := newProber(ctx, c.WSURL(0), minter, runID)
	if err != nil {
		return nil, err
	}
	defer p.close()
	// Closed-loop traffic beside the prober keeps the sequencer inside a
	// transaction most of the time, so kills land mid-transaction too (a
	// restart must abort what its predecessor left open).
	bg, err := newProber(ctx, c.WSURL(1), minter, runID+"bg")
	if err != nil {
		return nil, err
	}
	defer bg.close()
	bctx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	for w := range recoveryBackgroundSenders {
		go bg.flood(bctx, w)
	}
	// The path must work before anything is killed.
	if _, _, _, err := p.probe(ctx, time.Now(), time.Now().Add(recoveryBudget)); err != nil {
		return nil, fmt.Errorf("recovery: before any kill: %w", err)
	}
	res := &recoveryResult{Rounds: rounds, Roles: map[string]*recoveryRole{}}
	for _, role := range roles {
		proc := c.First(role)
		if role == "edge" {
			proc = c.Edges[0]
		}
		if proc == nil {
			continue
		}
		rr := &recoveryRole{}
		res.Roles[role] = rr
		for r := range rounds {
			progress.set(func() string { return fmt.Sprintf("recovery: %s round %d/%d", role, r+1, rounds) })
			proc.Kill()
			restarted := time.Now()
			if err := proc.Start(); err != nil {
				return res, err
			}
			deadline := restarted.Add(recoveryBudget)
			ready := make(chan time.Duration, 1)
			go func() {
				if proc.WaitReady(ctx, recoveryBudget) == nil {
					ready <- time.Since(restarted)
				}
				close(ready)
			}()
			acc, del, hist, err := p.probe(ctx, restarted, deadline)
			rd := <-ready
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			rr.ReadyS = append(rr.ReadyS, stats.Round3(rd.Seconds()))
			rr.AcceptedS = append(rr.AcceptedS, stats.Round3(acc.Seconds()))
			rr.DeliveredS = append(rr.DeliveredS, stats.Round3(del.Seconds()))
			rr.HistoryS = append(rr.HistoryS, stats.Round3(hist.Seconds()))
			if err != nil {
				rr.Failures = append(rr.Failures, fmt.Sprintf("round %d: %v", r+1, err))
				// Let the platform settle before the next kill.
				_, _, _, _ = p.probe(ctx, time.Now(), time.Now().Add(recoveryBudget))
			}
		}
		rr.AcceptedP50, rr.AcceptedMax = medianMax(rr.AcceptedS)
		rr.DeliveredP50, rr.DeliveredMax = medianMax(rr.DeliveredS)
		_, rr.HistoryMax = medianMax(rr.HistoryS)
	}
	return res, nil
}

// recoveryBackgroundSenders is how many sends the background traffic keeps
// in flight.
const recoveryBackgroundSenders = 4

// flood sends messages one after another until ctx ends, retrying each
// under its client_msg_id; bob's copies are drained and dropped.
func (p *prober) flood(ctx context.Context, worker int) {
	if worker == 0 {
		go func() {
			for {
				select {
				case <-p.bob.Events():
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for i := 0; ctx.Err() == nil; i++ {
		id := sdk.NewClientMsgID()
		for ctx.Err() == nil {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := p.alice.SendWithID(sctx, p.conv, id, "background "+strconv.Itoa(worker)+" "+strconv.Itoa(i))
			cancel()
			if err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func medianMax(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

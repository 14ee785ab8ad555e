// Package push takes deliveries to the edges that hold their recipients,
// for every kind of push: fan-out's events, receipts and flags from the
// log, and an edge's typing indicators. Presence says where each user is
// (LocateResponse); Plan turns that into one Push per edge; Edges makes
// those pushes.
package push

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/pkg/server/rpcdial"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// Item is something to deliver and to whom. Delivery's UserIds are left
// empty: Plan fills them per edge.
type Item struct {
	Delivery   *edgev1.Delivery
	Recipients []string
}

// Plan plans one batch: for each edge address, the deliveries it gets, in
// item order, each naming only the recipients that edge holds. A user
// named twice (by the item, or twice at one edge by presence) is named
// once: the edge pushes to every connection of every user it is given.
func Plan(items []Item, locs []*presencev1.UserLocation) map[string][]*edgev1.Delivery {
	where := make(map[string][]string, len(locs))
	for _, l := range locs {
		where[l.GetUserId()] = l.GetPushAddresses()
	}
	plan := map[string][]*edgev1.Delivery{}
	type target struct{ user, addr string }
	var named map[target]bool
	for _, it := range items {
		var byEdge map[string]*edgev1.Delivery
		clear(named)
		for _, u := range it.Recipients {
			for _, addr := range where[u] {
				if named[target{u, addr}] {
					continue
				}
				if byEdge == nil {
					byEdge = map[string]*edgev1.Delivery{}
				}
				if named == nil {
					named = map[target]bool{}
				}
				named[target{u, addr}] = true
				d := byEdge[addr]
				if d == nil {
					t := it.Delivery
					d = &edgev1.Delivery{Event: t.GetEvent(), Receipt: t.GetReceipt(), Flags: t.GetFlags(), Typing: t.GetTyping()}
					byEdge[addr] = d
					plan[addr] = append(plan[addr], d)
				}
				d.UserIds = append(d.UserIds, u)
			}
		}
	}
	return plan
}

// Edges pushes plans to edges over connections dialled on first use and
// kept.
type Edges struct {
	// Timeout bounds one Push: a stuck edge must not stall the others.
	Timeout time.Duration
	// Dial secures the connections (mtls.DialOption); plaintext when nil.
	Dial grpc.DialOption
	// DialOptions are added to every connection's (the caller's metrics
	// interceptors, tracing's stats handler).
	DialOptions []grpc.DialOption
	// Pushed, when set, is told the deliveries of every Push that
	// succeeded, as it returns; it may be called concurrently.
	Pushed func([]*edgev1.Delivery)
	// mu guards conns.
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// Push makes each edge's Push of plan concurrently. Each push stands
// alone: an edge that died still holds sessions in presence until its
// lease lapses, and its failure must not cancel the pushes to the live
// edges its users came back on. The error names every edge that failed.
func (e *Edges) Push(ctx context.Context, plan map[string][]*edgev1.Delivery) error {
	var g errgroup.Group
	for addr, deliveries := range plan {
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(ctx, e.Timeout)
			defer cancel()
			conn, err := e.conn(addr)
			if err != nil {
				return err
			}
			if _, err := edgev1.NewEdgeServiceClient(conn).Push(cctx, &edgev1.PushRequest{Deliveries: deliveries}); err != nil {
				return fmt.Errorf("push %d deliveries to %s: %w", len(deliveries), addr, err)
			}
			if e.Pushed != nil {
				e.Pushed(deliveries)
			}
			return nil
		})
	}
	return g.Wait()
}

func (e *Edges) conn(addr string) (*grpc.ClientConn, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.conns[addr]; c != nil {
		return c, nil
	}
	creds := e.Dial
	if creds == nil {
		creds = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	c, err := grpc.NewClient(addr, append([]grpc.DialOption{creds, rpcdial.Reconnect}, e.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("edge client %s: %w", addr, err)
	}
	if e.conns == nil {
		e.conns = map[string]*grpc.ClientConn{}
	}
	e.conns[addr] = c
	return c, nil
}

// Close closes every connection.
func (e *Edges) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for _, c := range e.conns {
		errs = append(errs, c.Close())
	}
	e.conns = nil
	return errors.Join(errs...)
}

// Package presenceclient talks to the presence instances as if they were
// one: each call is split by the instance owning each user
// (topics.UserShard over the instance count) and the answers merged. Edge
// and fan-out both use it.
package presenceclient

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
	"github.com/parleychat/parley/pkg/server/rpcdial"
	"github.com/parleychat/parley/pkg/server/topics"
)

// Client is a presencev1.PresenceServiceClient over every instance.
type Client struct {
	conns     []*grpc.ClientConn
	instances []presencev1.PresenceServiceClient
}

var _ presencev1.PresenceServiceClient = (*Client)(nil)

// Dial connects (lazily, as gRPC does) to the instances, in instance order:
// addrs[i] must be instance i of len(addrs). creds says how to secure the
// connections (mtls.DialOption); plaintext when nil. opts are added to
// every connection's (the caller's metrics interceptors, tracing's stats
// handler).
func Dial(addrs []string, creds grpc.DialOption, opts ...grpc.DialOption) (*Client, error) {
	if creds == nil {
		creds = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	if len(addrs) == 0 {
		return nil, errors.New("presence client: no instance addresses")
	}
	c := &Client{}
	for _, a := range addrs {
		conn, err := grpc.NewClient(a, append([]grpc.DialOption{creds, rpcdial.Reconnect}, opts...)...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("presence client %s: %w", a, err)
		}
		c.conns = append(c.conns, conn)
		c.instances = append(c.instances, presencev1.NewPresenceServiceClient(conn))
	}
	return c, nil
}

// Close closes the connections.
func (c *Client) Close() error {
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// Conns are the connections to the instances, in instance order, for
// readiness to follow.
func (c *Client) Conns() []*grpc.ClientConn { return c.conns }

func (c *Client) owner(user string) int { return topics.UserShard(user, len(c.instances)) }

// Owner is the index of the instance that owns user.
func (c *Client) Owner(user string) int { return c.owner(user) }

// Instances are the clients of each instance, in instance order, for the
// calls that address one instance (WatchLocations).
func (c *Client) Instances() []presencev1.PresenceServiceClient { return c.instances }

// WatchLocations is per instance: a lease and its invalidations concern
// one instance's users. Call it on Instances()[i].
func (c *Client) WatchLocations(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[presencev1.WatchLocationsRequest, presencev1.WatchLocationsResponse], error) {
	return nil, status.Error(codes.Unimplemented, "presence client: watch each instance (Instances()[i]), not all at once")
}

// each calls f for every instance i with a request, concurrently, and
// joins the errors, each naming its instance.
func each(n int, call func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := call(i); err != nil {
				errs[i] = fmt.Errorf("presence instance %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Report sends each instance the heartbeat and the changes of its users; a
// snapshot reaches every instance, so each can end what the node no longer
// holds. It fails if any instance failed: the edge then sends a snapshot
// next, which every instance applies idempotently.
func (c *Client) Report(ctx context.Context, req *presencev1.ReportRequest, opts ...grpc.CallOption) (*presencev1.ReportResponse, error) {
	parts := make([]*presencev1.ReportRequest, len(c.instances))
	for i := range parts {
		parts[i] = &presencev1.ReportRequest{NodeId: req.GetNodeId(), PushAddress: req.GetPushAddress(), Snapshot: req.GetSnapshot()}
	}
	for _, s := range req.GetConnected() {
		p := parts[c.owner(s.GetUserId())]
		p.Connected = append(p.Connected, s)
	}
	for _, s := range req.GetDisconnected() {
		p := parts[c.owner(s.GetUserId())]
		p.Disconnected = append(p.Disconnected, s)
	}
	resps := make([]*presencev1.ReportResponse, len(c.instances))
	err := each(len(c.instances), func(i int) (err error) {
		resps[i], err = c.instances[i].Report(ctx, parts[i], opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &presencev1.ReportResponse{}
	for _, r := range resps {
		out.SendSnapshot = out.SendSnapshot || r.GetSendSnapshot()
		if l := r.GetLease(); l != nil && (out.Lease == nil || l.AsDuration() < out.Lease.AsDuration()) {
			out.Lease = durationpb.New(l.AsDuration())
		}
	}
	return out, nil
}

// split groups users by instance.
func (c *Client) split(users []string) [][]string {
	out := make([][]string, len(c.instances))
	for _, u := range users {
		i := c.owner(u)
		out[i] = append(out[i], u)
	}
	return out
}

// Locate asks each instance about its users. When some instances fail it
// returns what the others answered together with the error, so a caller
// can deliver to the users it could locate.
func (c *Client) Locate(ctx context.Context, req *presencev1.LocateRequest, opts ...grpc.CallOption) (*presencev1.LocateResponse, error) {
	parts := c.split(req.GetUserIds())
	resps := make([]*presencev1.LocateResponse, len(parts))
	err := each(len(parts), func(i int) (err error) {
		if len(parts[i]) == 0 {
			return nil
		}
		resps[i], err = c.instances[i].Locate(ctx, &presencev1.LocateRequest{UserIds: parts[i]}, opts...)
		return err
	})
	out := &presencev1.LocateResponse{}
	for _, r := range resps {
		out.Locations = append(out.Locations, r.GetLocations()...)
	}
	return out, err
}

// Status asks each instance about its users; it fails if any instance
// failed, since a missing user would read as unknown.
func (c *Client) Status(ctx context.Context, req *presencev1.StatusRequest, opts ...grpc.CallOption) (*presencev1.StatusResponse, error) {
	parts := c.split(req.GetUserIds())
	resps := make([]*presencev1.StatusResponse, len(parts))
	err := each(len(parts), func(i int) (err error) {
		if len(parts[i]) == 0 {
			return nil
		}
		resps[i], err = c.instances[i].Status(ctx, &presencev1.StatusRequest{UserIds: parts[i]}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Answer in the order asked, as a single instance would.
	byUser := map[string]*presencev1.UserStatus{}
	for _, r := range resps {
		for _, st := range r.GetStatuses() {
			byUser[st.GetUserId()] = st
		}
	}
	out := &presencev1.StatusResponse{}
	for _, u := range req.GetUserIds() {
		if st := byUser[u]; st != nil {
			out.Statuses = append(out.Statuses, st)
		}
	}
	return out, nil
}

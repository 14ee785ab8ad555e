// Package rpcdial holds what every internal gRPC client of Parley dials
// with beside its credentials.
package rpcdial

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Reconnect redials a peer that went away after 100 ms, growing to at
// most 2 s. gRPC's default starts at 1 s: a restarted ingest, presence or
// persistence, serving again within about 100 ms, was then unreachable for
// a further second from every edge and fan-out node (the bench's recovery
// phase measured 1.09 s restart-to-accepted for ingest, 1.6 s
// restart-to-delivered for presence).
var Reconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   2 * time.Second,
	},
	MinConnectTimeout: 2 * time.Second,
})

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/pkg/server/auth"
)

type bigRoomOptions struct {
	Members int
	Rate    float64
}

// bigRoomResult is the big-room phase: one group whose every member is
// online, posted to at a fixed rate, and what each delivery cost.
type bigRoomResult struct {
	Members int        `json:"members"`
	Run     loadResult `json:"run"`
	CPU     *stepCPU   `json:"cpu"`
	// Profile lists the CPU profiles taken during the run (-profile).
	Profile string `json:"profile,omitempty"`
}

// runBigRoom connects Members users (one device each, spread over the
// edges) into one group and posts to it at Rate for the run's duration
// from random members: the cost per delivery when a message fans out to
// a thousand sockets rather than to eight.
func runBigRoom(ctx context.Context, o *options, c *cluster.Cluster, minter *auth.HS256, runID string, progress *progressLine) (*bigRoomResult, error) {
	bo := *o
	bo.users, bo.devices, bo.groupSize, bo.directShare = o.bigRoom.Members, 1, o.bigRoom.Members, 0
	progress.set(func() string {
		return fmt.Sprintf("big room: connecting %d devices into one group", bo.users)
	})
	w, err := setupWorkload(ctx, &bo, c, minter, runID+"r")
	if err != nil {
		return nil, err
	}
	defer w.close()
	// Let the setup's member events drain before measuring.
	time.Sleep(2 * time.Second)
	dur := max(o.duration/2, 10*time.Second)
	r := newLoadRun("big room", o.bigRoom.Rate, dur)
	progress.set(r.progress)
	m := newCPUMeter(c, o)
	prof := startProfiles(ctx, c, o, "bigroom", dur, progress)
	w.runLoad(ctx, r, o.grace, 0)
	res := r.result(w.disconnects.Swap(0))
	return &bigRoomResult{Members: bo.users, Run: res, CPU: newStepCPU(m.report(), res), Profile: <-prof}, nil
}

package integration

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	"github.com/parleychat/parley/pkg/sdk"
)

// TestPresenceRestart (real stack): both presence instances are killed
// with SIGKILL and started again; their state comes back from
// parley.presence.v1 alone. Throughout, every answer alice gets about the
// others is either refused or right:
//   - A: bob's edge is frozen (SIGSTOP) across the restart, so it cannot
//     tell the new instances anything: bob is online from the log, and
//     routing to him works once his edge thaws.
//   - B: presence stays down past the lease while erin's edge is killed:
//     once presence is back, erin is offline with the last seen of her
//     edge's last heartbeat, and bob and alice, whose edges live, are
//     never shown offline.
func TestPresenceRestart(t *testing.T) {
	s := requireStack(t)
	// A restarted instance replays its partitions before it serves, and the
	// frozen edge of part A must outlast that within its lease. Replay time
	// grows with parley.presence.v1, which on a long-lived stack holds the
	// last seen of every user any run made (5 s seen in CI), so the lease
	// is well above it.
	const lease = 20 * time.Second
	c := startClusterLease(t, s, [2][]string{}, lease)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Names of this run only: last-seen times outlive a cluster on the
	// shared Kafka.
	run := uuid.NewString()[:8]
	name := func(n string) string { return n + "-" + run }
	alice, bob, carol, dave, erin := name("alice"), name("bob"), name("carol"), name("dave"), name("erin")

	a := discardEvents(c.dial(0, alice, "a0"))
	bobEvents := c.dial(1, bob, "b1")
	carolCl := discardEvents(c.dial(0, carol, "c0"))
	edge2 := c.addEdge("edge2", c.ingestAddr)
	discardEvents(c.dial(edge2, erin, "e2"))
	acc, err := a.CreateGroup(ctx, "restart", bob, carol, dave, erin)
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	carolCl.Close()
	carolGone := time.Now()

	type want struct {
		state chatv1.PresenceState
		// seenNear, if set, is about when the user was last seen (at most
		// 10 s before, or a report's delay after); zero means no last seen.
		seenNear time.Time
	}
	check := func(ps []*chatv1.Presence, wants map[string]want) error {
		got := map[string]*chatv1.Presence{}
		for _, p := range ps {
			got[p.GetUserId()] = p
		}
		for u, w := range wants {
			p := got[u]
			if p == nil || p.GetState() != w.state {
				return fmt.Errorf("%s: %v, want %v", u, p, w.state)
			}
			switch {
			case w.seenNear.IsZero() && p.GetLastSeen() != nil:
				return fmt.Errorf("%s: last seen %v, want none", u, p.GetLastSeen().AsTime())
			case !w.seenNear.IsZero() && (p.GetLastSeen() == nil || p.GetLastSeen().AsTime().After(w.seenNear.Add(2*time.Second)) || w.seenNear.Sub(p.GetLastSeen().AsTime()) > 10*time.Second):
				return fmt.Errorf("%s: last seen %v, want about %v", u, p.GetLastSeen().AsTime(), w.seenNear)
			}
		}
		return nil
	}
	users := []string{bob, carol, dave, erin}
	online := want{state: chatv1.PresenceState_PRESENCE_STATE_ONLINE}
	wants := map[string]want{bob: online, erin: online,
		carol: {state: chatv1.PresenceState_PRESENCE_STATE_OFFLINE, seenNear: carolGone},
		dave:  {state: chatv1.PresenceState_PRESENCE_STATE_OFFLINE}}
	// The co-member rule reads the conversation list persistence fills a
	// moment after the group is created; carol's end takes a report.
	var last error
	waitUntil(t, "presence as expected before the restart", 30*time.Second, func() bool {
		ps, err := a.Presence(ctx, users...)
		if err == nil {
			err = check(ps, wants)
		}
		last = err
		return err == nil
	}, &last)

	// watch asks about everyone until stop is closed: each answer must be
	// refused or right; it returns how many were right.
	watch := func(wants map[string]want, stop <-chan struct{}) <-chan int {
		out := make(chan int, 1)
		go func() {
			right := 0
			defer func() { out <- right }()
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				ps, err := a.Presence(ctx, users...)
				if err != nil {
					continue
				}
				if err := check(ps, wants); err != nil {
					t.Errorf("wrong presence during the restart: %v", err)
					return
				}
				right++
			}
		}()
		return out
	}
	restartPresence := func() {
		for _, p := range []string{"presence0", "presence1"} {
			c.procs[p].kill9()
		}
		for _, p := range []string{"presence0", "presence1"} {
			c.procs[p].start()
		}
		for _, p := range []string{"presence0", "presence1"} {
			c.procs[p].waitReady(60 * time.Second)
		}
	}

	// A: bob's edge frozen across the restart.
	stop := make(chan struct{})
	answers := watch(wants, stop)
	c.procs["edge1"].signal(syscall.SIGSTOP)
	frozen := time.Now()
	restartPresence()
	// Asked while edge 1 is still frozen: bob can only be known from the log.
	ps, err := a.Presence(ctx, users...)
	if err != nil {
		t.Fatalf("presence after the restart: %v", err)
	}
	if err := check(ps, wants); err != nil {
		t.Fatalf("after the restart, with bob's edge frozen: %v", err)
	}
	c.procs["edge1"].signal(syscall.SIGCONT)
	t.Logf("A: presence restarted and answered right with bob's edge frozen for %s", time.Since(frozen).Round(time.Millisecond))
	if time.Since(frozen) > lease*4/5 {
		t.Logf("A: edge 1 was frozen for close to the %s lease; bob may have lapsed", lease)
	}
	if _, err := a.Send(ctx, conv, "after the restart"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, bobEvents, func(ev *chatv1.Event) bool { return ev.GetMessagePosted().GetText() == "after the restart" })
	close(stop)
	t.Logf("A: %d right answers during the restart, none wrong", <-answers)

	// B: presence down past the lease; erin's edge dies meanwhile.
	for _, p := range []string{"presence0", "presence1"} {
		c.procs[p].kill9()
	}
	c.procs["extra-edge2"].kill9()
	erinGone := time.Now()
	time.Sleep(lease + time.Second)
	wants[erin] = want{state: chatv1.PresenceState_PRESENCE_STATE_OFFLINE, seenNear: erinGone}
	stop = make(chan struct{})
	answers = watch(wants, stop)
	back := time.Now()
	for _, p := range []string{"presence0", "presence1"} {
		c.procs[p].start()
	}
	for _, p := range []string{"presence0", "presence1"} {
		c.procs[p].waitReady(60 * time.Second)
	}
	t.Logf("B: presence serving %s after it was started again", time.Since(back).Round(time.Millisecond))
	ps, err = a.Presence(ctx, users...)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(ps, wants); err != nil {
		t.Fatalf("after presence was down past the lease: %v", err)
	}
	close(stop)
	t.Logf("B: %d right answers, none wrong", <-answers)
}

// waitUntil polls ok; on timeout it reports *last, the latest reason.
func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool, last *error) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, *last)
		}
	}
}

// waitFor reads cl's events until one matches.
func waitFor(t *testing.T, ctx context.Context, cl *sdk.Client, match func(*chatv1.Event) bool) {
	t.Helper()
	for {
		select {
		case ev, ok := <-cl.Events():
			if !ok {
				t.Fatalf("%s's connection ended: %v", cl.UserID, cl.Err())
			}
			if match(ev) {
				return
			}
		case <-ctx.Done():
			t.Fatalf("%s: no matching event: %v", cl.UserID, ctx.Err())
		}
	}
}

package platform_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// Flood-isolation benchmark (issue 14): on the in-process platform
// (`parley run`: kfake and Pebble) with the default limits, a victim pair
// plays ping-pong through the whole pipeline (send, sequence, fan out,
// deliver, and back) at floodPace, first alone and then while
// floodConns connections of other users each send message frames at 100
// times the default per-connection message rate. It reports the victim's
// round-trip p50 and p99 in both phases and what the flooders got.
//
//	go test -run '^$' -bench FloodIsolation -benchtime 1x ./services/platform/
const (
	floodConns = 32
	// floodPhase is the length of each phase; at floodPace it gives the
	// victim about 120 round trips per phase.
	floodPhase = 30 * time.Second
	// floodPace keeps each victim connection under its own default
	// message rate (5/s): one ping and one pong per round.
	floodPace = 250 * time.Millisecond
)

func BenchmarkFloodIsolation(b *testing.B) {
	for range b.N {
		r := runFlood(b)
		b.ReportMetric(r.before.p50, "before-p50-ms")
		b.ReportMetric(r.before.p99, "before-p99-ms")
		b.ReportMetric(r.during.p50, "during-p50-ms")
		b.ReportMetric(r.during.p99, "during-p99-ms")
		b.ReportMetric(r.during.p99/r.before.p99, "p99-ratio")
		b.ReportMetric(float64(r.sent)/floodPhase.Seconds(), "flood-frames/s")
		b.ReportMetric(float64(r.limited)/floodPhase.Seconds(), "rate-limited/s")
		b.ReportMetric(float64(r.accepted)/floodPhase.Seconds(), "flood-accepted/s")
		b.Logf("victim round trip: before p50 %.1f ms p99 %.1f ms (%d), during p50 %.1f ms p99 %.1f ms (%d); "+
			"%d flooders sent %d frames in %v: %d RATE_LIMITED, %d accepted, %d other",
			r.before.p50, r.before.p99, r.before.n, r.during.p50, r.during.p99, r.during.n,
			floodConns, r.sent, floodPhase, r.limited, r.accepted, r.other)
	}
}

type latencies struct {
	p50, p99 float64
	n        int
}

type floodResult struct {
	before, during                 latencies
	sent, limited, accepted, other int64
}

func runFlood(b *testing.B) floodResult {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := platform.Start(ctx, platform.Config{DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", JWTSecret: secret, Partitions: 4, Limits: edge.DefaultLimits(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for !p.Ready() {
		time.Sleep(20 * time.Millisecond)
	}
	minter, _ := auth.NewHS256(secret)
	dial := func(user string) *sdk.Client {
		tok, _ := minter.Mint(user, time.Hour)
		c, err := sdk.Dial(ctx, sdk.Options{URL: p.URL(), Token: tok, DeviceID: user + "-d"})
		if err != nil {
			b.Fatalf("dial %s: %v", user, err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}

	ping, pong := dial("victim-a"), dial("victim-b")
	d, err := ping.OpenDirect(ctx, "victim-b")
	if err != nil {
		b.Fatal(err)
	}
	conv := d.GetConversationId()
	// pong answers every ping; ping measures until the answer arrives.
	go func() {
		for ev := range pong.Events() {
			if ev.GetSenderId() == "victim-a" && ev.GetMessagePosted() != nil {
				_, _ = pong.Send(ctx, conv, "pong "+ev.GetMessagePosted().GetText())
			}
		}
	}()
	roundTrips := func(phase time.Duration) latencies {
		var rtts []float64
		t := time.NewTicker(floodPace)
		defer t.Stop()
		for end := time.Now().Add(phase); time.Now().Before(end); <-t.C {
			text := sdk.NewClientMsgID()
			sent := time.Now()
			if _, err := ping.Send(ctx, conv, text); err != nil {
				b.Fatalf("victim send: %v", err)
			}
			for answered := false; !answered; {
				select {
				case ev := <-ping.Events():
					answered = ev.GetSenderId() == "victim-b" && ev.GetMessagePosted().GetText() == "pong "+text
				case <-time.After(30 * time.Second):
					b.Fatal("victim: no pong in 30 s")
				}
			}
			rtts = append(rtts, float64(time.Since(sent).Microseconds())/1000)
		}
		slices.Sort(rtts)
		at := func(q float64) float64 { return rtts[min(len(rtts)-1, int(q*float64(len(rtts))))] }
		return latencies{p50: at(0.50), p99: at(0.99), n: len(rtts)}
	}
	roundTrips(3 * time.Second) // warm up
	var r floodResult
	r.before = roundTrips(floodPhase)

	// The flooders: each a user of its own in a direct conversation with a
	// user who is not connected, so what gets through costs the pipeline
	// but delivers to nobody.
	// FLOOD_FACTOR (100 by default) scales the flood against the limit:
	// 1 sends exactly what the limit lets through, the same accepted load
	// without refusals, to tell the cost of the load from that of the flood.
	factor := 100.0
	if v, err := strconv.ParseFloat(os.Getenv("FLOOD_FACTOR"), 64); err == nil && v > 0 {
		factor = v
	}
	rate := edge.DefaultLimits().ConnMessages
	perSecond := factor * rate.Events / rate.Per.Seconds()
	every := 10 * time.Millisecond
	perTick := int(perSecond * every.Seconds())
	if perTick < 1 {
		perTick, every = 1, time.Duration(float64(time.Second)/perSecond)
	}
	fctx, stopFlood := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var sent, limited, accepted, other atomic.Int64
	for i := range floodConns {
		user := fmt.Sprintf("flooder-%d", i)
		c := dial(user)
		fd, err := c.OpenDirect(ctx, "sink")
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		tok, _ := minter.Mint(user, time.Hour)
		ws, _, err := websocket.Dial(ctx, p.URL(), &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolProto}})
		if err != nil {
			b.Fatal(err)
		}
		ws.SetReadLimit(1 << 20)
		if err := writeRaw(ctx, ws, &clientv1.ClientFrame{RequestId: "auth", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: tok}}}); err != nil {
			b.Fatal(err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				_, data, err := ws.Read(context.Background())
				if err != nil {
					return
				}
				f, err := wire.DecodeServer(wire.Binary, data)
				switch {
				case err != nil:
				case f.GetError().GetCode() == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
					limited.Add(1)
				case f.GetAccepted() != nil:
					accepted.Add(1)
				case f.GetAuthenticated() == nil && f.GetEvents() == nil:
					other.Add(1)
				}
			}
		}()
		go func() {
			defer wg.Done()
			defer ws.CloseNow()
			t := time.NewTicker(every)
			defer t.Stop()
			for n := 0; ; {
				select {
				case <-fctx.Done():
					return
				case <-t.C:
				}
				for range perTick {
					n++
					f := &clientv1.ClientFrame{RequestId: fmt.Sprint(n), Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
						ConversationId: fd.GetConversationId(), ClientMsgId: fmt.Sprintf("%s-%d", user, n), Text: "flood"}}}
					if writeRaw(fctx, ws, f) != nil {
						return
					}
					sent.Add(1)
				}
			}
		}()
	}
	time.Sleep(time.Second) // the flood at full rate before measuring
	start := [4]int64{sent.Load(), limited.Load(), accepted.Load(), other.Load()}
	r.during = roundTrips(floodPhase)
	r.sent, r.limited, r.accepted, r.other = sent.Load()-start[0], limited.Load()-start[1], accepted.Load()-start[2], other.Load()-start[3]
	stopFlood()
	wg.Wait()
	return r
}

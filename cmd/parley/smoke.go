package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/daemon"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

func smokeCmd(args []string) int {
	fs := flag.NewFlagSet("parley smoke", flag.ExitOnError)
	url := fs.String("url", daemon.Env("PARLEY_URL", "ws://127.0.0.1:8080/ws"), "edge WebSocket endpoint (PARLEY_URL)")
	perDevice := fs.Int("messages", 20, "messages each device sends")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	daemon.Parse(fs, args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	n, err := smoke(ctx, *url, *perDevice, func(format string, args ...any) { fmt.Printf(format+"\n", args...) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "smoke FAILED:", err)
		return 1
	}
	fmt.Printf("smoke ok: %d events delivered\n", n)
	return 0
}

// smoke runs two users on three devices through one group: every device
// must receive every event, contiguous and in seq order, each sender's
// messages in the order sent, and history must match what was pushed.
func smoke(ctx context.Context, url string, perDevice int, logf func(string, ...any)) (int, error) {
	run := uuid.NewString()[:8]
	alice, bob := "alice-"+run, "bob-"+run
	dial := func(user, device string, json bool) (*sdk.Client, error) {
		tok, err := mint(user, time.Hour)
		if err != nil {
			return nil, err
		}
		c, err := sdk.Dial(ctx, sdk.Options{URL: url, Token: tok, DeviceID: device, JSON: json})
		if err != nil {
			return nil, fmt.Errorf("connect %s/%s: %w", user, device, err)
		}
		return c, nil
	}
	var devices []*sdk.Client
	defer func() {
		for _, d := range devices {
			d.Close()
		}
	}()
	for _, d := range []struct {
		user, device string
		json         bool
	}{{alice, "phone", false}, {alice, "laptop", true}, {bob, "phone", false}} {
		c, err := dial(d.user, d.device, d.json)
		if err != nil {
			return 0, err
		}
		devices = append(devices, c)
	}
	logf("connected %s (2 devices) and %s (1 device) to %s", alice, bob, url)

	acc, err := devices[0].CreateGroup(ctx, "smoke "+run, bob)
	if err != nil {
		return 0, fmt.Errorf("create group: %w", err)
	}
	conv := acc.GetConversationId()
	logf("created group %s", conv)

	// Every device sends concurrently; each device's own sends are
	// sequential, so their relative order is known.
	sent := make([][]string, len(devices))
	g, gctx := errgroup.WithContext(ctx)
	for i, d := range devices {
		g.Go(func() error {
			for k := range perDevice {
				text := fmt.Sprintf("%s/%s #%d", d.UserID, d.DeviceID, k)
				if _, err := d.Send(gctx, conv, text); err != nil {
					return fmt.Errorf("%s/%s send %d: %w", d.UserID, d.DeviceID, k, err)
				}
				sent[i] = append(sent[i], text)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	total := uint64(1 + perDevice*len(devices))
	logf("sent %d messages; %d events expected on each device", perDevice*len(devices), total)

	received := make([][]*chatv1.Event, len(devices))
	g, gctx = errgroup.WithContext(ctx)
	for i, d := range devices {
		g.Go(func() error {
			for uint64(len(received[i])) < total {
				select {
				case ev, ok := <-d.Events():
					if !ok {
						return fmt.Errorf("%s/%s: connection closed after %d events: %v", d.UserID, d.DeviceID, len(received[i]), d.Err())
					}
					if ev.GetConversationId() != conv {
						continue
					}
					if want := uint64(len(received[i]) + 1); ev.GetSeq() != want {
						return fmt.Errorf("%s/%s: got seq %d, want %d", d.UserID, d.DeviceID, ev.GetSeq(), want)
					}
					received[i] = append(received[i], ev)
				case <-gctx.Done():
					return fmt.Errorf("%s/%s: only %d of %d events arrived", d.UserID, d.DeviceID, len(received[i]), total)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	for i := range devices[1:] {
		for k := range received[0] {
			if !proto.Equal(received[0][k], received[i+1][k]) {
				return 0, fmt.Errorf("devices disagree at seq %d", k+1)
			}
		}
	}
	for i, d := range devices {
		var mine []string
		for _, ev := range received[0] {
			if ev.GetSenderId() == d.UserID && ev.GetSenderDeviceId() == d.DeviceID && ev.GetMessagePosted() != nil {
				mine = append(mine, ev.GetMessagePosted().GetText())
			}
		}
		if fmt.Sprint(mine) != fmt.Sprint(sent[i]) {
			return 0, fmt.Errorf("%s/%s: its messages arrived as %v, sent as %v", d.UserID, d.DeviceID, mine, sent[i])
		}
	}
	logf("all %d devices received events 1..%d in order", len(devices), total)

	var stored []*chatv1.Event
	for deadline := time.Now().Add(10 * time.Second); ; {
		page, err := devices[2].History(ctx, &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(0), Limit: 200})
		if err != nil {
			return 0, fmt.Errorf("history: %w", err)
		}
		stored = page.GetEvents()
		if uint64(len(stored)) == total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if uint64(len(stored)) != total {
		return 0, fmt.Errorf("history holds %d events, want %d", len(stored), total)
	}
	for k := range stored {
		if !proto.Equal(stored[k], received[0][k]) {
			return 0, fmt.Errorf("history differs from the live event at seq %d", k+1)
		}
	}
	logf("history holds the same %d events", total)
	return int(total) * len(devices), nil
}

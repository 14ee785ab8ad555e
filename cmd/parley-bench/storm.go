package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/parleychat/parley/cmd/internal/cluster"
	"github.com/parleychat/parley/cmd/internal/stats"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// stormOptions shape the reconnect storm: Devices devices, each in Convs
// group conversations of Group devices (plus the feeder that posts to
// it), miss Missed messages per conversation while away, then all dial
// at once and resume, while Chatters other devices keep chatting at
// ChatRate messages per second in all.
type stormOptions struct {
	Devices  int     `json:"devices"`
	Convs    int     `json:"conversations_per_device"`
	Group    int     `json:"devices_per_conversation"`
	Missed   int     `json:"missed_per_conversation"`
	Chatters int     `json:"chatters"`
	ChatRate float64 `json:"chat_msgs_per_s"`
	Dialers  int     `json:"dialers"`
	// NoResume dials without cursors: the connect cost alone.
	NoResume bool `json:"no_resume,omitempty"`
	// ClientNice is the storm client's (this process's) niceness from the
	// storm on: the devices' side runs on the server's cores only because
	// this machine has no others, so it takes what the server and the
	// chatters leave. 0 leaves it as it is.
	ClientNice int `json:"client_nice"`
}

type stormResult struct {
	Options   stormOptions `json:"options"`
	LimitedBy string       `json:"limited_by,omitempty"`
	// SetupS is how long creating the conversations and posting the
	// missed messages took (not part of the storm).
	SetupS         float64 `json:"setup_s"`
	Conversations  int     `json:"conversations"`
	MissedMessages int     `json:"missed_messages"`
	// ConnectPerS is devices over the time from the first dial to the
	// last authenticated; AllAuthenticatedS that time.
	AllAuthenticatedS float64 `json:"all_authenticated_s"`
	ConnectPerS       float64 `json:"connects_per_s"`
	// AllResumedS is from the first dial to the last resumed.
	AllResumedS float64 `json:"all_resumed_s"`
	// Connect is dial → authenticated per device; Resume authenticated →
	// resumed (ms).
	Connect stats.Percentiles `json:"connect_ms"`
	Resume  stats.Percentiles `json:"resume_ms"`
	// Resumed devices got resumed with no failed conversation; Failed did
	// not (within the storm's bound), and Errors counts error frames and
	// connection failures by code.
	Resumed int            `json:"resumed"`
	Failed  int            `json:"failed"`
	Errors  map[string]int `json:"errors,omitempty"`
	// Expected is the events the resumes owed (from each cursor to the
	// conversation's last message); Missing those that did not come,
	// Duplicates events that came twice.
	Expected   int `json:"expected_events"`
	Missing    int `json:"missing"`
	Duplicates int `json:"duplicates"`
	OutOfOrder int `json:"out_of_order"`
	// ChatBefore and ChatDuring are the chatters' send → delivered
	// latency before the storm and from its start until every device
	// resumed; ChatLost deliveries that never came.
	ChatBefore stats.Percentiles `json:"chat_before_ms"`
	ChatDuring stats.Percentiles `json:"chat_during_ms"`
	ChatLost   int               `json:"chat_lost"`
	// ChatBySecond is the chatters' p99 for each second from the first
	// dial: where in the storm the latency builds.
	ChatBySecond []float64 `json:"chat_p99_ms_by_second,omitempty"`
	// ChatSleepLag is the chatters' own process's scheduling delay.
	ChatSleepLag stats.Percentiles `json:"chat_process_sleep_lag_ms"`
	// ChatStages are the server's stage histograms over the storm: how
	// far into the pipeline the chatters' latency builds up.
	ChatStages map[string]stageWindow `json:"chat_stages_during,omitempty"`
	// ServerCPUS and ClientCPUS are the CPU seconds `parley run` and this
	// process used from the first dial to the last resumed.
	ServerCPUS float64 `json:"server_cpu_s"`
	ClientCPUS float64 `json:"client_cpu_s"`
	// MachineCPUS is the CPU seconds of the whole machine over the same
	// span: what is left after the server and the client is the chatters
	// and anything else running (a real stack's JVMs, say).
	MachineCPUS float64 `json:"machine_cpu_s"`
	// QuietWaitS is how long the storm waited, before it started, for the
	// machine to fall quiet (a real stack left running by the phases
	// before compacts and collects for a while), and BusyBeforePct how
	// busy the machine was in the last second of that wait.
	QuietWaitS    float64 `json:"quiet_wait_s"`
	BusyBeforePct float64 `json:"busy_before_pct"`
	Profile       string  `json:"cpu_profile,omitempty"`
}

// Before the storm the machine should be quiet: a busy second is waited
// out, up to quietMaxWait.
const (
	quietBusyPct = 10
	quietMaxWait = 2 * time.Minute
)

// waitQuiet waits until the machine is at most quietBusyPct busy over a
// second, or quietMaxWait has passed.
func waitQuiet(ctx context.Context, res *stormResult, progress *progressLine) {
	began := time.Now()
	progress.set(func() string { return "storm: waiting for the machine to be quiet" })
	for ctx.Err() == nil {
		res.BusyBeforePct = busyPct(time.Second)
		if res.BusyBeforePct <= quietBusyPct || time.Since(began) > quietMaxWait {
			break
		}
	}
	res.QuietWaitS = stats.Round3(time.Since(began).Seconds())
}

// stormConv is one conversation of the storm.
type stormConv struct {
	id      string
	members []int // storm devices
	feeder  int
	cursor  uint64 // the seq every member holds before going away
	last    uint64 // the seq of the last missed message
}

// stormDevice is one reconnecting device and what its resume brought.
type stormDevice struct {
	user    string
	convs   []*stormConv
	seen    map[string][]uint64
	dialAt  time.Time
	authAt  time.Time
	doneAt  time.Time
	failed  bool
	errCode string
}

// runStorm starts a `parley run` of its own (client and server are
// separate processes) and measures a reconnect storm against it.
func runStorm(ctx context.Context, so stormOptions, profile, binDir, logDir string, fileLimit uint64, minter *auth.HS256, runID string, progress *progressLine) (stormResult, error) {
	res := stormResult{Errors: map[string]int{}}
	// This process holds one descriptor per device, chatter and feeder,
	// and so does the server.
	if headroom := int(fileLimit) - 1000 - so.Chatters; so.Devices > headroom {
		res.LimitedBy = fmt.Sprintf("RLIMIT_NOFILE %d: %d devices instead of %d", fileLimit, headroom, so.Devices)
		so.Devices = max(headroom, 0)
	}
	so.Devices -= so.Devices % so.Group
	res.Options = so
	if so.Devices < so.Group || so.Convs < 1 || so.Group < 2 {
		return res, fmt.Errorf("storm: need at least one conversation of %d devices", so.Group)
	}
	if _, err := os.Stat(filepath.Join(binDir, "parley")); err != nil {
		// The stack's build holds the services, not `parley run`.
		if binDir, err = cluster.Build(ctx, true); err != nil {
			return res, err
		}
		defer os.RemoveAll(binDir)
	}
	waitQuiet(ctx, &res, progress)
	dataDir, err := os.MkdirTemp("", "parley-bench-storm-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dataDir)
	c, err := cluster.StartEmbedded(ctx, binDir, logDir, dataDir, benchSecret, procEnv)
	if err != nil {
		return res, err
	}
	defer c.Stop()
	url := c.WSURL(0)
	dial := func(ctx context.Context, user, device string) (*sdk.Client, error) {
		tok, err := minter.Mint(user, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return sdk.Dial(dctx, sdk.Options{URL: url, Token: tok, DeviceID: device, EventBuffer: 1 << 14})
	}

	// Setup: feeders create the conversations with the storm users as
	// members (they need not be online) and post the missed messages.
	began := time.Now()
	rng := rand.New(rand.NewPCG(7, uint64(so.Devices)))
	devices := make([]*stormDevice, so.Devices)
	for i := range devices {
		devices[i] = &stormDevice{user: fmt.Sprintf("b%s-s%05d", runID, i), seen: map[string][]uint64{}}
	}
	const feeders = 16
	var convs []*stormConv
	for range so.Convs {
		order := rng.Perm(so.Devices)
		for i := 0; i+so.Group <= len(order); i += so.Group {
			cv := &stormConv{members: order[i : i+so.Group], feeder: len(convs) % feeders}
			convs = append(convs, cv)
			for _, d := range cv.members {
				devices[d].convs = append(devices[d].convs, cv)
			}
		}
	}
	res.Conversations = len(convs)
	feed := make([]*sdk.Client, feeders)
	for i := range feed {
		if feed[i], err = dial(ctx, fmt.Sprintf("b%s-feeder%02d", runID, i), "feeder"); err != nil {
			return res, fmt.Errorf("storm: feeder: %w", err)
		}
		defer feed[i].Close()
	}
	var posted atomic.Int64
	progress.set(func() string {
		return fmt.Sprintf("storm: setup, %d conversations, %d messages posted after %s", len(convs), posted.Load(), time.Since(began).Truncate(time.Second))
	})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	text := payload(64)
	for _, cv := range convs {
		g.Go(func() error {
			cl := feed[cv.feeder]
			members := make([]string, len(cv.members))
			for i, d := range cv.members {
				members[i] = devices[d].user
			}
			cctx, cancel := context.WithTimeout(gctx, 30*time.Second)
			defer cancel()
			a, err := cl.CreateGroup(cctx, "storm", members...)
			if err != nil {
				return fmt.Errorf("storm: create: %w", err)
			}
			cv.id, cv.cursor = a.GetConversationId(), a.GetSeq()
			for range so.Missed {
				a, err := cl.Send(cctx, cv.id, text)
				if err != nil {
					return fmt.Errorf("storm: post: %w", err)
				}
				cv.last = max(cv.last, a.GetSeq())
				posted.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	res.MissedMessages = int(posted.Load())
	res.SetupS = stats.Round3(time.Since(began).Seconds())

	// Chatters: pairs in direct conversations, each device sending in
	// turn; latency is send → delivered to the other device.
	ch, err := startChatProc(ctx, so, url, runID)
	if err != nil {
		return res, err
	}
	defer ch.kill()
	if so.ClientNice != 0 {
		// After the server and the chatters started, so they keep theirs.
		if err := reniceSelf(so.ClientNice); err != nil {
			return res, fmt.Errorf("storm: %w", err)
		}
	}
	progress.set(func() string { return "storm: chat before the storm" })
	time.Sleep(5 * time.Second)
	ch.mark()
	stages0, stagesErr := scrapeStages(ctx, c.Procs[0].AdminAddr)

	// The storm: every device dials at once (through a pool of dialers,
	// as a fleet's connections arrive) and resumes its conversations.
	clients := sourceClients()
	var authed, done atomic.Int64
	server := c.Procs[0]
	serverCPU0, _ := cpuSeconds(server.PID())
	clientCPU0, _ := cpuSeconds(os.Getpid())
	busy0, total0 := machineBusy()
	profDone := make(chan string, 1)
	go func() {
		// The server's CPU profile over the storm's first 10 s.
		if profile == "" {
			profDone <- ""
			return
		}
		data, err := server.PprofGet(ctx, "profile?seconds=10")
		if err == nil {
			err = saveProfile(profile, data)
		}
		if err != nil {
			progress.logf("storm profile: %v", err)
			profDone <- ""
			return
		}
		profDone <- profile
	}()
	start := time.Now()
	progress.set(func() string {
		return fmt.Sprintf("storm: %d/%d authenticated, %d resumed after %s", authed.Load(), so.Devices, done.Load(), time.Since(start).Truncate(100*time.Millisecond))
	})
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	conns := make([]*websocket.Conn, len(devices))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	var wg, readers sync.WaitGroup
	next := atomic.Int64{}
	for range so.Dialers {
		wg.Go(func() {
			for sctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(devices) {
					return
				}
				d := devices[i]
				c, async, err := d.resume(sctx, clients[i%len(clients)], url, minter, !so.NoResume, &authed, &done, &readers)
				conns[i] = c
				if err != nil {
					d.failed = true
					if d.errCode == "" {
						d.errCode = "connect: " + errorName(err)
					}
				}
				if !async {
					done.Add(1) // nothing more to read
				}
			}
		})
	}
	wg.Wait()
	readers.Wait()
	ch.mark()
	if stages1, err := scrapeStages(ctx, c.Procs[0].AdminAddr); err == nil && stagesErr == nil {
		res.ChatStages = stagesBetween(stages0, stages1)
	}
	serverCPU1, _ := cpuSeconds(server.PID())
	clientCPU1, _ := cpuSeconds(os.Getpid())
	if busy1, total1 := machineBusy(); total1 > total0 {
		// /proc/stat counts every core's ticks: the busy share of them,
		// times the cores, over the span.
		res.MachineCPUS = stats.Round3(float64(busy1-busy0) / float64(total1-total0) * float64(runtime.NumCPU()) * time.Since(start).Seconds())
	}
	res.ServerCPUS, res.ClientCPUS = stats.Round3(serverCPU1-serverCPU0), stats.Round3(clientCPU1-clientCPU0)
	progress.set(func() string { return "storm: chat after the storm" })

	res.tally(devices, start)
	cr, err := ch.result()
	if err != nil {
		return res, err
	}
	res.ChatBefore, res.ChatDuring, res.ChatLost, res.ChatBySecond, res.ChatSleepLag = cr.Before, cr.During, cr.Lost, cr.BySecond, cr.SleepLag
	res.Profile = <-profDone
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	return res, nil
}

// tally reads what each device's resume brought: connect and resume
// times, failures, and every event owed that did not come or came twice.
func (res *stormResult) tally(devices []*stormDevice, start time.Time) {
	if res.Errors == nil {
		res.Errors = map[string]int{}
	}
	var connect, resume []float64
	var lastAuth, lastDone time.Time
	for _, d := range devices {
		if d.errCode != "" {
			res.Errors[d.errCode]++
		}
		if !d.authAt.IsZero() {
			connect = append(connect, ms(d.authAt.Sub(d.dialAt)))
			lastAuth = later(lastAuth, d.authAt)
		}
		if d.failed || d.doneAt.IsZero() {
			res.Failed++
		} else {
			res.Resumed++
			resume = append(resume, ms(d.doneAt.Sub(d.authAt)))
			lastDone = later(lastDone, d.doneAt)
		}
		if d.seen == nil {
			continue // dialled without cursors
		}
		for _, cv := range d.convs {
			got := d.seen[cv.id]
			res.Expected += int(cv.last - cv.cursor)
			have := map[uint64]bool{}
			prev := cv.cursor
			for _, s := range got {
				if have[s] {
					res.Duplicates++
					continue
				}
				have[s] = true
				if s < prev {
					res.OutOfOrder++
				}
				prev = s
			}
			for s := cv.cursor + 1; s <= cv.last; s++ {
				if !have[s] {
					res.Missing++
				}
			}
		}
	}
	if !lastAuth.IsZero() {
		res.AllAuthenticatedS = stats.Round3(lastAuth.Sub(start).Seconds())
		res.ConnectPerS = stats.Round3(float64(len(connect)) / lastAuth.Sub(start).Seconds())
	}
	if !lastDone.IsZero() {
		res.AllResumedS = stats.Round3(lastDone.Sub(start).Seconds())
	}
	res.Connect, res.Resume = stats.Of(connect), stats.Of(resume)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// sourceClients are HTTP clients dialling from 127.0.0.2-254, so the
// client side of many connections never runs out of ephemeral ports.
func sourceClients() []*http.Client {
	const sources = 253
	clients := make([]*http.Client, sources)
	for i := range clients {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}, Timeout: 10 * time.Second}
		clients[i] = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	}
	return clients
}

// resume dials, authenticates with a cursor per conversation and reads
// until Resumed, keeping every event's seq. The connection stays open
// (reading in the background) for the caller to close.
func (d *stormDevice) resume(ctx context.Context, hc *http.Client, url string, minter *auth.HS256, cursors bool, authed, done *atomic.Int64, readers *sync.WaitGroup) (c *websocket.Conn, async bool, err error) {
	d.dialAt = time.Now()
	c, _, err = websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{wire.SubprotocolProto}})
	if err != nil {
		return nil, false, err
	}
	c.SetReadLimit(1 << 22)
	tok, err := minter.Mint(d.user, 24*time.Hour)
	if err != nil {
		return c, false, err
	}
	a := &clientv1.Authenticate{Token: tok, DeviceId: "storm"}
	for _, cv := range d.convs {
		if !cursors {
			break
		}
		a.Resume = append(a.Resume, &clientv1.Cursor{ConversationId: cv.id, LastSeq: cv.cursor})
	}
	frame, err := wire.Encode(wire.Binary, &clientv1.ClientFrame{RequestId: "auth", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: a}})
	if err != nil {
		return c, false, err
	}
	if err := c.Write(ctx, websocket.MessageBinary, frame); err != nil {
		return c, false, err
	}
	// Until authenticated here; the rest of the resume is read by a
	// goroutine of its own, so a dialer moves on to its next device as a
	// fleet's devices would, each on its own.
	if stop, err := d.read(ctx, c, cursors, authed, true); stop || err != nil {
		return c, false, err
	}
	readers.Go(func() {
		if _, err := d.read(ctx, c, cursors, authed, false); err != nil {
			d.failed = true
			if d.errCode == "" {
				d.errCode = "read: " + errorName(err)
			}
		}
		done.Add(1)
	})
	return c, true, nil
}

// read reads frames until Authenticated (untilAuth) or Resumed, keeping
// every event's seq. It reports stop when nothing more is to be read.
func (d *stormDevice) read(ctx context.Context, c *websocket.Conn, cursors bool, authed *atomic.Int64, untilAuth bool) (stop bool, err error) {
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return true, err
		}
		f, err := wire.DecodeServer(wire.Binary, data)
		if err != nil {
			return true, err
		}
		switch {
		case f.GetAuthenticated() != nil:
			d.authAt = time.Now()
			authed.Add(1)
			if !cursors {
				// No Resumed comes without cursors.
				d.doneAt, d.seen = d.authAt, nil
				c.CloseRead(context.Background())
				return true, nil
			}
			if untilAuth {
				return false, nil
			}
		case f.GetEvents() != nil:
			for _, ev := range f.GetEvents().GetEvents() {
				d.seen[ev.GetConversationId()] = append(d.seen[ev.GetConversationId()], ev.GetSeq())
			}
		case f.GetError() != nil:
			if d.errCode == "" {
				d.errCode = f.GetError().GetCode().String()
			}
			if f.GetError().GetCode() == chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
				d.failed = true
				return true, nil
			}
		case f.GetResumed() != nil:
			d.doneAt = time.Now()
			d.failed = len(f.GetResumed().GetFailed()) > 0
			// Keep answering the edge's pings until the storm ends.
			c.CloseRead(context.Background())
			return true, nil
		}
	}
}

// chat is the chatters' traffic: pairs of devices in direct
// conversations, sending at a fixed total rate.
type chat struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	clients []*sdk.Client
	mu      sync.Mutex
	sent    map[string]chatSent
	// lat are delivery latencies with their send times; marks split them
	// into before and during.
	lat   []chatSample
	marks []time.Time
	total atomic.Int64
	got   atomic.Int64
}

type chatSent struct {
	at   time.Time
	from int
}

type chatSample struct {
	at time.Time
	ms float64
}

func startChat(ctx context.Context, so stormOptions, dial func(context.Context, string, string) (*sdk.Client, error), runID string) (*chat, error) {
	cctx, cancel := context.WithCancel(ctx)
	ch := &chat{cancel: cancel, sent: map[string]chatSent{}}
	pairs := so.Chatters / 2
	if pairs == 0 {
		return ch, nil
	}
	ch.clients = make([]*sdk.Client, 2*pairs)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range ch.clients {
		g.Go(func() error {
			cl, err := dial(gctx, fmt.Sprintf("b%s-chat%03d", runID, i), "chat")
			ch.clients[i] = cl
			return err
		})
	}
	if err := g.Wait(); err != nil {
		ch.stop()
		return nil, fmt.Errorf("storm: chatter: %w", err)
	}
	ids := make([]string, pairs)
	for p := range pairs {
		octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
		a, err := ch.clients[2*p].OpenDirect(octx, fmt.Sprintf("b%s-chat%03d", runID, 2*p+1))
		ocancel()
		if err != nil {
			ch.stop()
			return nil, fmt.Errorf("storm: chatter: %w", err)
		}
		ids[p] = a.GetConversationId()
	}
	for i, cl := range ch.clients {
		ch.wg.Go(func() {
			for ev := range cl.Events() {
				if ev.GetMessagePosted() == nil {
					continue
				}
				now := time.Now()
				ch.mu.Lock()
				// The sender's own echo does not count.
				if s, ok := ch.sent[ev.GetClientMsgId()]; ok && s.from != i {
					delete(ch.sent, ev.GetClientMsgId())
					ch.lat = append(ch.lat, chatSample{at: s.at, ms: ms(now.Sub(s.at))})
					ch.got.Add(1)
				}
				ch.mu.Unlock()
			}
		})
	}
	every := time.Duration(float64(time.Second) * float64(len(ch.clients)) / so.ChatRate)
	for i, cl := range ch.clients {
		conv := ids[i/2]
		ch.wg.Go(func() {
			// Spread the chatters' sends over the period: tickers started
			// together would send all 200 at once every 2 s, a burst that
			// queues and measures itself.
			select {
			case <-cctx.Done():
				return
			case <-time.After(every * time.Duration(i) / time.Duration(len(ch.clients))):
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-cctx.Done():
					return
				case <-t.C:
				}
				id := sdk.NewClientMsgID()
				ch.mu.Lock()
				ch.sent[id] = chatSent{at: time.Now(), from: i}
				ch.mu.Unlock()
				ch.total.Add(1)
				sctx, scancel := context.WithTimeout(cctx, 10*time.Second)
				_, _ = cl.SendWithID(sctx, conv, id, "chat")
				scancel()
			}
		})
	}
	return ch, nil
}

// mark ends a window of the chat's samples.
func (ch *chat) mark() {
	ch.mu.Lock()
	ch.marks = append(ch.marks, time.Now())
	ch.mu.Unlock()
}

// result splits the latencies by send time: before the first mark, and
// between the first and the second.
func (ch *chat) result() (before, during stats.Percentiles, lost int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var b, d []float64
	for _, s := range ch.lat {
		switch {
		case len(ch.marks) > 0 && s.at.Before(ch.marks[0]):
			b = append(b, s.ms)
		case len(ch.marks) > 1 && s.at.Before(ch.marks[1]):
			d = append(d, s.ms)
		}
	}
	// A message still unanswered 2 s after the storm is counted lost.
	cut := time.Now().Add(-2 * time.Second)
	for _, s := range ch.sent {
		if s.at.Before(cut) {
			lost++
		}
	}
	return stats.Of(b), stats.Of(d), lost
}

// bySecond is the p99 of the samples sent in each second from start to
// the last mark.
func (ch *chat) bySecond(start time.Time) []float64 {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.marks) < 2 {
		return nil
	}
	secs := make([][]float64, int(ch.marks[1].Sub(start)/time.Second)+1)
	for _, s := range ch.lat {
		if s.at.Before(start) || !s.at.Before(ch.marks[1]) {
			continue
		}
		i := int(s.at.Sub(start) / time.Second)
		secs[i] = append(secs[i], s.ms)
	}
	out := make([]float64, len(secs))
	for i, v := range secs {
		out[i] = stats.Round3(stats.Of(v).P99)
	}
	return out
}

func (ch *chat) stop() {
	ch.cancel()
	for _, cl := range ch.clients {
		if cl != nil {
			cl.Close()
		}
	}
	ch.wg.Wait()
}

// reniceSelf sets every thread of this process to niceness n (Linux keeps
// it per thread; threads started later inherit it from their creator).
// It cannot be undone without privileges, so the storm, the last phase,
// alone calls it.
func reniceSelf(n int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("renice the storm client: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("renice the storm client's thread %d: %w", tid, err)
		}
	}
	return nil
}

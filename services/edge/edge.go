// Package edge is the WebSocket gateway: it authenticates client
// connections, turns their frames into commands and reads, serves Push to
// fan-out and writes deliveries to sockets, and reports its sessions to
// presence. It holds no state but its live connections.
package edge

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/presenceclient"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

//go:embed webui
var webui embed.FS

// Config configures the service.
type Config struct {
	// HTTPAddr serves /ws, the web page, /healthz and /readyz.
	HTTPAddr string
	// GRPCAddr serves EdgeService.Push.
	GRPCAddr string
	// PushAddr is how fan-out reaches GRPCAddr; the bound address if empty.
	PushAddr        string
	NodeID          string
	IngestAddr      string
	PersistenceAddr string
	// PresenceAddrs are the presence instances, in instance order.
	PresenceAddrs []string
	// JWTSecret verifies HS256 tokens.
	JWTSecret []byte
	// DevTokens serves GET /v1/dev/token?user=NAME, minting a token for
	// anyone who asks. For local use only.
	DevTokens bool

	MaxFrameBytes  int
	QueueLimit     int
	AuthTimeout    time.Duration
	RequestTimeout time.Duration
	WriteTimeout   time.Duration
	// ResumeWait bounds how long a resume waits for history (persistence)
	// to reach the conversation's head or the live events.
	ResumeWait time.Duration
	// Heartbeat is how often the node renews its presence lease.
	Heartbeat time.Duration
	Logger    *slog.Logger
}

func (c *Config) defaults() {
	if c.NodeID == "" {
		c.NodeID = "edge-" + uuid.NewString()[:8]
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = wire.MaxFrameBytes
	}
	if c.QueueLimit <= 0 {
		c.QueueLimit = 1024
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.ResumeWait <= 0 {
		c.ResumeWait = 5 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Service is a running edge node.
type Service struct {
	edgev1.UnimplementedEdgeServiceServer
	cfg            Config
	log            *slog.Logger
	verifier       *auth.HS256
	hub            *hub
	reporter       *reporter
	ingest         ingestv1.IngestServiceClient
	persistence    persistencev1.PersistenceServiceClient
	clientConns    []*grpc.ClientConn
	presenceClient *presenceclient.Client
	httpLis        net.Listener
	grpcLis        net.Listener
	http           *http.Server
	grpc           *grpc.Server
	// conns counts live read loops, so shutdown can wait for them.
	conns sync.WaitGroup
	// liveMu guards live, every accepted connection (authenticated or not),
	// so shutdown can close them all.
	liveMu sync.Mutex
	live   map[*conn]struct{}
	Probe  health.Probe
	// shedEphemeral counts receipts and typing indicators not written to a
	// connection because its queue was filling up with events.
	shedEphemeral atomic.Int64
	// resyncs counts connections dropped for a full queue.
	resyncs atomic.Int64
	// reg holds the node's metrics; gaps counts the holes resumes met in
	// history (resume.go).
	reg  *prometheus.Registry
	gaps *metrics.Gaps
	// pushed counts the deliveries Push received, by kind: what routing
	// sent this node.
	pushed [pushedKinds]atomic.Int64

	// Typing (typing.go): presence locates the other members, whose edges
	// this node pushes to itself; members are cached briefly.
	presence presencev1.PresenceServiceClient
	pushAddr string
	members  ttlCache[[]string]
	// coMembersCache backs the presence privacy rule (presence.go).
	coMembersCache ttlCache[map[string]bool]
	watchers       watchers
	peersMu        sync.Mutex
	peers          map[string]*grpc.ClientConn
}

// New binds both listeners and dials the internal services (lazily: gRPC
// connects on first use).
func New(cfg Config) (*Service, error) {
	cfg.defaults()
	verifier, err := auth.NewHS256(cfg.JWTSecret)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("service", "edge", "node", cfg.NodeID), verifier: verifier, hub: newHub(), live: map[*conn]struct{}{}}
	s.reg = metrics.NewRegistry()
	s.gaps = metrics.NewGaps(s.reg, "edge")
	dial := func(addr string) (*grpc.ClientConn, error) {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("edge: dial %s: %w", addr, err)
		}
		s.clientConns = append(s.clientConns, c)
		return c, nil
	}
	ic, err := dial(cfg.IngestAddr)
	if err != nil {
		return nil, err
	}
	pc, err := dial(cfg.PersistenceAddr)
	if err != nil {
		s.closeClients()
		return nil, err
	}
	prc, err := presenceclient.Dial(cfg.PresenceAddrs)
	if err != nil {
		s.closeClients()
		return nil, fmt.Errorf("edge: %w", err)
	}
	s.presenceClient = prc
	s.ingest = ingestv1.NewIngestServiceClient(ic)
	s.persistence = persistencev1.NewPersistenceServiceClient(pc)
	if s.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		s.closeClients()
		return nil, fmt.Errorf("edge: grpc address: %w", err)
	}
	if s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		s.grpcLis.Close()
		s.closeClients()
		return nil, fmt.Errorf("edge: http address: %w", err)
	}
	pushAddr := cfg.PushAddr
	if pushAddr == "" {
		pushAddr = s.grpcLis.Addr().String()
	}
	s.presence = prc
	s.pushAddr = pushAddr
	s.reporter = newReporter(s.presence, cfg.NodeID, pushAddr, s.hub, s.log, cfg.Heartbeat)
	s.grpc = grpc.NewServer()
	edgev1.RegisterEdgeServiceServer(s.grpc, s)
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Close releases what New opened, for a service whose Run is never called
// (Run releases it otherwise): a process that fails to start the parts
// after this one.
func (s *Service) Close() {
	s.grpcLis.Close()
	s.httpLis.Close()
	s.closeClients()
}

func (s *Service) closeClients() {
	for _, c := range s.clientConns {
		c.Close()
	}
	if s.presenceClient != nil {
		s.presenceClient.Close()
	}
	s.peersMu.Lock()
	for _, c := range s.peers {
		c.Close()
	}
	s.peers = nil
	s.peersMu.Unlock()
}

// HTTPAddr is the bound HTTP address.
func (s *Service) HTTPAddr() string { return s.httpLis.Addr().String() }

// GRPCAddr is the bound Push address.
func (s *Service) GRPCAddr() string { return s.grpcLis.Addr().String() }

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	health.Register(mux, s.Probe.Ready)
	mux.Handle("GET /metrics", s.metricsHandler())
	daemon.Pprof(mux)
	mux.Handle("GET /", pageHandler())
	if s.cfg.DevTokens {
		mux.HandleFunc("GET /v1/dev/token", s.devToken)
	}
	return mux
}

// pageHandler serves the chat page from webui/ as it is: index.html, its
// stylesheet and its ES modules, with no build step between.
func pageHandler() http.Handler {
	page, _ := fs.Sub(webui, "webui")
	return http.FileServerFS(page)
}

func (s *Service) devToken(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	tok, err := s.verifier.Mint(user, 24*time.Hour)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
}

func (s *Service) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.Probe.Ready() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(smallHijacker{w}, r, &websocket.AcceptOptions{
		Subprotocols: []string{wire.SubprotocolProto, wire.SubprotocolJSON},
		// Apps on other origins authenticate with a token in the first
		// frame, never with cookies, so cross-origin use is safe.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return
	}
	format, ok := wire.FormatFor(ws.Subprotocol())
	if !ok {
		ws.Close(websocket.StatusPolicyViolation, "subprotocol must be "+wire.SubprotocolProto+" or "+wire.SubprotocolJSON)
		return
	}
	// Beyond this the library closes the connection; below it, oversize
	// frames get an error frame and the connection lives on.
	ws.SetReadLimit(int64(s.cfg.MaxFrameBytes) * 16)
	c := &conn{svc: s, ws: ws, format: format}
	s.conns.Add(1)
	s.liveMu.Lock()
	s.live[c] = struct{}{}
	s.liveMu.Unlock()
	// Authentication runs here, in the handler's goroutine, and is bounded
	// by AuthTimeout; the net/http buffers this goroutine pins are released
	// once it returns.
	if !c.authenticate(context.Background()) {
		c.shutdown()
		return
	}
	go c.readLoop()
}

// Push implements EdgeService.
func (s *Service) Push(_ context.Context, req *edgev1.PushRequest) (*edgev1.PushResponse, error) {
	n := 0
	for _, d := range req.GetDeliveries() {
		switch {
		case d.GetEvent() != nil:
			s.pushed[pushedEvent].Add(1)
			s.forgetDeparture(d.GetEvent(), d.GetUserIds())
			n += s.hub.deliver(item{event: d.GetEvent()}, d.GetUserIds())
		case d.GetReceipt() != nil:
			s.pushed[pushedReceipt].Add(1)
			n += s.hub.deliver(item{receipt: d.GetReceipt()}, d.GetUserIds())
		case d.GetTyping() != nil:
			s.pushed[pushedTyping].Add(1)
			n += s.hub.deliver(item{typing: d.GetTyping()}, d.GetUserIds())
		case d.GetFlags() != nil:
			s.pushed[pushedFlags].Add(1)
			n += s.hub.deliver(item{flags: d.GetFlags()}, d.GetUserIds())
		}
	}
	return &edgev1.PushResponse{Queued: uint32(n)}, nil
}

// forgetDeparture drops what this node cached of a membership that ev
// ends: the conversation's member list, and who the users it is delivered
// to share conversations with. Else a removed member could type into the
// conversation, and see its members' presence, for as long as the caches
// keep them (membersTTL). It runs before the event is queued, so once a
// client has its removal, this node decides by persistence's view.
func (s *Service) forgetDeparture(ev *chatv1.Event, users []string) {
	if ev.GetMemberRemoved() == nil && ev.GetMemberLeft() == nil {
		return
	}
	s.members.drop(ev.GetConversationId())
	for _, u := range users {
		s.coMembersCache.drop(u)
	}
}

// Run serves until ctx ends. Shutdown order: readiness off; stop accepting
// connections; close live ones with "going away" so clients reconnect to
// another node, and wait for their read loops; stop Push; tell presence the
// sessions are gone; close clients.
func (s *Service) Run(ctx context.Context) error {
	rctx, stopReporter := context.WithCancel(context.WithoutCancel(ctx))
	reporterDone := make(chan struct{})
	go func() { s.reporter.run(rctx); close(reporterDone) }()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.watchLoop(gctx); return nil })
	g.Go(func() error {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("edge http serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("edge grpc serve: %w", err)
		}
		return nil
	})
	s.Probe.SetReady(true)
	s.log.Info("edge ready", "http", s.HTTPAddr(), "push", s.GRPCAddr())
	<-gctx.Done()

	s.Probe.SetReady(false)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = s.http.Shutdown(sctx)
	s.liveMu.Lock()
	for c := range s.live {
		go c.ws.Close(websocket.StatusGoingAway, "server shutting down")
	}
	s.liveMu.Unlock()
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		s.log.Warn("edge: connections did not close in time")
	}
	s.grpc.GracefulStop()
	stopReporter()
	<-reporterDone
	s.closeClients()
	return g.Wait()
}

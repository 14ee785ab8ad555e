// Package edge is the WebSocket gateway: it authenticates client
// connections, turns their frames into commands and reads, serves Push to
// fan-out and writes deliveries to sockets, and reports its sessions to
// presence. It holds no state but its live connections.
//
// It does four jobs, each in its own files: the transport (conn.go,
// queue.go, writer.go), the protocol (protocol.go's table of handlers, one
// file per family of frames), the access decisions the edge takes itself
// rather than the sequencer or persistence (access.go), and the node
// (edge.go: clients, Push, the presence reporter, the hub).
//
// # Lock order
//
// A goroutine holding one of these mutexes may take only those after it:
//
//  1. reporter.sendMu serialises reports to presence, so a snapshot never
//     overtakes a later session's own report. It is the one lock held
//     across a remote call (Report); only the reporter's run loop (and its
//     last report at shutdown) takes it. A handshake waits for the report
//     carrying its session on a channel, never on the lock.
//  2. reporter.mu guards the pending session changes; a snapshot reads
//     the hub under it.
//  3. hub.mu (read-write) indexes connections by user; Push queues on
//     each connection under its read lock.
//  4. conn.mu guards one connection's queue, held events and device
//     state. Nothing is taken under it, and it is never held across a
//     socket write, so Push never waits for a slow client.
//
// The others are leaves, taken with none of the above held and nothing
// taken under them: Service.live's mu (every accepted connection),
// watchers.mu (watchLoop collects changes under it and queues them after
// releasing it), peers' connection pool (push.Edges), the mu of each
// of access's caches and limiter.mu (limits.go).
package edge

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/presenceclient"
	"github.com/parleychat/parley/pkg/server/rpcdial"
	"github.com/parleychat/parley/pkg/server/tracing"
	sdkjs "github.com/parleychat/parley/sdk/js"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

//go:embed webui
var webui embed.FS

// Service is a running edge node.
type Service struct {
	edgev1.UnimplementedEdgeServiceServer
	Probe health.Probe

	cfg      Config
	log      *slog.Logger
	verifier *auth.Verifier
	srv      servers
	clients  clients
	// live is every accepted connection; hub indexes the authenticated
	// ones by user, for Push.
	live liveConns
	// poller holds the read loops of idle connections (poller_linux.go);
	// nil where there is none, and they wait in their goroutines.
	poller   *poller
	hub      *hub
	reporter *reporter
	access   access
	watchers watchers
	peers    peers
	stats    *stats
	tracer   trace.Tracer
	// accepting is true while the node takes new connections: from Run's
	// start until it drains.
	accepting atomic.Bool
	lim       *limiter
	tokens    tokenStats
}

// servers are what New binds and Run serves.
type servers struct {
	httpLis, grpcLis, adminLis net.Listener
	http, admin                *http.Server
	grpc                       *grpc.Server
	// backendLis and backend serve the backend API (backend.go); nil
	// when it is off.
	backendLis net.Listener
	backend    *grpc.Server
}

// clients are the internal services the node calls.
type clients struct {
	ingest      ingestv1.IngestServiceClient
	persistence persistencev1.PersistenceServiceClient
	// presence splits each call by the instance owning each user.
	presence presencev1.PresenceServiceClient
	// open is what closeClients closes.
	open []io.Closer
	// conns are the connections readiness follows: ingest's and each
	// presence instance's.
	conns []*grpc.ClientConn
}

// New binds both listeners and dials the internal services (lazily: gRPC
// connects on first use).
func New(cfg Config) (*Service, error) {
	if cfg.Registry == nil {
		return nil, errors.New("edge: Config.Registry is required")
	}
	cfg.defaults()
	log := cfg.Logger.With("service", "edge", "node", cfg.NodeID)
	if cfg.DevTokens && len(cfg.JWTSecret) == 0 {
		return nil, errors.New("edge: dev tokens need a jwt secret to sign them")
	}
	verifier, err := auth.NewVerifier(auth.Config{
		Secret: cfg.JWTSecret, JWKSURL: cfg.JWKSURL, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience,
		JWKSRefresh: cfg.JWKSRefresh, JWKSMinRefresh: cfg.JWKSMinRefresh, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	s := &Service{cfg: cfg, log: log, verifier: verifier, hub: newHub(), stats: newStats(cfg.Registry),
		tracer: tracing.Tracer(cfg.TracerProvider), lim: newLimiter(cfg.Limits, cfg.Registry)}
	s.tokens.register(cfg.Registry)
	if p, err := newPoller(); err != nil {
		log.Warn("edge: no poller; each idle connection keeps a goroutine", "err", err)
	} else {
		s.poller = p
	}
	// Every internal client is measured (metrics) and traced.
	clientOpts := append(s.stats.metrics.GRPCClient(), tracing.GRPCClient(cfg.TracerProvider)...)
	dialOpts := append([]grpc.DialOption{mtls.DialOption(cfg.TLS), rpcdial.Reconnect}, clientOpts...)
	dial := func(addr string) (*grpc.ClientConn, error) {
		c, err := grpc.NewClient(addr, dialOpts...)
		if err != nil {
			return nil, fmt.Errorf("edge: dial %s: %w", addr, err)
		}
		s.clients.open = append(s.clients.open, c)
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
	prc, err := presenceclient.Dial(cfg.PresenceAddrs, mtls.DialOption(cfg.TLS), clientOpts...)
	if err != nil {
		s.closeClients()
		return nil, fmt.Errorf("edge: %w", err)
	}
	s.clients.open = append(s.clients.open, prc)
	s.clients.conns = append([]*grpc.ClientConn{ic}, prc.Conns()...)
	ingest := newStreamedIngest(ingestv1.NewIngestServiceClient(ic), s.tracer, s.log)
	s.clients.open = append(s.clients.open, ingest)
	s.clients.ingest = ingest
	s.clients.persistence = persistencev1.NewPersistenceServiceClient(pc)
	s.clients.presence = prc
	s.access.persistence = s.clients.persistence
	if s.srv.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		s.closeClients()
		return nil, fmt.Errorf("edge: grpc address: %w", err)
	}
	if s.srv.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		s.srv.grpcLis.Close()
		s.closeClients()
		return nil, fmt.Errorf("edge: http address: %w", err)
	}
	if s.srv.adminLis, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		s.srv.grpcLis.Close()
		s.srv.httpLis.Close()
		s.closeClients()
		return nil, fmt.Errorf("edge: admin address: %w", err)
	}
	if err := s.checkDevExposure(); err != nil {
		s.Close()
		return nil, err
	}
	s.peers.Timeout = typingPush
	s.peers.DialOptions = clientOpts
	s.peers.Dial = mtls.DialOption(cfg.TLS)
	s.peers.self = cfg.PushAddr
	if s.peers.self == "" {
		s.peers.self = s.srv.grpcLis.Addr().String()
	}
	s.reporter = newReporter(s.clients.presence, cfg.NodeID, s.peers.self, s.hub, s.log, cfg.Heartbeat)
	serverOpts := append(s.stats.metrics.GRPCServer(), tracing.GRPCServer(cfg.TracerProvider)...)
	s.srv.grpc = grpc.NewServer(append(serverOpts, mtls.ServerOption(cfg.TLS))...)
	edgev1.RegisterEdgeServiceServer(s.srv.grpc, s)
	if err := s.listenBackend(cfg, serverOpts); err != nil {
		s.Close()
		return nil, err
	}
	s.srv.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	s.srv.admin = &http.Server{Handler: s.adminRoutes(), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Close releases what New opened, for a service whose Run is never called
// (Run releases it otherwise): a process that fails to start the parts
// after this one.
func (s *Service) Close() {
	s.srv.grpcLis.Close()
	s.srv.httpLis.Close()
	s.srv.adminLis.Close()
	if s.srv.backendLis != nil {
		s.srv.backendLis.Close()
	}
	s.closeClients()
}

func (s *Service) closeClients() {
	for _, c := range s.clients.open {
		c.Close()
	}
	s.peers.Close()
	s.verifier.Close()
}

// HTTPAddr is the bound HTTP address.
func (s *Service) HTTPAddr() string { return s.srv.httpLis.Addr().String() }

// GRPCAddr is the bound Push address.
func (s *Service) GRPCAddr() string { return s.srv.grpcLis.Addr().String() }

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	// Only what clients use: the probes, metrics and profiles are on the
	// admin listener (admin.go).
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.Handle("GET /", pageHandler())
	mux.Handle("GET /sdk/", sdkHandler())
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

// sdkHandler serves the JavaScript SDK's ES modules (sdk/js/src) at
// /sdk/, where the page's protocol.js imports them from.
func sdkHandler() http.Handler {
	return http.StripPrefix("/sdk", http.FileServerFS(sdkjs.Browser()))
}

func (s *Service) devToken(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	tok, err := s.verifier.Minter().Mint(user, 24*time.Hour)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
}

// Push implements EdgeService.
func (s *Service) Push(ctx context.Context, req *edgev1.PushRequest) (*edgev1.PushResponse, error) {
	n := 0
	for _, d := range req.GetDeliveries() {
		switch {
		case d.GetEvent() != nil:
			s.stats.pushed[pushedEvent].Add(1)
			s.access.forget(d.GetEvent(), d.GetUserIds())
			n += s.hub.deliver(item{event: d.GetEvent()}, d.GetUserIds())
		case d.GetReceipt() != nil:
			s.stats.pushed[pushedReceipt].Add(1)
			n += s.hub.deliver(item{receipt: d.GetReceipt()}, d.GetUserIds())
		case d.GetTyping() != nil:
			s.stats.pushed[pushedTyping].Add(1)
			n += s.hub.deliver(item{typing: d.GetTyping()}, d.GetUserIds())
		case d.GetFlags() != nil:
			s.stats.pushed[pushedFlags].Add(1)
			n += s.hub.deliver(item{flags: d.GetFlags()}, d.GetUserIds())
		}
	}
	s.pushed(ctx, len(req.GetDeliveries()), n)
	return &edgev1.PushResponse{Queued: uint32(n)}, nil
}

// Run serves until ctx ends. Shutdown order: readiness off and new
// connections refused (503); drain: close the live ones with
// CloseReconnect spread over Config.Drain, Push still delivering to those
// not yet closed; stop HTTP and wait for the read loops; stop Push; tell
// presence the sessions are gone; close clients.
func (s *Service) Run(ctx context.Context) error {
	rctx, stopReporter := context.WithCancel(context.WithoutCancel(ctx))
	reporterDone := make(chan struct{})
	go func() { s.reporter.run(rctx); close(reporterDone) }()
	// Presence watches go on through the drain, for the connections still
	// open.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watchDone := make(chan struct{})
	go func() { s.watchLoop(wctx); close(watchDone) }()
	// The poller wakes parked read loops until the last connection has
	// shut down, after the drain.
	pctx, stopPoller := context.WithCancel(context.WithoutCancel(ctx))
	pollerDone := make(chan struct{})
	go func() { s.poller.run(pctx); close(pollerDone) }()
	for _, c := range s.clients.conns {
		st := health.WatchConn(wctx, c)
		s.Probe.Need(c.Target(), st.Err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.keepalive(gctx); return nil })
	adminDone := s.serveAdmin()
	g.Go(func() error {
		if err := s.srv.http.Serve(s.srv.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("edge http serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.srv.grpc.Serve(s.srv.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("edge grpc serve: %w", err)
		}
		return nil
	})
	if s.srv.backend != nil {
		g.Go(func() error {
			if err := s.srv.backend.Serve(s.srv.backendLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("edge backend serve: %w", err)
			}
			return nil
		})
	}
	s.accepting.Store(true)
	s.Probe.SetReady(true)
	s.log.Info("edge ready", "http", s.HTTPAddr(), "admin", s.AdminAddr(), "push", s.GRPCAddr(), "backend", s.BackendAddr())
	<-gctx.Done()

	s.Probe.SetNotReady("draining")
	s.accepting.Store(false)
	// HTTP keeps serving through the drain: /readyz says why it fails and
	// /ws answers 503, so a load balancer still routing here retries
	// another node.
	s.drain(context.WithoutCancel(ctx))
	s.Probe.SetReady(false)
	stopWatch()
	<-watchDone
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = s.srv.http.Shutdown(sctx)
	// Connections accepted as the drain began.
	s.live.closeAll(CloseReconnect, "draining: reconnect elsewhere")
	if !s.live.wait(sctx) {
		s.log.Warn("edge: connections did not close in time")
	}
	stopPoller()
	<-pollerDone
	s.srv.grpc.GracefulStop()
	if s.srv.backend != nil {
		s.srv.backend.GracefulStop()
	}
	stopReporter()
	<-reporterDone
	s.closeClients()
	err := g.Wait()
	return errors.Join(err, s.stopAdmin(adminDone))
}

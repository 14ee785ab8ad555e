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
//     across a remote call (Report); only the reporter and a handshake,
//     which waits for presence by design, take it.
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
// releasing it), peers' connection pool (push.Edges) and the mu of each
// of access's caches.
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
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/presenceclient"
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
	verifier *auth.HS256
	srv      servers
	clients  clients
	// live is every accepted connection; hub indexes the authenticated
	// ones by user, for Push.
	live     liveConns
	hub      *hub
	reporter *reporter
	access   access
	watchers watchers
	peers    peers
	stats    *stats
}

// servers are what New binds and Run serves.
type servers struct {
	httpLis, grpcLis net.Listener
	http             *http.Server
	grpc             *grpc.Server
}

// clients are the internal services the node calls.
type clients struct {
	ingest      ingestv1.IngestServiceClient
	persistence persistencev1.PersistenceServiceClient
	// presence splits each call by the instance owning each user.
	presence presencev1.PresenceServiceClient
	// open is what closeClients closes.
	open []io.Closer
}

// New binds both listeners and dials the internal services (lazily: gRPC
// connects on first use).
func New(cfg Config) (*Service, error) {
	if cfg.Registry == nil {
		return nil, errors.New("edge: Config.Registry is required")
	}
	cfg.defaults()
	verifier, err := auth.NewHS256(cfg.JWTSecret)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("service", "edge", "node", cfg.NodeID), verifier: verifier, hub: newHub(), stats: newStats(cfg.Registry)}
	dial := func(addr string) (*grpc.ClientConn, error) {
		c, err := grpc.NewClient(addr, mtls.DialOption(cfg.TLS))
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
	prc, err := presenceclient.Dial(cfg.PresenceAddrs, mtls.DialOption(cfg.TLS))
	if err != nil {
		s.closeClients()
		return nil, fmt.Errorf("edge: %w", err)
	}
	s.clients.open = append(s.clients.open, prc)
	s.clients.ingest = ingestv1.NewIngestServiceClient(ic)
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
	s.peers.Timeout = typingPush
	s.peers.Dial = mtls.DialOption(cfg.TLS)
	s.peers.self = cfg.PushAddr
	if s.peers.self == "" {
		s.peers.self = s.srv.grpcLis.Addr().String()
	}
	s.reporter = newReporter(s.clients.presence, cfg.NodeID, s.peers.self, s.hub, s.log, cfg.Heartbeat)
	s.srv.grpc = grpc.NewServer(mtls.ServerOption(cfg.TLS))
	edgev1.RegisterEdgeServiceServer(s.srv.grpc, s)
	s.srv.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Close releases what New opened, for a service whose Run is never called
// (Run releases it otherwise): a process that fails to start the parts
// after this one.
func (s *Service) Close() {
	s.srv.grpcLis.Close()
	s.srv.httpLis.Close()
	s.closeClients()
}

func (s *Service) closeClients() {
	for _, c := range s.clients.open {
		c.Close()
	}
	s.peers.Close()
}

// HTTPAddr is the bound HTTP address.
func (s *Service) HTTPAddr() string { return s.srv.httpLis.Addr().String() }

// GRPCAddr is the bound Push address.
func (s *Service) GRPCAddr() string { return s.srv.grpcLis.Addr().String() }

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

// Push implements EdgeService.
func (s *Service) Push(_ context.Context, req *edgev1.PushRequest) (*edgev1.PushResponse, error) {
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
	return &edgev1.PushResponse{Queued: uint32(n)}, nil
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
	s.Probe.SetReady(true)
	s.log.Info("edge ready", "http", s.HTTPAddr(), "push", s.GRPCAddr())
	<-gctx.Done()

	s.Probe.SetReady(false)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = s.srv.http.Shutdown(sctx)
	s.live.closeAll(websocket.StatusGoingAway, "server shutting down")
	if !s.live.wait(sctx) {
		s.log.Warn("edge: connections did not close in time")
	}
	s.srv.grpc.GracefulStop()
	stopReporter()
	<-reporterDone
	s.closeClients()
	return g.Wait()
}

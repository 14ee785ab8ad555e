// Package presence is the session registry: edges report the sessions they
// hold, fan-out asks where a user's devices are. State lives in memory and
// is rebuilt from the edges' snapshots after a restart.
package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/parleychat/parley/pkg/health"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// DefaultLease bounds how long a dead edge's sessions linger.
const DefaultLease = 10 * time.Second

// MaxLocate bounds users per Locate call.
const MaxLocate = 10_000

// Config configures the service.
type Config struct {
	GRPCAddr string
	Lease    time.Duration
	Logger   *slog.Logger
}

// Service is a running presence node.
type Service struct {
	presencev1.UnimplementedPresenceServiceServer
	cfg   Config
	log   *slog.Logger
	reg   *Registry
	lis   net.Listener
	grpc  *grpc.Server
	Probe health.Probe
}

// New binds the gRPC listener.
func New(cfg Config) (*Service, error) {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("presence listen %s: %w", cfg.GRPCAddr, err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("service", "presence"), reg: NewRegistry(cfg.Lease, time.Now), lis: lis, grpc: grpc.NewServer()}
	presencev1.RegisterPresenceServiceServer(s.grpc, s)
	return s, nil
}

// Addr is the bound gRPC address.
func (s *Service) Addr() string { return s.lis.Addr().String() }

// Run serves until ctx ends, then stops taking calls and returns.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("presence grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(s.cfg.Lease / 4)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				for _, id := range s.reg.Expire() {
					s.log.Warn("edge lease lapsed; its sessions are gone", "node", id)
				}
			}
		}
	})
	s.Probe.SetReady(true)
	s.log.Info("presence ready", "grpc", s.Addr())
	<-gctx.Done()
	s.Probe.SetReady(false)
	s.grpc.GracefulStop()
	return g.Wait()
}

// Report implements PresenceService.
func (s *Service) Report(_ context.Context, req *presencev1.ReportRequest) (*presencev1.ReportResponse, error) {
	if req.GetNodeId() == "" || req.GetPushAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "node_id and push_address are required")
	}
	ok := s.reg.Report(req)
	return &presencev1.ReportResponse{SendSnapshot: !ok, Lease: durationpb.New(s.cfg.Lease)}, nil
}

// Status implements PresenceService.
func (s *Service) Status(_ context.Context, req *presencev1.StatusRequest) (*presencev1.StatusResponse, error) {
	if len(req.GetUserIds()) > MaxLocate {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d users per call", MaxLocate)
	}
	return &presencev1.StatusResponse{Statuses: s.reg.Status(req.GetUserIds())}, nil
}

// Locate implements PresenceService.
func (s *Service) Locate(_ context.Context, req *presencev1.LocateRequest) (*presencev1.LocateResponse, error) {
	if len(req.GetUserIds()) > MaxLocate {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d users per call", MaxLocate)
	}
	return &presencev1.LocateResponse{Locations: s.reg.Locate(req.GetUserIds())}, nil
}

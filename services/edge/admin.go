package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/health"
)

// The admin listener serves what operators and the orchestrator use (the
// probes, metrics and, with PARLEY_PPROF=1, profiles) on an address of its
// own, so that nothing but the WebSocket and the page is reachable where
// clients are: a profile stalls the process, and metrics name its load.

// AdminAddr is the bound admin address.
func (s *Service) AdminAddr() string { return s.srv.adminLis.Addr().String() }

func (s *Service) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	health.Register(mux, &s.Probe)
	mux.Handle("GET /metrics", s.metricsHandler())
	daemon.Pprof(mux)
	return mux
}

// serveAdmin serves the admin listener until stopAdmin; it runs through
// the whole of Run, shutdown included, so the probes report the drain.
func (s *Service) serveAdmin() <-chan error {
	done := make(chan error, 1)
	go func() {
		err := s.srv.admin.Serve(s.srv.adminLis)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("edge admin serve: %w", err)
		}
		done <- err
	}()
	return done
}

func (s *Service) stopAdmin(done <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.admin.Shutdown(ctx)
	return <-done
}

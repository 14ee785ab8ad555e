// Package health serves the /healthz and /readyz probes every service
// has, and /metrics beside them for services that keep metrics.
package health

import (
	"net/http"
	"sync/atomic"
)

// Probe holds a service's readiness. Liveness is the process answering.
type Probe struct {
	ready atomic.Bool
}

// SetReady flips readiness; shutdown sets it false first so load balancers
// stop sending work before anything closes.
func (p *Probe) SetReady(v bool) { p.ready.Store(v) }

// Ready reports readiness.
func (p *Probe) Ready() bool { return p.ready.Load() }

// Register adds the probe endpoints to mux. readyFns must all be ready too.
func Register(mux *http.ServeMux, readyFns ...func() bool) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		for _, f := range readyFns {
			if !f() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
}

// Metrics serves h, a service's own metrics registry, at GET /metrics on
// the probes' mux: one address for the orchestrator and the scraper.
func Metrics(mux *http.ServeMux, h http.Handler) {
	mux.Handle("GET /metrics", h)
}

// Package daemon is the lifecycle every Parley binary shares: flags with
// PARLEY_* environment fallbacks, a slog logger, /healthz and /readyz, and
// a run function stopped by SIGINT or SIGTERM.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/tracing"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// Env returns the environment variable key, or def when it is unset.
func Env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// EnvDuration is Env for durations; a malformed value is reported and
// the default used.
func EnvDuration(key string, def time.Duration) time.Duration {
	v, ok := os.LookupEnv(key)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q is not a duration; using %s\n", key, v, def)
		return def
	}
	return d
}

// EnvInt is Env for integers; a malformed value is reported and the
// default used.
func EnvInt(key string, def int) int {
	v, ok := os.LookupEnv(key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q is not a whole number; using %d\n", key, v, def)
		return def
	}
	return n
}

// List splits a comma-separated flag value.
func List(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Logger writes logs to stderr at PARLEY_LOG_LEVEL (debug, info, warn,
// error; info by default), as text or, with PARLEY_LOG_FORMAT=json, one
// JSON object a line. Lines logged with a context carry its trace_id,
// span_id and request_id (tracing.LogHandler).
func Logger() *slog.Logger {
	log, err := NewLogger(os.Stderr, Env("PARLEY_LOG_FORMAT", "text"), Env("PARLEY_LOG_LEVEL", "info"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v; logging text at info\n", err)
		log, _ = NewLogger(os.Stderr, "text", "info")
	}
	return log
}

// NewLogger writes logs to w in format (text or json) from level (debug,
// info, warn, error) up, each line logged with a context carrying its
// trace and request ids.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "text", "":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
	return slog.New(tracing.LogHandler(h)), nil
}

// Run runs run until SIGINT or SIGTERM, serving probe on healthAddr
// (none when empty), and returns the process exit code. run must return
// once its context ends.
func Run(log *slog.Logger, healthAddr string, probe health.Checker, run func(ctx context.Context) error) int {
	return RunWithMetrics(log, healthAddr, probe, nil, run)
}

// RunWithMetrics is Run that also serves metrics (when not nil) at
// /metrics on healthAddr.
func RunWithMetrics(log *slog.Logger, healthAddr string, probe health.Checker, metrics http.Handler, run func(ctx context.Context) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var srv *http.Server
	served := make(chan error, 1)
	if healthAddr != "" {
		// Bound before run starts, so a taken address fails the start
		// rather than stopping a running service with exit code 0.
		lis, err := net.Listen("tcp", healthAddr)
		if err != nil {
			return Fail(log, fmt.Errorf("health address: %w", err))
		}
		mux := http.NewServeMux()
		health.Register(mux, probe)
		if metrics != nil {
			health.Metrics(mux, metrics)
		}
		Pprof(mux)
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				served <- fmt.Errorf("health server on %s: %w", healthAddr, err)
				stop()
			}
		}()
	}
	err := run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	select {
	case serr := <-served:
		err = errors.Join(err, serr)
	default:
	}
	if err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// Fail reports, as the one line a process that could not start leaves,
// what stopped it, and returns the exit code for that.
func Fail(log *slog.Logger, err error) int {
	log.Error("start failed", "err", err)
	return 1
}

// Pprof registers net/http/pprof's handlers on mux when PARLEY_PPROF=1, so
// a CPU or heap profile of a process under load can be taken (the benchmark
// does). Off by default: a profile endpoint lets anyone who reaches the
// address stall the process and read its memory.
func Pprof(mux *http.ServeMux) {
	if Env("PARLEY_PPROF", "") != "1" {
		return
	}
	// Method-qualified patterns: a mux that also serves "GET /" would
	// otherwise reject them as conflicting.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// Parse parses args into fs and exits with a usage message on error.
func Parse(fs *flag.FlagSet, args []string) {
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
}

// Tracing is the span export a process's flags ask for: -otlp-endpoint
// (PARLEY_OTLP_ENDPOINT; when unset, the standard
// OTEL_EXPORTER_OTLP_ENDPOINT also turns export on) and -trace-ratio
// (PARLEY_TRACE_RATIO). Off by default.
type Tracing struct {
	service  string
	endpoint *string
	ratio    *float64
}

// TracingFlags registers the tracing flags on fs for service (the
// resource's service.name).
func TracingFlags(fs *flag.FlagSet, service string) *Tracing {
	env, err := tracing.ConfigFromEnv(service)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v; sampling every trace\n", err)
		env.Ratio = 1
	}
	return &Tracing{service: service,
		endpoint: fs.String("otlp-endpoint", env.Endpoint, "OTLP/gRPC collector for spans, http://host:port (plaintext), https://host:port (TLS) or host:port; empty: no export unless OTEL_EXPORTER_OTLP_ENDPOINT is set (PARLEY_OTLP_ENDPOINT)"),
		ratio:    fs.Float64("trace-ratio", env.Ratio, "share of new traces sampled, 0 to 1; a span with a parent follows the parent (PARLEY_TRACE_RATIO)"),
	}
}

// Start makes the TracerProvider the flags ask for (nil when export is
// off) and the func that flushes it, to call once the services stopped.
func (t *Tracing) Start(log *slog.Logger) (trace.TracerProvider, func(), error) {
	if *t.ratio < 0 || *t.ratio > 1 {
		return nil, nil, fmt.Errorf("-trace-ratio %v: want 0 to 1", *t.ratio)
	}
	c := tracing.Config{Service: t.service, Endpoint: *t.endpoint, Ratio: *t.ratio,
		FromEnv: *t.endpoint == "" && (os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "")}
	tp, shutdown, err := tracing.Start(context.Background(), c)
	if err != nil {
		return nil, nil, err
	}
	if tp != nil {
		log.Info("exporting spans over OTLP", "endpoint", c.Endpoint, "from_env", c.FromEnv, "ratio", c.Ratio)
		// The SDK reports failed exports to otel's process-wide handler,
		// which writes plain lines to stderr; a main owns the process, so
		// it sends them through its logger (JSON included) instead.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "err", err) }))
	}
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			log.Warn("spans not flushed", "err", err)
		}
	}, nil
}

package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProbesAndMetricsShareTheMux(t *testing.T) {
	var p Probe
	mux := http.NewServeMux()
	Register(mux, &p)
	Metrics(mux, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "parley_up 1\n")
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable || body != "not ready: not started\n" {
		t.Fatalf("/readyz before ready: %d %q", code, body)
	}
	p.SetReady(true)
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n", "/metrics": "parley_up 1\n"} {
		if code, body := get(t, srv.URL+path); code != http.StatusOK || body != want {
			t.Errorf("%s: %d %q, want 200 %q", path, code, body, want)
		}
	}
}

// TestReadinessNamesWhatIsNotReady flips the lifecycle and each
// dependency in turn: /readyz is 503 naming the first one not ready, and
// 200 once all are.
func TestReadinessNamesWhatIsNotReady(t *testing.T) {
	var p Probe
	var kafka, store atomic.Pointer[error]
	ok := error(nil)
	kafka.Store(&ok)
	store.Store(&ok)
	p.Need("kafka", func() error { return *kafka.Load() })
	p.Need("cassandra", func() error { return *store.Load() })
	mux := http.NewServeMux()
	Register(mux, &p)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	down := func(msg string) *error { err := errors.New(msg); return &err }

	steps := []struct {
		name string
		set  func()
		want string
	}{
		{"started", func() { p.SetReady(true) }, ""},
		{"kafka down", func() { kafka.Store(down("dial tcp: connection refused")) }, "not ready: kafka: dial tcp: connection refused\n"},
		{"both down: the first named", func() { store.Store(down("no hosts")) }, "not ready: kafka: dial tcp: connection refused\n"},
		{"kafka back", func() { kafka.Store(&ok) }, "not ready: cassandra: no hosts\n"},
		{"cassandra back", func() { store.Store(&ok) }, ""},
		{"draining", func() { p.SetNotReady("draining") }, "not ready: draining\n"},
		{"stopping", func() { p.SetReady(false) }, "not ready: stopping\n"},
	}
	for _, st := range steps {
		st.set()
		code, body := get(t, srv.URL+"/readyz")
		switch {
		case st.want == "" && (code != http.StatusOK || body != "ready\n"):
			t.Errorf("%s: %d %q, want 200 ready", st.name, code, body)
		case st.want != "" && (code != http.StatusServiceUnavailable || body != st.want):
			t.Errorf("%s: %d %q, want 503 %q", st.name, code, body, st.want)
		}
		if got := p.Ready(); got != (st.want == "") {
			t.Errorf("%s: Ready() %v", st.name, got)
		}
	}
}

// TestLivenessFailsOnAStalledLoop: a loop that stops checking in fails
// /healthz past its bound; one busy handling work, or ended, does not.
func TestLivenessFailsOnAStalledLoop(t *testing.T) {
	var p Probe
	l := p.Watch("consumer", time.Hour)
	mux := http.NewServeMux()
	Register(mux, &p)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz of a fresh loop: %d", code)
	}
	// Its last check-in two hours ago.
	l.last.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "stalled: consumer: no progress for 2h0m0s") {
		t.Fatalf("/healthz of a stalled loop: %d %q", code, body)
	}
	l.busy.Store(true)
	if err := p.Alive(); err != nil {
		t.Fatalf("a loop busy handling work counted as stalled: %v", err)
	}
	l.busy.Store(false)
	l.Beat()
	if err := p.Alive(); err != nil {
		t.Fatalf("after a beat: %v", err)
	}
	l.last.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	l.Done()
	if err := p.Alive(); err != nil {
		t.Fatalf("an ended loop counted as stalled: %v", err)
	}
	var none *Loop
	none.Beat() // a loop nothing watches
	none.Busy(true)
	none.Done()
}

// TestPingerKeepsTheLatestAnswer: before the first answer the pinger
// says so; then it follows the ping.
func TestPingerKeepsTheLatestAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var fail atomic.Bool
	var pings atomic.Int32
	started := make(chan struct{})
	p := Ping(ctx, 10*time.Millisecond, func(context.Context) error {
		if pings.Add(1) == 1 {
			<-started
		}
		if fail.Load() {
			return errors.New("refused")
		}
		return nil
	})
	if err := p.Err(); !errors.Is(err, errNotChecked) {
		t.Fatalf("before the first ping: %v", err)
	}
	close(started)
	waitFor(t, "ping ok", func() bool { return p.Err() == nil })
	fail.Store(true)
	waitFor(t, "ping failing", func() bool { return p.Err() != nil && p.Err().Error() == "refused" })
	fail.Store(false)
	waitFor(t, "ping ok again", func() bool { return p.Err() == nil })
}

// TestConnStateFollowsTheConnection: while dials fail the connection is
// unreachable; once they succeed it recovers.
func TestConnStateFollowsTheConnection(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	var down atomic.Bool
	down.Store(true)
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if down.Load() {
			return nil, errors.New("connection refused")
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	c, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := WatchConn(t.Context(), c)
	waitFor(t, "unreachable", func() bool { return st.Err() != nil && strings.Contains(st.Err().Error(), lis.Addr().String()) })
	down.Store(false)
	c.ResetConnectBackoff()
	waitFor(t, "reachable", func() bool { return st.Err() == nil })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after 10s", what)
		}
	}
}

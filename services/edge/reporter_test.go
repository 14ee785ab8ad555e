package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// scriptedPresence answers Report with the scripted answers in turn, then
// takes every report; it keeps the requests.
type scriptedPresence struct {
	presencev1.PresenceServiceClient
	mu      sync.Mutex
	answers []func() (*presencev1.ReportResponse, error)
	reqs    []*presencev1.ReportRequest
}

func (p *scriptedPresence) Report(_ context.Context, req *presencev1.ReportRequest, _ ...grpc.CallOption) (*presencev1.ReportResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, req)
	if len(p.answers) == 0 {
		return &presencev1.ReportResponse{}, nil
	}
	a := p.answers[0]
	p.answers = p.answers[1:]
	return a()
}

// TestConnectWaitsForATakenReport: connect's channel is closed only once
// presence has taken a report holding the session, whether its own report
// was taken, refused (presence replaying after a restart) or answered
// with a request for a snapshot (presence did not know the node).
func TestConnectWaitsForATakenReport(t *testing.T) {
	refused := func() (*presencev1.ReportResponse, error) {
		return nil, errors.New("presence is replaying its partitions")
	}
	snapshot := func() (*presencev1.ReportResponse, error) {
		return &presencev1.ReportResponse{SendSnapshot: true}, nil
	}
	cases := []struct {
		name    string
		answers []func() (*presencev1.ReportResponse, error)
	}{
		{name: "taken at once"},
		{name: "refused twice", answers: []func() (*presencev1.ReportResponse, error){refused, refused}},
		{name: "snapshot asked for", answers: []func() (*presencev1.ReportResponse, error){snapshot}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &scriptedPresence{answers: tc.answers}
			h := newHub()
			c := &conn{user: "u", session: "s"}
			h.add(c)
			// A heartbeat far off: only retries and pokes report.
			r := newReporter(p, "node", "addr", h, slog.New(slog.DiscardHandler), time.Hour)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			fate := r.connect(&presencev1.Session{SessionId: "s", UserId: "u"})
			go r.run(ctx)
			select {
			case <-fate.tried:
			case <-time.After(5 * time.Second):
				t.Fatal("the first report was not tried within 5 s")
			}
			select {
			case <-fate.taken:
			case <-time.After(5 * time.Second):
				t.Fatal("not taken 5 s after presence takes reports again")
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if len(p.reqs) <= len(tc.answers) {
				t.Fatalf("taken after %d reports, but presence did not take the first %d", len(p.reqs), len(tc.answers))
			}
			last := p.reqs[len(p.reqs)-1]
			if !slices.ContainsFunc(last.GetConnected(), func(s *presencev1.Session) bool { return s.GetSessionId() == "s" }) {
				t.Fatalf("the report taken, %v, does not hold the session", last)
			}
		})
	}
}

// slowPresence takes every report after a delay, as a presence writing
// each report to its log does, and keeps the requests.
type slowPresence struct {
	presencev1.PresenceServiceClient
	delay time.Duration
	mu    sync.Mutex
	reqs  []*presencev1.ReportRequest
}

func (p *slowPresence) Report(ctx context.Context, req *presencev1.ReportRequest, _ ...grpc.CallOption) (*presencev1.ReportResponse, error) {
	time.Sleep(p.delay)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, req)
	return &presencev1.ReportResponse{}, nil
}

// TestConnectsShareReports: a burst of connects is carried by a few
// reports, not one each, and every session is in a report presence took
// before its connect learns it was taken. A synchronous report per
// connect made 200 reports here.
func TestConnectsShareReports(t *testing.T) {
	const n = 200
	p := &slowPresence{delay: 20 * time.Millisecond}
	h := newHub()
	r := newReporter(p, "node", "addr", h, slog.New(slog.DiscardHandler), time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go r.run(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("s%d", i)
			h.add(&conn{user: "u" + id, session: id})
			fate := r.connect(&presencev1.Session{SessionId: id, UserId: "u" + id})
			select {
			case <-fate.taken:
			case <-time.After(10 * time.Second):
				errs <- fmt.Errorf("%s not taken within 10 s", id)
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, req := range p.reqs {
				if slices.ContainsFunc(req.GetConnected(), func(s *presencev1.Session) bool { return s.GetSessionId() == id }) {
					return
				}
			}
			errs <- fmt.Errorf("%s taken, but no report presence took holds it", id)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reqs) > n/10 {
		t.Errorf("%d connects took %d reports, want at most %d", n, len(p.reqs), n/10)
	}
	t.Logf("%d connects in %d reports", n, len(p.reqs))
}

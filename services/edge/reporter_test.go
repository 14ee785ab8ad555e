package edge

import (
	"context"
	"errors"
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
		wantErr bool
	}{
		{name: "taken at once"},
		{name: "refused twice", answers: []func() (*presencev1.ReportResponse, error){refused, refused}, wantErr: true},
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
			taken, err := r.connect(ctx, &presencev1.Session{SessionId: "s", UserId: "u"})
			if (err != nil) != tc.wantErr {
				t.Fatalf("connect: %v, want an error: %v", err, tc.wantErr)
			}
			if len(tc.answers) > 0 {
				select {
				case <-taken:
					t.Fatal("taken before presence took a report")
				default:
				}
			}
			go r.run(ctx)
			select {
			case <-taken:
			case <-time.After(5 * time.Second):
				t.Fatal("not taken 5 s after presence takes reports again")
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			last := p.reqs[len(p.reqs)-1]
			if !slices.ContainsFunc(last.GetConnected(), func(s *presencev1.Session) bool { return s.GetSessionId() == "s" }) {
				t.Fatalf("the report taken, %v, does not hold the session", last)
			}
		})
	}
}

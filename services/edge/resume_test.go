package edge

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// scriptedHistory answers History from a list of what persistence holds,
// which a test may grow between calls, and runs a hook on each call (to
// push live events while the catch-up is under way).
type scriptedHistory struct {
	persistencev1.PersistenceServiceClient
	mu     sync.Mutex
	stored []uint64
	onCall func(call int)
	calls  int
	// unknownFor answers its first calls NOT_FOUND, as a persistence that
	// has not stored the conversation's creation yet does.
	unknownFor int
}

func (h *scriptedHistory) History(_ context.Context, req *persistencev1.HistoryRequest, _ ...grpc.CallOption) (*persistencev1.HistoryResponse, error) {
	h.mu.Lock()
	h.calls++
	call, hook := h.calls, h.onCall
	h.mu.Unlock()
	if hook != nil {
		hook(call)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if call <= h.unknownFor {
		return nil, status.Error(codes.NotFound, "conversation not found")
	}
	resp := &persistencev1.HistoryResponse{}
	for _, s := range h.stored {
		if s > req.GetAfterSeq() {
			if len(resp.Events) == int(req.GetLimit()) {
				resp.HasMore = true
				break
			}
			resp.Events = append(resp.Events, &chatv1.Event{ConversationId: req.GetConversationId(), Seq: s})
		}
	}
	return resp, nil
}

// CatchUp answers each cursor as History would, one call each, so the
// scripted calls count the same whether the edge batches or not.
func (h *scriptedHistory) CatchUp(ctx context.Context, req *persistencev1.CatchUpRequest, _ ...grpc.CallOption) (*persistencev1.CatchUpResponse, error) {
	resp := &persistencev1.CatchUpResponse{}
	for _, cur := range req.GetCursors() {
		page, err := h.History(ctx, &persistencev1.HistoryRequest{UserId: req.GetUserId(), ConversationId: cur.GetConversationId(), AfterSeq: &cur.AfterSeq, Limit: req.GetLimit()})
		if err != nil {
			return nil, err
		}
		resp.Pages = append(resp.Pages, &persistencev1.CatchUpPage{ConversationId: cur.GetConversationId(), Events: page.GetEvents(), HasMore: page.GetHasMore()})
	}
	return resp, nil
}

// headIngest answers the resume's head probe (a mark of zeros, which moves
// nothing) with a fixed head, as the sequencer does.
type headIngest struct {
	ingestv1.IngestServiceClient
	head uint64
	// probeOnly answers Heads Unimplemented, as an older ingest does, so
	// the edge falls back to a probe per cursor.
	probeOnly bool
}

// Heads answers every ask with the fixed head.
func (h headIngest) Heads(_ context.Context, req *ingestv1.HeadsRequest, _ ...grpc.CallOption) (*ingestv1.HeadsResponse, error) {
	if h.probeOnly {
		return nil, status.Error(codes.Unimplemented, "no Heads here")
	}
	resp := &ingestv1.HeadsResponse{}
	for range req.GetAsks() {
		resp.Heads = append(resp.Heads, h.head)
	}
	return resp, nil
}

func (h headIngest) Submit(_ context.Context, req *ingestv1.SubmitRequest, _ ...grpc.CallOption) (*ingestv1.SubmitResponse, error) {
	m := req.GetCommand().GetMark()
	if m == nil || m.GetDeliveredSeq() != 0 || m.GetReadSeq() != 0 {
		return nil, fmt.Errorf("not a head probe: %v", req.GetCommand())
	}
	return &ingestv1.SubmitResponse{Outcome: &logv1.Outcome{Seq: h.head}}, nil
}

// taken is a session presence already has.
func taken() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestResumeSeam runs a catch-up while live events race it: they are held
// back, released after history without duplicates, and a gap between
// history and the live events is waited out until persistence fills it.
func TestResumeSeam(t *testing.T) {
	const conv = "c1"
	live := func(c *conn, from, to uint64) {
		for s := from; s <= to; s++ {
			c.push(&chatv1.Event{ConversationId: conv, Seq: s})
		}
	}
	cases := []struct {
		name   string
		cursor uint64
		// stored is what history holds at first; grow is added on the
		// given call.
		stored []uint64
		grow   map[int][]uint64
		// liveOn pushes live events [from, to] on the given call.
		liveOn map[int][2]uint64
		// head is the log's head when the resume asks.
		head      uint64
		seam      uint64
		probeOnly bool
	}{
		{name: "live overlaps history", cursor: 2, stored: seqs(1, 8), liveOn: map[int][2]uint64{1: {6, 10}}, head: 8, seam: 8},
		{name: "live right after history", cursor: 0, stored: seqs(1, 5), liveOn: map[int][2]uint64{1: {6, 7}}, head: 5, seam: 5},
		{name: "history behind live, then catches up", cursor: 1, stored: seqs(1, 3), liveOn: map[int][2]uint64{1: {7, 9}},
			grow: map[int][]uint64{3: seqs(4, 6)}, head: 6, seam: 6},
		{name: "several pages", cursor: 0, stored: seqs(1, 450), liveOn: map[int][2]uint64{2: {449, 452}}, head: 450, seam: 450},
		{name: "nothing live", cursor: 3, stored: seqs(1, 4), head: 4, seam: 4},
		{name: "nothing live, heads probed one by one", cursor: 3, stored: seqs(1, 4), head: 4, seam: 4, probeOnly: true},
		// Events sequenced before the device connected, not yet stored and
		// no longer live: only the head says history is short.
		{name: "history behind the head, nothing live", cursor: 1, stored: seqs(1, 3), grow: map[int][]uint64{3: seqs(4, 6)}, head: 6, seam: 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, client := pair(t, 1024)
			h := &scriptedHistory{stored: tc.stored}
			h.onCall = func(call int) {
				if r, ok := tc.liveOn[call]; ok {
					live(c, r[0], r[1])
				}
				if g, ok := tc.grow[call]; ok {
					h.mu.Lock()
					h.stored = append(h.stored, g...)
					h.mu.Unlock()
				}
			}
			c.svc.clients.persistence = h
			c.svc.clients.ingest = headIngest{head: tc.head, probeOnly: tc.probeOnly}
			c.svc.cfg.RequestTimeout = 5 * time.Second
			c.svc.cfg.ResumeWait = 5 * time.Second
			cursors := []*clientv1.Cursor{{ConversationId: conv, LastSeq: tc.cursor}}
			c.hold(cursors)
			go c.resume("auth", cursors, taken())

			want := tc.cursor
			last := tc.seam
			for _, r := range tc.liveOn {
				last = max(last, r[1])
			}
			var resumed *clientv1.Resumed
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for resumed == nil || want < last {
				_, data, err := client.Read(ctx)
				if err != nil {
					t.Fatalf("at seq %d of %d: %v", want, last, err)
				}
				f, err := wire.DecodeServer(wire.Binary, data)
				if err != nil {
					t.Fatal(err)
				}
				if r := f.GetResumed(); r != nil {
					resumed = r
					continue
				}
				for _, ev := range f.GetEvents().GetEvents() {
					if ev.GetSeq() != want+1 {
						t.Fatalf("seq %d after %d", ev.GetSeq(), want)
					}
					want = ev.GetSeq()
				}
			}
			if got := resumed.GetCaughtUp(); len(got) != 1 || got[0].GetLastSeq() != tc.seam || len(resumed.GetFailed()) != 0 {
				t.Fatalf("resumed %v, want the seam at %d", resumed, tc.seam)
			}
			// After the resume, live events flow straight through.
			c.push(&chatv1.Event{ConversationId: conv, Seq: last + 1})
			_, data, err := client.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f, _ := wire.DecodeServer(wire.Binary, data)
			if evs := f.GetEvents().GetEvents(); len(evs) != 1 || evs[0].GetSeq() != last+1 {
				t.Fatalf("live after the resume: %v, want seq %d", f, last+1)
			}
		})
	}
}

// TestResumeFailsShortOfTheHead: when history does not reach the head in
// time, or the cursor is beyond it, the conversation is reported failed
// with an error frame, never as caught up.
func TestResumeFailsShortOfTheHead(t *testing.T) {
	cases := []struct {
		name   string
		cursor uint64
		code   chatv1.ErrorCode
	}{
		{"history stays behind", 1, chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE},
		{"cursor beyond the head", 9, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, client := pair(t, 1024)
			c.svc.clients.persistence = &scriptedHistory{stored: seqs(1, 3)}
			c.svc.clients.ingest = headIngest{head: 5}
			c.svc.cfg.RequestTimeout = 5 * time.Second
			c.svc.cfg.ResumeWait = 300 * time.Millisecond
			cursors := []*clientv1.Cursor{{ConversationId: "c1", LastSeq: tc.cursor}}
			c.hold(cursors)
			go c.resume("auth", cursors, taken())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var code chatv1.ErrorCode
			for {
				f := nextFrame(ctx, t, client)
				if e := f.GetError(); e != nil {
					code = e.GetCode()
				}
				if r := f.GetResumed(); r != nil {
					if len(r.GetCaughtUp()) != 0 || len(r.GetFailed()) != 1 || code != tc.code {
						t.Fatalf("resumed %v after error code %v, want failed with %v", r, code, tc.code)
					}
					return
				}
			}
		})
	}
}

// TestResumeCrossesAHole: a hole in history that fills within the wait is
// no hole (a store showed later events first); one that stays is reported
// once with EVENTS_MISSING naming the conversation and counted, and the
// resume goes on past it to the head and the live events, every time.
// Before, every resume of such a conversation failed, for ever.
func TestResumeCrossesAHole(t *testing.T) {
	const conv = "c1"
	cases := []struct {
		name    string
		stored  []uint64
		grow    map[int][]uint64
		missing bool
	}{
		{name: "hole that stays", stored: append(seqs(1, 3), seqs(5, 8)...), missing: true},
		{name: "hole filled while waiting", stored: append(seqs(1, 3), seqs(5, 8)...), grow: map[int][]uint64{3: {4}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, client := pair(t, 1024)
			h := &scriptedHistory{stored: tc.stored}
			h.onCall = func(call int) {
				if call == 1 {
					for s := uint64(9); s <= 10; s++ {
						c.push(&chatv1.Event{ConversationId: conv, Seq: s})
					}
				}
				if g, ok := tc.grow[call]; ok {
					h.mu.Lock()
					h.stored = append(h.stored, g...)
					slices.Sort(h.stored)
					h.mu.Unlock()
				}
			}
			c.svc.clients.persistence = h
			c.svc.clients.ingest = headIngest{head: 8}
			c.svc.cfg.RequestTimeout = 5 * time.Second
			c.svc.cfg.ResumeWait = 500 * time.Millisecond
			for round := range 2 {
				cursors := []*clientv1.Cursor{{ConversationId: conv, LastSeq: 2}}
				c.hold(cursors)
				go c.resume("auth", cursors, taken())
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				var got []uint64
				var errs []*clientv1.Error
				var resumed *clientv1.Resumed
				for resumed == nil {
					_, data, err := client.Read(ctx)
					if err != nil {
						t.Fatalf("round %d after seqs %v: %v", round, got, err)
					}
					f, err := wire.DecodeServer(wire.Binary, data)
					if err != nil {
						t.Fatal(err)
					}
					for _, ev := range f.GetEvents().GetEvents() {
						got = append(got, ev.GetSeq())
					}
					if e := f.GetError(); e != nil {
						errs = append(errs, e)
					}
					resumed = f.GetResumed()
				}
				want := seqs(3, 8)
				if tc.missing {
					want = append(seqs(3, 3), seqs(5, 8)...)
				}
				if round == 0 {
					want = append(want, 9, 10)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("round %d: seqs %v, want %v", round, got, want)
				}
				if cu := resumed.GetCaughtUp(); len(cu) != 1 || cu[0].GetLastSeq() != 8 || len(resumed.GetFailed()) != 0 {
					t.Fatalf("round %d: resumed %v, want caught up at 8", round, resumed)
				}
				wantErrs := 0
				if tc.missing {
					wantErrs = 1
				}
				if len(errs) != wantErrs {
					t.Fatalf("round %d: error frames %v, want %d", round, errs, wantErrs)
				}
				if tc.missing && (errs[0].GetCode() != chatv1.ErrorCode_ERROR_CODE_EVENTS_MISSING || errs[0].GetConversationId() != conv) {
					t.Fatalf("round %d: error %v, want EVENTS_MISSING for %s", round, errs[0], conv)
				}
			}
			rec := httptest.NewRecorder()
			c.svc.metricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			want := `parley_seq_gaps_total{service="edge"} 0`
			if tc.missing {
				want = `parley_seq_gaps_total{service="edge"} 2`
			}
			if !strings.Contains(rec.Body.String(), want) {
				t.Fatalf("metrics lack %q", want)
			}
		})
	}
}

// countingIngest is headIngest counting the head probes.
type countingIngest struct {
	headIngest
	mu    sync.Mutex
	calls int
}

func (c *countingIngest) Submit(ctx context.Context, req *ingestv1.SubmitRequest, opts ...grpc.CallOption) (*ingestv1.SubmitResponse, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.headIngest.Submit(ctx, req, opts...)
}

// TestResumeWaitsForPresence: the head is asked for only once presence
// has the session. An event sequenced before then is pushed to nobody on
// this edge, so the head must come after it for history to bring it.
func TestResumeWaitsForPresence(t *testing.T) {
	c, client := pair(t, 1024)
	c.svc.clients.persistence = &scriptedHistory{stored: seqs(1, 5)}
	ingest := &countingIngest{headIngest: headIngest{head: 5}}
	c.svc.clients.ingest = ingest
	c.svc.cfg.RequestTimeout = 5 * time.Second
	c.svc.cfg.ResumeWait = 5 * time.Second
	cursors := []*clientv1.Cursor{{ConversationId: "c1", LastSeq: 2}}
	c.hold(cursors)
	presence := make(chan struct{})
	go c.resume("auth", cursors, presence)
	time.Sleep(200 * time.Millisecond)
	ingest.mu.Lock()
	early := ingest.calls
	ingest.mu.Unlock()
	if early != 0 {
		t.Fatalf("%d head probes before presence had the session", early)
	}
	close(presence)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got []uint64
	for {
		_, data, err := client.Read(ctx)
		if err != nil {
			t.Fatalf("after seqs %v: %v", got, err)
		}
		f, err := wire.DecodeServer(wire.Binary, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range f.GetEvents().GetEvents() {
			got = append(got, ev.GetSeq())
		}
		if r := f.GetResumed(); r != nil {
			if fmt.Sprint(got) != "[3 4 5]" || len(r.GetCaughtUp()) != 1 || r.GetCaughtUp()[0].GetLastSeq() != 5 {
				t.Fatalf("resumed %v after seqs %v, want 3 4 5 and the seam at 5", r, got)
			}
			return
		}
	}
}

// TestResumeWaitsForACreationToBeStored: the sequencer knows a
// conversation created a moment ago (its head probe answers), while
// persistence has not stored the creation yet and answers NOT_FOUND. That
// is history behind the log, to be waited for like any other; the resume
// used to fail the cursor at once.
func TestResumeWaitsForACreationToBeStored(t *testing.T) {
	c, client := pair(t, 1024)
	c.svc.clients.persistence = &scriptedHistory{stored: seqs(1, 3), unknownFor: 3}
	c.svc.clients.ingest = headIngest{head: 3}
	c.svc.cfg.RequestTimeout = 5 * time.Second
	c.svc.cfg.ResumeWait = 5 * time.Second
	cursors := []*clientv1.Cursor{{ConversationId: "c1", LastSeq: 0}}
	c.hold(cursors)
	go c.resume("auth", cursors, taken())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []uint64
	for {
		f := nextFrame(ctx, t, client)
		if e := f.GetError(); e != nil {
			t.Fatalf("resume sent %v", e)
		}
		for _, ev := range f.GetEvents().GetEvents() {
			got = append(got, ev.GetSeq())
		}
		if r := f.GetResumed(); r != nil {
			if len(r.GetFailed()) != 0 || !slices.Equal(got, seqs(1, 3)) {
				t.Fatalf("resumed %v with events %v, want seqs 1-3 and nothing failed", r, got)
			}
			return
		}
	}
}

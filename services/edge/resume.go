package edge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// Limits of a resume.
const (
	// MaxResumeCursors bounds the conversations one Authenticate resumes.
	MaxResumeCursors = 1000
	resumePage       = 200
	// resumeProbes bounds the head probes of one resume in flight at once.
	resumeProbes = 32
	// presenceWait bounds how long a resume waits for presence to take
	// the session. A restarted presence waits up to a lease (10 s) for the
	// nodes it knew before it serves; past that the resume goes ahead.
	presenceWait = 15 * time.Second
	// resumeTurnWait bounds a resume's wait for its turn (see
	// Limits.ResumeConcurrency).
	resumeTurnWait = 30 * time.Second
)

// hold starts holding back live events of the resumed conversations. It
// runs before the connection joins the hub, so no live event can slip past
// the catch-up.
func (c *conn) hold(cursors []*clientv1.Cursor) {
	if len(cursors) == 0 {
		return
	}
	c.held = make(map[string][]*chatv1.Event, len(cursors))
	for _, cur := range cursors {
		c.held[cur.GetConversationId()] = nil
	}
}

// resume catches each cursor up from history, then releases the live
// events held meanwhile after the last one history gave, in order and
// without duplicates, and ends with Resumed. It runs in a goroutine of its
// own beside the read loop, so requests are answered during a long
// catch-up.
//
// It asks for the heads only once taken is closed, when presence has the
// session: until then fan-out pushes an event to nobody here, so only
// history can bring it, and only a head asked for afterwards covers it.
// (Devices reconnecting to a restarted `parley run` while presence
// replayed missed the last events before this.)
func (c *conn) resume(requestID string, cursors []*clientv1.Cursor, taken <-chan struct{}) {
	ctx := context.Background()
	wait := time.NewTimer(presenceWait)
	select {
	case <-taken:
	case <-wait.C:
		c.svc.log.Warn("edge: presence still lacks the session; resuming regardless, live events until it has it come only with a later event's gap",
			"user", c.user, "waited", presenceWait)
	}
	wait.Stop()
	end := c.svc.lim.resumeTurn(resumeTurnWait)
	defer end()
	if c.isClosed() {
		return // it ended while it waited its turn
	}
	heads, errs := c.heads(ctx, cursors)
	firsts := c.firstPages(ctx, cursors, errs)
	done := &clientv1.Resumed{}
	var firstErr error
	for i, cur := range cursors {
		at, err := uint64(0), errs[i]
		if err == nil {
			at, err = c.catchUp(ctx, cur, heads[i], firsts[i])
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", cur.GetConversationId(), err)
			}
			code, msg := resumeError(err)
			c.send(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
				Code: code, Message: "resume: " + msg, ConversationId: cur.GetConversationId(),
			}}})
			c.release(cur.GetConversationId(), 0)
			done.Failed = append(done.Failed, proto.CloneOf(cur))
			continue
		}
		done.CaughtUp = append(done.CaughtUp, &clientv1.Cursor{ConversationId: cur.GetConversationId(), LastSeq: at})
	}
	if firstErr != nil {
		// One line per resume, not per conversation: a client naming many
		// conversations it is not in would otherwise write as many lines.
		c.svc.log.Info("edge: resume failed", "user", c.user, "failed", len(done.Failed), "of", len(cursors), "first", firstErr)
	}
	c.send(&clientv1.ServerFrame{RequestId: requestID, Frame: &clientv1.ServerFrame_Resumed{Resumed: done}})
}

// heads learns each conversation's head from the sequencer: the answer
// comes only after every event sequenced so far is on the log. Held live
// events cover what comes later, so history must reach the head and no
// further. One Heads call asks for all of them, and ingest gathers the
// asks of every resume in flight into one probe command per partition (a
// probe per cursor was half the server's work in a reconnect storm). A
// failed call falls back to a probe per cursor, a mark of zeros, which
// moves no position and logs nothing.
func (c *conn) heads(ctx context.Context, cursors []*clientv1.Cursor) ([]uint64, []error) {
	heads, errs := make([]uint64, len(cursors)), make([]error, len(cursors))
	req := &ingestv1.HeadsRequest{Asks: make([]*logv1.HeadAsk, len(cursors))}
	for i, cur := range cursors {
		req.Asks[i] = &logv1.HeadAsk{ConversationId: cur.GetConversationId(), UserId: c.reader(cur.GetConversationId())}
	}
	rctx, cancel := context.WithTimeout(ctx, c.svc.cfg.RequestTimeout)
	resp, err := c.svc.clients.ingest.Heads(rctx, req)
	cancel()
	if err != nil || len(resp.GetHeads()) != len(cursors) {
		return c.probeEach(ctx, cursors)
	}
	for i, cur := range cursors {
		heads[i], errs[i] = checkHead(cur, resp.GetHeads()[i])
	}
	return heads, errs
}

// checkHead refuses a head of 0 (no such conversation, or not the user's:
// one answer for both) and a cursor beyond the head.
func checkHead(cur *clientv1.Cursor, head uint64) (uint64, error) {
	switch {
	case head == 0:
		return 0, &outcomeError{code: chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, msg: "conversation not found"}
	case cur.GetLastSeq() > head:
		return 0, &outcomeError{code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT,
			msg: fmt.Sprintf("seq %d is beyond the conversation's last seq %d", cur.GetLastSeq(), head)}
	}
	return head, nil
}

// probeEach asks each head with a Submit of its own, concurrently.
func (c *conn) probeEach(ctx context.Context, cursors []*clientv1.Cursor) ([]uint64, []error) {
	heads, errs := make([]uint64, len(cursors)), make([]error, len(cursors))
	var g errgroup.Group
	g.SetLimit(resumeProbes)
	for i, cur := range cursors {
		g.Go(func() error {
			rctx, cancel := context.WithTimeout(ctx, c.svc.cfg.RequestTimeout)
			defer cancel()
			resp, err := c.svc.clients.ingest.Submit(rctx, &ingestv1.SubmitRequest{Command: &logv1.Command{
				ConversationId: cur.GetConversationId(), UserId: c.reader(cur.GetConversationId()), DeviceId: c.device,
				Body: &logv1.Command_Mark{Mark: &logv1.Mark{}},
			}})
			switch o := resp.GetOutcome(); {
			case err != nil:
				errs[i] = err
			case o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED:
				errs[i] = &outcomeError{code: o.GetErrorCode(), msg: o.GetErrorMessage()}
			default:
				heads[i], errs[i] = checkHead(cur, o.GetSeq())
			}
			return nil
		})
	}
	_ = g.Wait()
	return heads, errs
}

// firstPages reads the first page after each cursor whose head is known
// in one CatchUp call, instead of a History call each. A failed call
// leaves them all nil, and catchUp reads them itself.
func (c *conn) firstPages(ctx context.Context, cursors []*clientv1.Cursor, errs []error) []*persistencev1.CatchUpPage {
	pages := make([]*persistencev1.CatchUpPage, len(cursors))
	req := &persistencev1.CatchUpRequest{UserId: c.user, Limit: resumePage}
	var idx []int
	for i, cur := range cursors {
		if errs[i] == nil {
			cc := &persistencev1.CatchUpCursor{ConversationId: cur.GetConversationId(), AfterSeq: cur.GetLastSeq()}
			if r := c.reader(cc.ConversationId); r != c.user {
				cc.ReaderId = r
			}
			req.Cursors = append(req.Cursors, cc)
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return pages
	}
	rctx, cancel := context.WithTimeout(ctx, c.svc.cfg.RequestTimeout)
	defer cancel()
	resp, err := c.svc.clients.persistence.CatchUp(rctx, req)
	if err != nil || len(resp.GetPages()) != len(idx) {
		return pages
	}
	for j, i := range idx {
		if resp.GetPages()[j].GetConversationId() == cursors[i].GetConversationId() {
			pages[i] = resp.GetPages()[j]
		}
	}
	return pages
}

// isClosed reports whether the connection takes nothing more.
func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// outcomeError is a sequencer's refusal of a probe.
type outcomeError struct {
	code chatv1.ErrorCode
	msg  string
}

func (e *outcomeError) Error() string { return e.msg }

// catchUp sends conv's events after the cursor from history, up to the
// head and the first held live event, and releases the held ones. It
// returns the seq the device holds at the seam.
//
// A hole in history (seq n+2 after n) is waited for like a history behind
// the log, since a store may show a batch's later events a moment before
// its earlier ones. A hole still there after ResumeWait is taken for what
// it is, events lost from the log: the device is told once with
// EVENTS_MISSING, the events after it follow, and the resume goes on, so a
// lost event never blocks a conversation's resume for good.
func (c *conn) catchUp(ctx context.Context, cur *clientv1.Cursor, head uint64, first *persistencev1.CatchUpPage) (uint64, error) {
	conv, seq := cur.GetConversationId(), cur.GetLastSeq()
	var deadline, holeSince time.Time
	// behind waits for a history that lags the log, at most ResumeWait
	// from the first time; false once that is over.
	behind := func() bool {
		if deadline.IsZero() {
			deadline = time.Now().Add(c.svc.cfg.ResumeWait)
		} else if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
		return true
	}
	for {
		var resp *persistencev1.HistoryResponse
		var err error
		if first != nil {
			// The page firstPages read, starting at the cursor.
			if code := codes.Code(first.GetErrorCode()); code != codes.OK {
				err = status.Error(code, first.GetErrorMessage())
			} else {
				resp = &persistencev1.HistoryResponse{Events: first.GetEvents(), HasMore: first.GetHasMore()}
			}
			first = nil
		} else {
			rctx, cancel := context.WithTimeout(ctx, c.svc.cfg.RequestTimeout)
			resp, err = c.svc.clients.persistence.History(rctx, &persistencev1.HistoryRequest{
				UserId: c.reader(conv), ConversationId: conv, AfterSeq: proto.Uint64(seq), Limit: resumePage,
			})
			cancel()
		}
		if status.Code(err) == codes.NotFound && head > 0 && behind() {
			// The sequencer answered the head probe, so the conversation
			// exists and the user is in it: persistence has not stored
			// its creation (or the user's joining) yet.
			continue
		}
		if err != nil {
			return 0, err
		}
		hole := false
		for _, ev := range resp.GetEvents() {
			if ev.GetSeq() <= seq {
				return 0, fmt.Errorf("history of %s gave seq %d after %d", conv, ev.GetSeq(), seq)
			}
			if ev.GetSeq() > seq+1 {
				if holeSince.IsZero() {
					holeSince = time.Now()
				}
				if time.Since(holeSince) < c.svc.cfg.ResumeWait {
					hole = true
					break
				}
				c.svc.stats.gaps.Report(c.svc.log, conv, seq+1, ev.GetSeq()-1)
				c.send(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
					Code:           chatv1.ErrorCode_ERROR_CODE_EVENTS_MISSING,
					Message:        fmt.Sprintf("resume: events %d-%d are missing from the log and will not come", seq+1, ev.GetSeq()-1),
					ConversationId: conv,
				}}})
			}
			holeSince = time.Time{}
			if !c.enqueue(item{event: ev}, false) {
				return 0, fmt.Errorf("connection closed")
			}
			seq = ev.GetSeq()
		}
		if hole {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if resp.GetHasMore() {
			continue
		}
		// History is exhausted. If it reached the head, release the held
		// events if they start right after it (or there are none).
		// Otherwise history (persistence) is behind the log: wait for it.
		if seq >= head && c.release(conv, seq) {
			return seq, nil
		}
		if !behind() {
			c.release(conv, 0)
			return 0, fmt.Errorf("history of %s stops at seq %d, behind the log (head %d); resume again shortly", conv, seq, head)
		}
	}
}

// release queues the held live events of conv that come after seq and
// stops holding conv, if the first of them is seq+1 (or none is held).
// With seq 0 it releases whatever is held, gap or not. It reports whether
// it released.
func (c *conn) release(conv string, seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	held, ok := c.held[conv]
	if !ok {
		return true
	}
	slices.SortFunc(held, func(a, b *chatv1.Event) int { return cmp.Compare(a.GetSeq(), b.GetSeq()) })
	i := 0
	for i < len(held) && held[i].GetSeq() <= seq {
		i++ // history already gave it
	}
	c.lim.heldBytes -= heldSize(held[:i])
	held = held[i:]
	if seq != 0 && len(held) > 0 && held[0].GetSeq() != seq+1 {
		c.held[conv] = held
		c.heldN -= i
		return false
	}
	delete(c.held, conv)
	c.heldN -= len(held) + i
	c.lim.heldBytes -= heldSize(held)
	for _, ev := range held {
		if !c.enqueueLocked(item{event: ev}) {
			break
		}
	}
	return true
}

// resumeError maps a failed catch-up to a client error.
func resumeError(err error) (chatv1.ErrorCode, string) {
	var oe *outcomeError
	if errors.As(err, &oe) {
		return oe.code, oe.msg
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return grpcError(err)
	}
	return chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, err.Error()
}

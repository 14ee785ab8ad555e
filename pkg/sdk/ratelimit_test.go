package sdk

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// refuse makes the fake edge answer the first n sends RATE_LIMITED with
// retry_after, noting when each send arrived.
func refuse(e *fakeEdge, n int, retryAfter time.Duration) func() []time.Time {
	var mu sync.Mutex
	var arrivals []time.Time
	e.setHook(func(fc *fakeConn, f *clientv1.ClientFrame) bool {
		if f.GetSendMessage() == nil {
			return false
		}
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		refused := len(arrivals) <= n
		mu.Unlock()
		if !refused {
			return false
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		fc.write(&clientv1.ServerFrame{RequestId: f.GetRequestId(), Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
			Code: chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED, Message: "slow down", RetryAfterMs: uint32(retryAfter.Milliseconds()),
		}}})
		return true
	})
	return func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), arrivals...)
	}
}

// TestDoWaitsOutRateLimited: a RATE_LIMITED answer is retried, no sooner
// than its retry_after, and the send lands once.
func TestDoWaitsOutRateLimited(t *testing.T) {
	e := newFakeEdge(t)
	c := dialFake(t, e, Options{})
	accept(t, e)
	const after = 150 * time.Millisecond
	arrivals := refuse(e, 2, after)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	acc, err := c.SendWithID(ctx, "c1", "m1", "hello")
	if err != nil || acc.GetSeq() != 1 || acc.GetDuplicate() {
		t.Fatalf("send = %v, %v; want seq 1 after two refusals", acc, err)
	}
	got := arrivals()
	if len(got) != 3 {
		t.Fatalf("%d sends reached the edge, want 3 (two refused, one taken)", len(got))
	}
	for i := 1; i < len(got); i++ {
		if gap := got[i].Sub(got[i-1]); gap < after {
			t.Errorf("retry %d came %v after the refusal, before its retry_after %v", i, gap, after)
		}
	}
}

// TestDoReturnsRateLimited: past MaxRateLimitRetries, or when ctx cannot
// wait out retry_after, Do returns the refusal with its RetryAfter.
func TestDoReturnsRateLimited(t *testing.T) {
	t.Run("retries exhausted", func(t *testing.T) {
		e := newFakeEdge(t)
		c := dialFake(t, e, Options{})
		accept(t, e)
		arrivals := refuse(e, 1000, time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := c.SendWithID(ctx, "c1", "m1", "hello")
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED || we.RetryAfter != time.Millisecond {
			t.Fatalf("send = %v, want RATE_LIMITED with RetryAfter 1ms", err)
		}
		if n := len(arrivals()); n != MaxRateLimitRetries+1 {
			t.Fatalf("%d sends reached the edge, want %d", n, MaxRateLimitRetries+1)
		}
	})
	t.Run("deadline too near", func(t *testing.T) {
		e := newFakeEdge(t)
		c := dialFake(t, e, Options{})
		accept(t, e)
		arrivals := refuse(e, 1000, time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := c.SendWithID(ctx, "c1", "m1", "hello")
		var we *wire.Error
		if !errors.As(err, &we) || we.RetryAfter != time.Hour {
			t.Fatalf("send = %v, want RATE_LIMITED with RetryAfter 1h", err)
		}
		if n := len(arrivals()); n != 1 {
			t.Fatalf("%d sends reached the edge, want 1: an hour does not fit the deadline", n)
		}
	})
}

// TestRedialWaitsOutTooManyConnections: a redial refused RATE_LIMITED (too
// many connections) waits the server's retry_after before the next one,
// though the policy's own backoff is milliseconds.
func TestRedialWaitsOutTooManyConnections(t *testing.T) {
	e := newFakeEdge(t)
	c := dialFake(t, e, Options{Reconnect: fast()})
	fc := accept(t, e)
	const after = 400 * time.Millisecond
	e.mu.Lock()
	e.tooMany, e.retryAfter = 1, after
	e.mu.Unlock()
	fc.ws.Close(1001, "going away")
	var refusedDelay time.Duration
	deadline := time.After(wait)
	for refusedDelay == 0 {
		select {
		case s := <-c.States():
			if s.State == StateReconnecting && wire.CodeOf(s.Err) == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED {
				refusedDelay = s.Delay
			}
		case <-deadline:
			t.Fatal("no redial was refused")
		}
	}
	if refusedDelay < after {
		t.Fatalf("redial after a refusal with retry_after %v waits %v", after, refusedDelay)
	}
	accept(t, e)
}

// TestRedialWaitsOutABusyEdge: a redial whose upgrade the edge refused
// with 503 and Retry-After (a node letting a reconnect storm in turn)
// waits that long before the next, though the policy's own backoff is
// milliseconds; a Retry-After it cannot read leaves the backoff alone.
func TestRedialWaitsOutABusyEdge(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{{"1", time.Second}, {"soon", 0}} {
		t.Run(tc.header, func(t *testing.T) {
			e := newFakeEdge(t)
			c := dialFake(t, e, Options{Reconnect: fast()})
			fc := accept(t, e)
			e.mu.Lock()
			e.busy, e.busyAfter = 1, tc.header
			e.mu.Unlock()
			fc.ws.Close(1001, "going away")
			deadline := time.After(wait)
			for {
				var s StateChange
				select {
				case s = <-c.States():
				case <-deadline:
					t.Fatal("no redial was refused")
				}
				if s.State != StateReconnecting || s.Attempt == 0 {
					continue
				}
				var be *BusyError
				if got := errors.As(s.Err, &be); got != (tc.want > 0) {
					t.Fatalf("redial after a 503 with Retry-After %q: error %v, BusyError %v", tc.header, s.Err, got)
				}
				if s.Delay < tc.want || (tc.want == 0 && s.Delay >= time.Second) {
					t.Fatalf("redial after a 503 with Retry-After %q waits %v, want at least %v", tc.header, s.Delay, tc.want)
				}
				break
			}
			accept(t, e)
		})
	}
}

package edge

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// TestAuthTimeoutClosesWithCode (issue 19): a client that sends no
// authenticate within AuthTimeout is told UNAUTHENTICATED by an error
// frame and closed with 4001, a close frame a client can tell from a
// network loss. (The read's deadline made coder/websocket drop the TCP
// connection without either.)
func TestAuthTimeoutClosesWithCode(t *testing.T) {
	for _, sp := range []string{wire.SubprotocolProto, wire.SubprotocolJSON} {
		t.Run(sp, func(t *testing.T) {
			lim := DefaultLimits()
			lim.defaults()
			svc := &Service{cfg: Config{AuthTimeout: 200 * time.Millisecond, WriteTimeout: 5 * time.Second, MaxFrameBytes: 64 << 10},
				log: slog.New(slog.DiscardHandler), stats: newStats(metrics.NewRegistry()), lim: newLimiter(lim, metrics.NewRegistry()), tracer: tracing.Tracer(nil)}
			svc.accepting.Store(true)
			srv := httptest.NewServer(http.HandlerFunc(svc.serveWS))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{sp}})
			if err != nil {
				t.Fatal(err)
			}
			defer client.CloseNow()
			start := time.Now()
			_, data, err := client.Read(ctx)
			if err != nil {
				t.Fatalf("client saw %v, want an error UNAUTHENTICATED frame, then close %d", err, CloseUnauthenticated)
			}
			f, _ := wire.FormatFor(sp)
			if fr, err := wire.DecodeServer(f, data); err != nil || fr.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
				t.Fatalf("first frame %v (%v), want an error UNAUTHENTICATED", fr, err)
			}
			if waited := time.Since(start); waited < 150*time.Millisecond {
				t.Errorf("closed after %v, before the auth timeout", waited)
			}
			if _, _, err := client.Read(ctx); websocket.CloseStatus(err) != CloseUnauthenticated {
				t.Fatalf("after the error frame the client saw %v, want close %d", err, CloseUnauthenticated)
			}
			// The connection is let go.
			for deadline := time.Now().Add(5 * time.Second); svc.live.count() > 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections still live after the auth timeout", svc.live.count())
				}
			}
		})
	}
}

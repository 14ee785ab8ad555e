package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// A connection lives as long as its token: the server warns with a
// token_expiring push a while before the token expires, and closes the
// connection at the expiry (Error TOKEN_EXPIRED, close 4001) unless it was
// handed a fresh token of the same user. With Options.TokenFunc the client
// does that by itself when warned; otherwise call RefreshToken.

// TokenExpires is when the current connection's token expires, as the
// server said (zero if it did not say).
func (c *Client) TokenExpires() time.Time {
	ns := c.tokenExpires.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (c *Client) noteTokenExpires(ts *timestamppb.Timestamp) {
	if ts == nil {
		return
	}
	c.tokenExpires.Store(ts.AsTime().UnixNano())
}

// RefreshToken hands the current connection a fresh token, which must be
// the same user's, and returns the connection's new expiry. A refused
// token is a *wire.Error (TOKEN_EXPIRED, UNAUTHENTICATED,
// PERMISSION_DENIED) and leaves the connection on its old token.
func (c *Client) RefreshToken(ctx context.Context, token string) (time.Time, error) {
	cn, err := c.conn(ctx, true)
	if err != nil {
		return time.Time{}, err
	}
	return c.refreshOn(ctx, cn, token)
}

func (c *Client) refreshOn(ctx context.Context, cn *conn, token string) (time.Time, error) {
	resp, err := cn.do(ctx, &clientv1.ClientFrame{RequestId: c.requestID(), Frame: &clientv1.ClientFrame_RefreshToken{
		RefreshToken: &clientv1.RefreshToken{Token: token},
	}})
	if err != nil {
		return time.Time{}, fmt.Errorf("refresh token: %w", err)
	}
	r := resp.GetTokenRefreshed()
	if r == nil {
		return time.Time{}, fmt.Errorf("refresh token: unexpected answer %T", resp.GetFrame())
	}
	c.noteTokenExpires(r.GetExpires())
	return r.GetExpires().AsTime(), nil
}

// onTokenExpiring answers the server's warning: with a TokenFunc, it gets
// a fresh token and hands it to the warned connection. A failure is
// reported on Errors(); the server then closes the connection at the
// expiry, and with Reconnect the client redials with a token from
// TokenFunc.
func (c *Client) onTokenExpiring(cn *conn, w *clientv1.TokenExpiring) {
	c.noteTokenExpires(w.GetExpires())
	if c.opts.TokenFunc == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithDeadline(c.ctx, w.GetExpires().AsTime())
		defer cancel()
		tok, err := c.opts.TokenFunc(ctx)
		if err == nil {
			_, err = c.refreshOn(ctx, cn, tok)
		}
		if err == nil || c.ctx.Err() != nil || cn.isDead() {
			return
		}
		var we *wire.Error
		if !errors.As(err, &we) {
			we = &wire.Error{Code: chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED, Message: "the token expires soon and refreshing it failed: " + err.Error()}
		}
		c.report(we)
	}()
}

package platform_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/parleychat/parley/services/platform"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// tokenWarning is how early the edge warns in these tests.
const tokenWarning = time.Second

// A connection that does not refresh gets token_expiring ahead of the
// expiry, then at the expiry an Error TOKEN_EXPIRED and close 4001.
func TestTokenExpiryClosesConnection(t *testing.T) {
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), TokenWarning: tokenWarning})
	defer stop()
	tok, err := e.minter.Mint("alice", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ws := rawConn(t, e.url, wire.SubprotocolJSON)
	writeJSON(t, ws, &clientv1.ClientFrame{RequestId: "1", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: tok}}})
	a := readFrame(t, ws, wire.JSON).GetAuthenticated()
	if a == nil || a.GetTokenExpires() == nil {
		t.Fatalf("authenticated without token_expires: %v", a)
	}
	expires := a.GetTokenExpires().AsTime()
	if left := time.Until(expires); left <= 0 || left > 3*time.Second {
		t.Fatalf("token_expires %v is %v away, want within the token's 3s", expires, left)
	}

	f := readFrame(t, ws, wire.JSON)
	warnedAt := time.Now()
	w := f.GetTokenExpiring()
	if w == nil || !w.GetExpires().AsTime().Equal(expires) {
		t.Fatalf("got %v, want token_expiring for %v", f, expires)
	}
	if warnedAt.Before(expires.Add(-tokenWarning-200*time.Millisecond)) || !warnedAt.Before(expires) {
		t.Fatalf("warned at %v, want within %v before the expiry %v", warnedAt, tokenWarning, expires)
	}
	// Until the expiry the connection works.
	writeJSON(t, ws, &clientv1.ClientFrame{RequestId: "2", Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}})
	if f := readFrame(t, ws, wire.JSON); f.GetPong() == nil {
		t.Fatalf("before the expiry ping got %v", f)
	}

	f = readFrame(t, ws, wire.JSON)
	if f.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED || time.Now().Before(expires) {
		t.Fatalf("got %v at %v, want an Error TOKEN_EXPIRED at the expiry %v", f, time.Now(), expires)
	}
	_, _, err = ws.Read(tctx(t))
	if got := websocket.CloseStatus(err); got != 4001 {
		t.Fatalf("after TOKEN_EXPIRED: %v (close status %d), want close 4001", err, got)
	}
}

// A client with a TokenFunc refreshes when warned, and its connection
// outlives token after token; the user stays the same.
func TestTokenRefreshKeepsConnection(t *testing.T) {
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), TokenWarning: 2 * time.Second})
	defer stop()
	ctx := tctx(t)
	var minted atomic.Int64
	alice, err := sdk.Dial(ctx, sdk.Options{URL: e.url, TokenFunc: func(context.Context) (string, error) {
		minted.Add(1)
		return e.minter.Mint("alice", 3*time.Second)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	first := alice.TokenExpires()
	if first.IsZero() {
		t.Fatal("no token expiry after authenticating")
	}
	// Past the first token's expiry and a second one's.
	deadline := first.Add(4 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-alice.Done():
			t.Fatalf("connection ended at %v (first token expired at %v): %v", time.Now(), first, alice.Err())
		case e := <-alice.Errors():
			t.Fatalf("error pushed: %v", e)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if n := minted.Load(); n < 3 {
		t.Fatalf("%d tokens minted, want the dial's and at least two refreshes", n)
	}
	if !alice.TokenExpires().After(first.Add(time.Second)) {
		t.Fatalf("token expiry %v, want well after the first %v", alice.TokenExpires(), first)
	}
	if err := alice.Ping(ctx); err != nil {
		t.Fatalf("ping after two refreshes: %v", err)
	}
	if _, err := alice.CreateGroup(ctx, "still me", "bob"); err != nil {
		t.Fatalf("command after refreshes: %v", err)
	}
}

// refresh_token must name the connection's user and be valid; a refused
// one leaves the connection on its token.
func TestRefreshTokenRefusals(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "a", false)
	before := alice.TokenExpires()
	bobs, err := e.minter.Mint("bob", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.RefreshToken(ctx, bobs)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED)
	old, err := e.minter.MintAt("alice", time.Now().Add(-time.Hour), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.RefreshToken(ctx, old)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED)
	_, err = alice.RefreshToken(ctx, "not.a.token")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED)
	if !alice.TokenExpires().Equal(before) {
		t.Fatalf("a refused refresh moved the expiry from %v to %v", before, alice.TokenExpires())
	}
	longer, err := e.minter.Mint("alice", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := alice.RefreshToken(ctx, longer)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.After(before) || !alice.TokenExpires().Equal(exp) {
		t.Fatalf("refreshed expiry %v (client says %v), want after %v", exp, alice.TokenExpires(), before)
	}
	if err := alice.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// The edge takes identity-provider tokens from a JWKS and holds every
// token to the configured issuer and audience, over the WebSocket.
func TestJWKSIssuerAudienceOverWebSocket(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
		}}})
	}))
	defer idp.Close()
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), JWKSURL: idp.URL, JWTIssuer: "https://idp.test", JWTAudience: "parley"})
	defer stop()
	sign := func(sub, iss, aud string) string {
		c := jwt.RegisteredClaims{Subject: sub, Issuer: iss, Audience: jwt.ClaimStrings{aud}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := tctx(t)
	c, err := sdk.Dial(ctx, sdk.Options{URL: e.url, Token: sign("alice", "https://idp.test", "parley")})
	if err != nil {
		t.Fatalf("a token of the provider for parley: %v", err)
	}
	c.Close()
	for name, tok := range map[string]string{
		"another audience": sign("alice", "https://idp.test", "other-app"),
		"another issuer":   sign("alice", "https://other.test", "parley"),
		// The platform's HS256 secret still verifies, but the test
		// minter puts neither iss nor aud in.
		"HS256 without iss and aud": mustMint(t, e, "alice"),
	} {
		_, err := sdk.Dial(ctx, sdk.Options{URL: e.url, Token: tok})
		if wire.CodeOf(err) != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
			t.Errorf("%s: dial = %v, want UNAUTHENTICATED", name, err)
		}
	}
}

func mustMint(t *testing.T, e *env, user string) string {
	t.Helper()
	tok, err := e.minter.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func writeJSON(t *testing.T, ws *websocket.Conn, f *clientv1.ClientFrame) {
	t.Helper()
	data, err := wire.Encode(wire.JSON, f)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(tctx(t), websocket.MessageText, data); err != nil {
		t.Fatal(err)
	}
}

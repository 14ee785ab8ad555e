package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signer is one key the test identity provider signs with.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func newSigner(t *testing.T, kid, alg string) signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch alg {
	case "RS256":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, method: jwt.GetSigningMethod(alg), key: key}
}

// jwk is the public half as a JSON Web Key (RFC 7517, 7518, 8037).
func (s signer) jwk() map[string]string {
	b64 := base64.RawURLEncoding.EncodeToString
	m := map[string]string{"kid": s.kid, "alg": s.method.Alg(), "use": "sig"}
	switch pub := s.key.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		raw, _ := pub.Bytes() // 0x04 || X || Y, 32 bytes each for P-256
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", b64(raw[1:33]), b64(raw[33:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", b64(pub)
	}
	return m
}

type tokenOpts struct {
	sub, iss, aud string
	ttl           time.Duration
	noKid         bool
}

func (s signer) token(t *testing.T, o tokenOpts) string {
	t.Helper()
	if o.sub == "" {
		o.sub = "alice"
	}
	if o.ttl == 0 {
		o.ttl = time.Hour
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{Subject: o.sub, Issuer: o.iss, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(o.ttl))}
	if o.aud != "" {
		claims.Audience = jwt.ClaimStrings{o.aud}
	}
	tok := jwt.NewWithClaims(s.method, claims)
	if !o.noKid {
		tok.Header["kid"] = s.kid
	}
	str, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// idp is an identity provider publishing a key set it can change.
type idp struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []signer
	fetches atomic.Int64
}

func newIDP(t *testing.T, keys ...signer) *idp {
	p := &idp{keys: keys}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		set := struct {
			Keys []map[string]string `json:"keys"`
		}{Keys: []map[string]string{}}
		for _, k := range p.keys {
			set.Keys = append(set.Keys, k.jwk())
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) publish(keys ...signer) {
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
}

func (p *idp) url() string { return p.srv.URL + "/.well-known/jwks.json" }

func newTestVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func mustVerify(t *testing.T, v *Verifier, tok, wantUser string) Identity {
	t.Helper()
	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if id.User != wantUser {
		t.Fatalf("user %q, want %q", id.User, wantUser)
	}
	return id
}

func mustRefuse(t *testing.T, v *Verifier, tok, why string) {
	t.Helper()
	if id, err := v.Verify(context.Background(), tok); err == nil {
		t.Fatalf("%s: accepted as %+v", why, id)
	}
}

func TestVerifyEachAlgorithmFromJWKS(t *testing.T) {
	rs, es, ed := newSigner(t, "rs", "RS256"), newSigner(t, "es", "ES256"), newSigner(t, "ed", "EdDSA")
	p := newIDP(t, rs, es, ed)
	v := newTestVerifier(t, Config{JWKSURL: p.url()})
	for _, s := range []signer{rs, es, ed} {
		t.Run(s.method.Alg(), func(t *testing.T) {
			id := mustVerify(t, v, s.token(t, tokenOpts{sub: "bob", ttl: 90 * time.Minute}), "bob")
			if left := time.Until(id.Expires); left < 85*time.Minute || left > 91*time.Minute {
				t.Fatalf("expires in %v, want about 90m", left)
			}
		})
	}
	// Without a kid every published key of the token's algorithm is tried.
	mustVerify(t, v, es.token(t, tokenOpts{noKid: true}), "alice")
	// A key the provider never published is refused.
	mustRefuse(t, v, newSigner(t, "rs", "RS256").token(t, tokenOpts{}), "a token signed by an unpublished key under a published kid")
	expired := rs.token(t, tokenOpts{ttl: -time.Minute})
	if _, err := v.Verify(context.Background(), expired); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: %v, want ErrExpired", err)
	}
}

func TestJWKSRotation(t *testing.T) {
	k1, k2 := newSigner(t, "k1", "RS256"), newSigner(t, "k2", "ES256")
	p := newIDP(t, k1)
	// No periodic refresh and no spacing: only unknown kids refetch here.
	v := newTestVerifier(t, Config{JWKSURL: p.url(), JWKSRefresh: time.Hour, JWKSMinRefresh: time.Nanosecond})
	old := k1.token(t, tokenOpts{})
	mustVerify(t, v, old, "alice")
	fetches := p.fetches.Load()

	// The provider publishes k2 beside k1 and starts signing with it: the
	// first k2 token fetches the set again.
	p.publish(k1, k2)
	mustVerify(t, v, k2.token(t, tokenOpts{}), "alice")
	if got := p.fetches.Load(); got != fetches+1 {
		t.Fatalf("%d fetches after an unknown kid, want %d", got, fetches+1)
	}
	mustVerify(t, v, old, "alice") // still published

	// k1 is withdrawn; the cache believes it until the set is fetched
	// again, which the next unknown kid causes.
	p.publish(k2)
	mustVerify(t, v, old, "alice")
	mustRefuse(t, v, newSigner(t, "k3", "EdDSA").token(t, tokenOpts{}), "a kid never published")
	mustRefuse(t, v, old, "a token of a withdrawn key after the refetch")
	mustVerify(t, v, k2.token(t, tokenOpts{}), "alice")
}

func TestJWKSPeriodicRefreshDropsWithdrawnKey(t *testing.T) {
	k1, k2 := newSigner(t, "k1", "EdDSA"), newSigner(t, "k2", "EdDSA")
	p := newIDP(t, k1, k2)
	v := newTestVerifier(t, Config{JWKSURL: p.url(), JWKSRefresh: 20 * time.Millisecond, JWKSMinRefresh: time.Hour})
	old := k1.token(t, tokenOpts{})
	mustVerify(t, v, old, "alice")
	p.publish(k2)
	start := p.fetches.Load()
	deadline := time.Now().Add(10 * time.Second)
	for p.fetches.Load() < start+2 {
		if time.Now().After(deadline) {
			t.Fatal("the key set was not fetched again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustRefuse(t, v, old, "a token of a withdrawn key after a periodic refresh")
	mustVerify(t, v, k2.token(t, tokenOpts{}), "alice")
}

func TestJWKSUnknownKidRefetchIsSpaced(t *testing.T) {
	k1 := newSigner(t, "k1", "ES256")
	p := newIDP(t, k1)
	v := newTestVerifier(t, Config{JWKSURL: p.url(), JWKSMinRefresh: time.Hour})
	start := p.fetches.Load()
	for i := range 5 {
		mustRefuse(t, v, newSigner(t, "made-up", "ES256").token(t, tokenOpts{}), "an unknown kid")
		if got := p.fetches.Load(); got != start+1 {
			t.Fatalf("after %d unknown kids the set was fetched %d more times, want 1", i+1, got-start)
		}
	}
	mustVerify(t, v, k1.token(t, tokenOpts{}), "alice")
}

func TestIssuerAndAudienceRequired(t *testing.T) {
	rs := newSigner(t, "rs", "RS256")
	p := newIDP(t, rs)
	secret := []byte("0123456789abcdef0123")
	v := newTestVerifier(t, Config{Secret: secret, JWKSURL: p.url(), Issuer: "https://idp.example", Audience: "parley"})
	mustVerify(t, v, rs.token(t, tokenOpts{iss: "https://idp.example", aud: "parley"}), "alice")
	for name, o := range map[string]tokenOpts{
		"other audience": {iss: "https://idp.example", aud: "other-app"},
		"no audience":    {iss: "https://idp.example"},
		"other issuer":   {iss: "https://evil.example", aud: "parley"},
		"no issuer":      {aud: "parley"},
	} {
		mustRefuse(t, v, rs.token(t, o), name)
	}
	// HS256 tokens are held to the same claims; the minter puts them in.
	mustVerify(t, v, mintOK(t, v.Minter(), "carol"), "carol")
	bare, err := NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, v, mintOK(t, bare, "carol"), "an HS256 token without iss and aud")
	mustRefuse(t, v, mintOK(t, bare.WithClaims("https://idp.example", "other-app"), "carol"), "an HS256 token for another audience")
}

func mintOK(t *testing.T, m *HS256, user string) string {
	t.Helper()
	tok, err := m.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAlgorithmsFollowConfig(t *testing.T) {
	rs := newSigner(t, "rs", "RS256")
	p := newIDP(t, rs)
	secret := []byte("0123456789abcdef0123")
	hs, err := NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	jwksOnly := newTestVerifier(t, Config{JWKSURL: p.url()})
	mustRefuse(t, jwksOnly, mintOK(t, hs, "alice"), "HS256 without a secret configured")
	// The classic confusion: an HS256 token keyed with the public key's
	// bytes must not verify against the key set.
	pub := rs.key.Public().(*rsa.PublicKey).N.Bytes()
	forged := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "mallory", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	forged.Header["kid"] = "rs"
	fs, err := forged.SignedString(pub)
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, jwksOnly, fs, "HS256 keyed with a published public key")

	secretOnly := newTestVerifier(t, Config{Secret: secret})
	mustVerify(t, secretOnly, mintOK(t, hs, "alice"), "alice")
	mustRefuse(t, secretOnly, rs.token(t, tokenOpts{}), "RS256 without a JWKS configured")
	badSub, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "bad user", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, secretOnly, badSub, "an invalid subject")
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "alice"}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, secretOnly, noExp, "a token without exp")
}

func TestNewVerifierRefuses(t *testing.T) {
	for name, cfg := range map[string]Config{
		"nothing configured":      {},
		"short secret":            {Secret: []byte("short")},
		"http jwks off loopback":  {JWKSURL: "http://idp.example/jwks.json"},
		"jwks with an odd scheme": {JWKSURL: "ftp://idp.example/jwks.json"},
	} {
		if v, err := NewVerifier(cfg); err == nil {
			v.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestIsDevSecret(t *testing.T) {
	if !IsDevSecret([]byte(DevSecret)) || IsDevSecret([]byte(DevSecret+"x")) || IsDevSecret(nil) {
		t.Fatal("IsDevSecret does not recognise exactly the dev secret")
	}
}

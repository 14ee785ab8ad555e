package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Config says which tokens a Verifier accepts. At least one of Secret and
// JWKSURL is required.
type Config struct {
	// Secret verifies HS256 tokens (at least 16 bytes); empty refuses them.
	Secret []byte
	// JWKSURL is where the identity provider publishes its public keys (a
	// JSON Web Key Set); RS256, ES256 and EdDSA tokens verify against it.
	// Empty refuses them. It must be https, or http on a loopback host.
	JWKSURL string
	// Issuer and Audience, when set, are required: a token whose iss
	// differs, or whose aud does not hold Audience, is refused. They apply
	// to every token, HS256 ones included.
	Issuer, Audience string
	// JWKSRefresh is how often the key set is fetched again regardless
	// (1 hour if 0): how long a key the provider withdrew is still
	// believed at most.
	JWKSRefresh time.Duration
	// JWKSMinRefresh spaces the fetches a token with an unknown kid causes
	// (at most one per 30 s if 0), so tokens with made-up kids cannot make
	// the edge hammer the provider. A rotated-in key is fetched at the
	// first token that names it, unless a fetch happened within this.
	JWKSMinRefresh time.Duration
	// HTTPClient fetches the key set (a client with a 10 s timeout if nil).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Identity is who a verified token names, and until when.
type Identity struct {
	User    string
	Expires time.Time
	// Attributes are the user's audience selectors from the token
	// (AttributesClaim), "key=value", sorted.
	Attributes []string
}

// claims are the token's registered claims and Parley's own.
type claims struct {
	jwt.RegisteredClaims
	Attributes any `json:"parley_attrs,omitempty"`
}

// Verifier checks tokens against a Config.
type Verifier struct {
	secret []byte
	// jwks resolves a token's kid to the provider's key; nil without a
	// JWKSURL.
	jwks   keyfunc.Keyfunc
	parser *jwt.Parser
	minter *HS256
	stop   context.CancelFunc
}

// The asymmetric algorithms a JWKS key may verify. HS256 is never looked
// up in the key set, so a token cannot pass off a public key as an HMAC
// secret.
var jwksMethods = []string{"RS256", "ES256", "EdDSA"}

// jwksFetchTimeout bounds one fetch of the key set.
const jwksFetchTimeout = 10 * time.Second

// NewVerifier returns a Verifier for cfg. With a JWKSURL it fetches the key
// set once now (a failure is logged, not fatal: tokens are refused until a
// later fetch works, so an identity provider that is down at start does not
// keep the edge down) and again every JWKSRefresh until Close.
func NewVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("auth: configure a jwt secret (HS256) or a JWKS url (RS256, ES256, EdDSA)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v := &Verifier{stop: func() {}}
	methods := []string{}
	if len(cfg.Secret) > 0 {
		m, err := NewHS256(cfg.Secret)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		v.secret, v.minter = cfg.Secret, m.WithClaims(cfg.Issuer, cfg.Audience)
		methods = append(methods, "HS256")
	}
	if cfg.JWKSURL != "" {
		if err := checkJWKSURL(cfg.JWKSURL); err != nil {
			return nil, err
		}
		kf, stop, err := newJWKS(cfg)
		if err != nil {
			return nil, err
		}
		v.jwks, v.stop = kf, stop
		methods = append(methods, jwksMethods...)
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithExpirationRequired(), jwt.WithLeeway(leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

func newJWKS(cfg Config) (keyfunc.Keyfunc, context.CancelFunc, error) {
	refresh, minRefresh := cfg.JWKSRefresh, cfg.JWKSMinRefresh
	if refresh <= 0 {
		refresh = time.Hour
	}
	if minRefresh <= 0 {
		minRefresh = 30 * time.Second
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: jwksFetchTimeout}
	}
	log := cfg.Logger.With("jwks_url", cfg.JWKSURL)
	ctx, stop := context.WithCancel(context.Background())
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:          client,
		HTTPTimeout:     jwksFetchTimeout,
		RefreshInterval: refresh,
		// An unknown kid fetches at once if the limiter allows, else it
		// waits for the limiter only as long as a fetch may take (the
		// fetch shares that deadline), else the token is refused.
		RefreshUnknownKID: rate.NewLimiter(rate.Every(minRefresh), 1),
		RateLimitWaitMax:  jwksFetchTimeout,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				log.Warn("auth: fetching the JWKS failed; tokens signed by keys not already fetched are refused until a fetch works", "err", err)
			}
		},
	})
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("auth: jwks: %w", err)
	}
	return kf, stop, nil
}

// checkJWKSURL refuses a key set fetched in the clear from afar: whoever
// can change it in transit can sign tokens for anyone.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("auth: jwks url: %w", err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if u.Hostname() == "localhost" {
			return nil
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("auth: jwks url %q: http is allowed only on a loopback host; use https", raw)
	}
	return fmt.Errorf("auth: jwks url %q: scheme must be https", raw)
}

// Close stops the key set's periodic refresh.
func (v *Verifier) Close() { v.stop() }

// Minter signs dev tokens with the HS256 secret, carrying the configured
// issuer and audience; nil without a secret.
func (v *Verifier) Minter() *HS256 { return v.minter }

// Verify checks a token's signature, expiry and (when configured) issuer
// and audience, and returns who it names. ctx bounds a key set fetch an
// unknown kid may cause.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	claims := &claims{}
	_, err := v.parser.ParseWithClaims(token, claims, v.key(ctx))
	if errors.Is(err, jwt.ErrTokenExpired) {
		return Identity{}, ErrExpired
	}
	if err != nil {
		return Identity{}, fmt.Errorf("verify token: %w", err)
	}
	if !ValidUserID(claims.Subject) {
		return Identity{}, fmt.Errorf("verify token: subject %q is not a valid user id", claims.Subject)
	}
	attrs, err := ParseAttributes(claims.Attributes)
	if err != nil {
		return Identity{}, fmt.Errorf("verify token: %w", err)
	}
	return Identity{User: claims.Subject, Expires: claims.ExpiresAt.Time, Attributes: attrs}, nil
}

// key picks the key by the token's algorithm, which the parser has already
// checked against the configured ones.
func (v *Verifier) key(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if t.Method.Alg() == "HS256" {
			return v.secret, nil
		}
		return v.jwks.KeyfuncCtx(ctx)(t)
	}
}

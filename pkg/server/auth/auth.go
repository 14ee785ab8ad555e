// Package auth verifies the JWTs apps (or their identity provider) mint for
// their users and, in dev mode, mints them. The token's subject is the user
// id; Parley keeps no accounts.
package auth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrExpired is returned for a token that verified but has expired.
var ErrExpired = errors.New("token expired")

// DevSecret is the HS256 secret `parley run` and `parley token` agree on
// when no other is configured. It is public (it is in this source), so a
// server that accepts it accepts anyone's word for who they are: the edge
// refuses it on a non-loopback listener (see IsDevSecret).
const DevSecret = "parley-dev-secret-not-for-production"

// IsDevSecret reports whether secret is the public DevSecret.
func IsDevSecret(secret []byte) bool {
	return subtle.ConstantTimeCompare(secret, []byte(DevSecret)) == 1
}

// userIDPattern bounds user ids so they are safe as Kafka keys, storage keys
// and log values.
var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

// ValidUserID reports whether id may be used as a user id.
func ValidUserID(id string) bool { return userIDPattern.MatchString(id) }

// leeway is the clock skew allowed between the token's minter and us.
const leeway = 5 * time.Second

// HS256 mints tokens with one shared secret (dev tokens, tests, the bench),
// and verifies them (Verifier does that for the edge, with the issuer and
// audience checks and the asymmetric keys).
type HS256 struct {
	secret []byte
	// issuer and audience go into minted tokens when set.
	issuer, audience string
	parser           *jwt.Parser
}

// NewHS256 returns an HS256 minter and verifier; the secret must be at
// least 16 bytes.
func NewHS256(secret []byte) (*HS256, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("jwt secret must be at least 16 bytes, got %d", len(secret))
	}
	return &HS256{
		secret: secret,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(leeway)),
	}, nil
}

// WithClaims returns a copy that puts iss and aud (when not empty) into the
// tokens it mints, for a server that requires them.
func (a *HS256) WithClaims(issuer, audience string) *HS256 {
	b := *a
	b.issuer, b.audience = issuer, audience
	return &b
}

// Verify returns the user id a token names (HS256, expiry required; no
// issuer or audience check: Verifier does those).
func (a *HS256) Verify(token string) (string, error) {
	claims := &jwt.RegisteredClaims{}
	_, err := a.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return a.secret, nil })
	if errors.Is(err, jwt.ErrTokenExpired) {
		return "", ErrExpired
	}
	if err != nil {
		return "", fmt.Errorf("verify token: %w", err)
	}
	if !ValidUserID(claims.Subject) {
		return "", fmt.Errorf("verify token: subject %q is not a valid user id", claims.Subject)
	}
	return claims.Subject, nil
}

// Mint signs a token for user valid for ttl from now.
func (a *HS256) Mint(user string, ttl time.Duration) (string, error) {
	return a.MintAt(user, time.Now(), ttl)
}

// MintAt signs a token issued at now; tests use it for expired tokens.
func (a *HS256) MintAt(user string, now time.Time, ttl time.Duration) (string, error) {
	return a.MintWith(user, now, ttl, nil)
}

// MintWith signs a token issued at now carrying attrs (AttributesClaim:
// key to value, or to several values separated by commas), which put the
// user in audiences.
func (a *HS256) MintWith(user string, now time.Time, ttl time.Duration, attrs map[string]string) (string, error) {
	if !ValidUserID(user) {
		return "", fmt.Errorf("mint token: %q is not a valid user id (1-64 of A-Z a-z 0-9 . _ @ -)", user)
	}
	claims := jwt.RegisteredClaims{
		Subject:   user,
		Issuer:    a.issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	if a.audience != "" {
		claims.Audience = jwt.ClaimStrings{a.audience}
	}
	var token jwt.Claims = claims
	if len(attrs) > 0 {
		m := map[string]any{}
		for k, v := range attrs {
			var vals []any
			for _, one := range strings.Split(v, ",") {
				vals = append(vals, one)
			}
			m[k] = vals
		}
		if _, err := ParseAttributes(m); err != nil {
			return "", fmt.Errorf("mint token: %w", err)
		}
		token = struct {
			jwt.RegisteredClaims
			Attributes map[string]any `json:"parley_attrs"`
		}{claims, m}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, token).SignedString(a.secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

// Package auth verifies the JWTs apps mint for their users and, in dev mode,
// mints them. The token's subject is the user id; Parley keeps no accounts.
package auth

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrExpired is returned for a token that verified but has expired.
var ErrExpired = errors.New("token expired")

// userIDPattern bounds user ids so they are safe as Kafka keys, storage keys
// and log values.
var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

// ValidUserID reports whether id may be used as a user id.
func ValidUserID(id string) bool { return userIDPattern.MatchString(id) }

// HS256 verifies and mints tokens with one shared secret.
type HS256 struct {
	secret []byte
	parser *jwt.Parser
}

// NewHS256 returns an HS256 verifier; the secret must be at least 16 bytes.
func NewHS256(secret []byte) (*HS256, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("jwt secret must be at least 16 bytes, got %d", len(secret))
	}
	return &HS256{
		secret: secret,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(5*time.Second)),
	}, nil
}

// Verify returns the user id a token names.
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
	if !ValidUserID(user) {
		return "", fmt.Errorf("mint token: %q is not a valid user id (1-64 of A-Z a-z 0-9 . _ @ -)", user)
	}
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

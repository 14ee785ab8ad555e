package auth

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestParseAttributes(t *testing.T) {
	for _, c := range []struct {
		name string
		in   any
		want string // the selectors, or "error"
	}{
		{"none", nil, "[]"},
		{"strings and lists", map[string]any{"region": "eu", "tags": []any{"vip", "beta", "vip"}, "plan": "pro"}, "[plan=pro region=eu tags=beta tags=vip]"},
		{"unicode value", map[string]any{"city": "Zürich"}, "[city=Zürich]"},
		{"not an object", []any{"region=eu"}, "error"},
		{"a number", map[string]any{"age": 3.0}, "error"},
		{"upper-case key", map[string]any{"Region": "eu"}, "error"},
		{"empty value", map[string]any{"region": ""}, "error"},
		{"control character", map[string]any{"region": "e\nu"}, "error"},
		{"long value", map[string]any{"region": strings.Repeat("x", MaxAttributeValue+1)}, "error"},
		{"too many", func() any {
			vals := []any{}
			for i := range MaxAttributes + 1 {
				vals = append(vals, fmt.Sprint("t", i))
			}
			return map[string]any{"tags": vals}
		}(), "error"},
	} {
		got, err := ParseAttributes(c.in)
		if s := fmt.Sprint(got); err != nil && c.want != "error" || err == nil && (c.want == "error" || s != c.want && !(c.want == "[]" && len(got) == 0)) {
			t.Errorf("%s: %v, %v; want %s", c.name, got, err, c.want)
		}
	}
	for sel, ok := range map[string]bool{"region=eu": true, "tags=a=b": true, "region": false, "=eu": false, "Region=eu": false, "region=": false} {
		if ValidSelector(sel) != ok {
			t.Errorf("ValidSelector(%q) = %v, want %v", sel, !ok, ok)
		}
	}
}

// TestVerifyReadsAttributes: a token's parley_attrs become the identity's
// selectors; a token with bad ones is refused whole.
func TestVerifyReadsAttributes(t *testing.T) {
	v := newTestVerifier(t, Config{Secret: []byte("0123456789abcdef0123")})
	tok, err := v.Minter().MintWith("alice", time.Now(), time.Hour, map[string]string{"region": "eu", "tags": "beta,vip"})
	if err != nil {
		t.Fatal(err)
	}
	id := mustVerify(t, v, tok, "alice")
	if fmt.Sprint(id.Attributes) != "[region=eu tags=beta tags=vip]" {
		t.Fatalf("attributes %v", id.Attributes)
	}
	if id := mustVerify(t, v, mintOK(t, v.Minter(), "bob"), "bob"); len(id.Attributes) != 0 {
		t.Fatalf("a token without attributes: %v", id.Attributes)
	}
	bad, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix(),
		AttributesClaim: map[string]any{"region": 7}}).SignedString([]byte("0123456789abcdef0123"))
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, v, bad, "a token with a numeric attribute")
	if _, err := v.Minter().MintWith("alice", time.Now(), time.Hour, map[string]string{"Bad Key": "x"}); err == nil {
		t.Fatal("minted a token with a bad attribute key")
	}
}

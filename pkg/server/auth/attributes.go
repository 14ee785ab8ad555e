package auth

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// AttributesClaim is the JWT claim holding a user's attributes, which
// select the audiences they belong to: an object of string keys, each a
// string or a list of strings, as {"region": "eu", "tags": ["beta"]}.
const AttributesClaim = "parley_attrs"

// Bounds of a user's attributes: what a token may carry, so one cannot
// make an edge register a connection under thousands of audiences.
const (
	MaxAttributes     = 16
	MaxAttributeKey   = 32
	MaxAttributeValue = 64
)

// ParseAttributes turns the claim's value into its selectors, "key=value"
// each, sorted, each once. Keys are 1-32 of a-z 0-9 _ -; values 1-64
// bytes of UTF-8 with no control character. A value that breaks the rules
// fails the whole token: an application that mints it wrong should learn
// at once, not find a user missing from an audience.
func ParseAttributes(v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("claim %s: want an object", AttributesClaim)
	}
	var out []string
	add := func(k string, val any) error {
		s, ok := val.(string)
		if !ok {
			return fmt.Errorf("claim %s: %s: want a string or a list of strings", AttributesClaim, k)
		}
		sel, err := Selector(k, s)
		if err != nil {
			return fmt.Errorf("claim %s: %w", AttributesClaim, err)
		}
		out = append(out, sel)
		return nil
	}
	for k, val := range m {
		if list, ok := val.([]any); ok {
			for _, one := range list {
				if err := add(k, one); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := add(k, val); err != nil {
			return nil, err
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxAttributes {
		return nil, fmt.Errorf("claim %s: %d attributes, at most %d", AttributesClaim, len(out), MaxAttributes)
	}
	return out, nil
}

// Selector checks an attribute and returns its selector, "key=value".
func Selector(key, value string) (string, error) {
	if key == "" || len(key) > MaxAttributeKey || strings.ContainsFunc(key, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) {
		return "", fmt.Errorf("attribute key %q: want 1-%d of a-z 0-9 _ -", key, MaxAttributeKey)
	}
	if value == "" || len(value) > MaxAttributeValue || !utf8.ValidString(value) || strings.ContainsFunc(value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("attribute %s: value must be 1-%d bytes of UTF-8 without control characters", key, MaxAttributeValue)
	}
	return key + "=" + value, nil
}

// ValidSelector reports whether s is a selector Selector would make.
func ValidSelector(s string) bool {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return false
	}
	sel, err := Selector(k, v)
	return err == nil && sel == s
}

package auth_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// testServices are the identities of a full deployment.
var testServices = []string{"gateway", "users", "orders", "notifications"}

// t0 is the start of every test clock. Whole seconds, because JWT times are.
var t0 = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// user1 and user2 are user ids as the users service makes them: UUIDv7s.
const (
	user1 = "01a20f04-2c69-786c-96a9-161efd3e12e3"
	user2 = "01a20f04-2c6a-7b5e-a4d3-9f8e7d6c5b4a"
)

// testClock is the injected clock: tests move it instead of sleeping.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock(t *testing.T) *testClock {
	t.Helper()
	return &testClock{now: t0}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestKeyring(t *testing.T) *auth.Keyring {
	t.Helper()
	kr, err := auth.GenerateKeyring(testServices)
	if err != nil {
		t.Fatalf("GenerateKeyring(%v) = %v, want nil", testServices, err)
	}
	return kr
}

func newTestKey(t *testing.T) auth.PrivateKey {
	t.Helper()
	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey() = %v, want nil", err)
	}
	return k
}

// signToken builds a token by hand, the way an attacker or a buggy peer
// would. A nil header value removes that header.
func signToken(t *testing.T, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign test token: %v", err)
	}
	return s
}

// signJSON signs a header and a payload given as JSON text: the way to build
// tokens no JWT library writes, such as one naming a member twice.
func signJSON(key ed25519.PrivateKey, header, payload string) string {
	input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(payload))
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(input)))
}

// edToken signs claims with k the way Blueprint does (EdDSA, kid, typ).
func edToken(t *testing.T, k auth.PrivateKey, typ string, claims jwt.MapClaims) string {
	t.Helper()
	return signToken(t, jwt.SigningMethodEdDSA, k.Key, map[string]any{"kid": k.ID, "typ": typ}, claims)
}

// with returns a copy of c with the given claims set; a nil value removes one.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// decodeSegment returns the JSON object in segment i (0 header, 1 claims).
func decodeSegment(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d segments, want 3", token, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("decode segment %d of %q: %v", i, token, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("parse segment %d of %q: %v", i, token, err)
	}
	return m
}

// replaceSegment swaps segment i of token for the JSON of v, keeping the rest.
func replaceSegment(t *testing.T, token string, i int, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode segment: %v", err)
	}
	parts := strings.Split(token, ".")
	parts[i] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// wantUnauthorized fails the test unless err is an Unauthorized apperr
// wrapping auth.ErrInvalidToken.
func wantUnauthorized(t *testing.T, call string, got any, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s = %v, nil, want an Unauthorized error", call, got)
	}
	if k := apperr.KindOf(err); k != apperr.Unauthorized {
		t.Errorf("%s: apperr.KindOf(%v) = %v, want %v (Unauthorized)", call, err, k, apperr.Unauthorized)
	}
	if !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("%s: errors.Is(%v, ErrInvalidToken) = false, want true", call, err)
	}
}

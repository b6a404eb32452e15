package auth_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// usersCallers is the users service's trust list (docs/identity.md).
var usersCallers = []string{"gateway", "notifications"}

func newUsersVerifier(t *testing.T, kr *auth.Keyring, now func() time.Time) *auth.ServiceVerifier {
	t.Helper()
	v, err := auth.NewServiceVerifier("users", usersCallers, kr.Bundle, now)
	if err != nil {
		t.Fatalf("NewServiceVerifier(users, %v) = %v, want nil", usersCallers, err)
	}
	return v
}

func mint(t *testing.T, m *auth.Minter, audience, subject string) string {
	t.Helper()
	token, err := m.Token(audience, subject)
	if err != nil {
		t.Fatalf("Token(%q, %q) = %v, want nil", audience, subject, err)
	}
	return token
}

func TestServiceVerifierAccepts(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	clock := newTestClock(t)
	v := newUsersVerifier(t, kr, clock.Now)
	gateway := auth.NewMinter("gateway", kr.Identities["gateway"], clock.Now)
	notifications := auth.NewMinter("notifications", kr.Identities["notifications"], clock.Now)
	now := clock.Now()

	tests := []struct {
		name  string
		token string
		want  auth.Caller
	}{
		{"gateway acting for a user", mint(t, gateway, "users", "user-1"),
			auth.Caller{Service: "gateway", Subject: "user-1"}},
		{"gateway acting for itself", mint(t, gateway, "users", ""),
			auth.Caller{Service: "gateway", Subject: "gateway"}},
		{"notifications acting for itself", mint(t, notifications, "users", ""),
			auth.Caller{Service: "notifications", Subject: "notifications"}},
		{"hand-built, lifetime exactly 60s", edToken(t, kr.Identities["gateway"], "svc+jwt", jwt.MapClaims{
			"iss": "gateway", "aud": "users", "sub": "user-2",
			"iat": now.Unix(), "exp": now.Add(60 * time.Second).Unix(),
		}), auth.Caller{Service: "gateway", Subject: "user-2"}},
		{"issued by a clock 5s ahead", edToken(t, kr.Identities["gateway"], "svc+jwt", jwt.MapClaims{
			"iss": "gateway", "aud": "users", "sub": "user-2",
			"iat": now.Add(5 * time.Second).Unix(), "exp": now.Add(65 * time.Second).Unix(),
		}), auth.Caller{Service: "gateway", Subject: "user-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.Verify(tt.token)
			if err != nil || got != tt.want {
				t.Errorf("Verify(%q) = %+v, %v, want %+v, nil", tt.token, got, err, tt.want)
			}
		})
	}
}

func TestServiceVerifierRejects(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	clock := newTestClock(t)
	v := newUsersVerifier(t, kr, clock.Now)
	now := clock.Now()
	gwKey := kr.Identities["gateway"]
	gateway := auth.NewMinter("gateway", gwKey, clock.Now)
	orders := auth.NewMinter("orders", kr.Identities["orders"], clock.Now)
	impostor := auth.NewMinter("gateway", newTestKey(t), clock.Now)
	other := newTestKeyring(t) // another deployment's keys
	otherGateway := auth.NewMinter("gateway", other.Identities["gateway"], clock.Now)
	access, _, err := auth.NewAccessTokens(kr.Access, []auth.PublicKey{kr.Access.Public()}, clock.Now).Issue(user1)
	if err != nil {
		t.Fatalf("Issue() = %v, want nil", err)
	}
	good := jwt.MapClaims{
		"iss": "gateway", "aud": "users", "sub": "user-1",
		"iat": now.Unix(), "exp": now.Add(30 * time.Second).Unix(),
	}
	if got, err := v.Verify(edToken(t, gwKey, "svc+jwt", good)); err != nil {
		t.Fatalf("Verify(hand-built good token) = %+v, %v, want nil error", got, err)
	}
	minted := mint(t, gateway, "users", "user-1")
	tampered := replaceSegment(t, minted, 1, with(decodeSegment(t, minted, 1), "sub", "user-2"))
	// header and payload are a good token's JSON as text, with members put
	// first: a later duplicate is the copy a last-wins parser keeps.
	header := func(members string) string {
		return fmt.Sprintf(`{%s"alg":"EdDSA","kid":%q,"typ":"svc+jwt"}`, members, gwKey.ID)
	}
	payload := func(members string) string {
		return fmt.Sprintf(`{%s"iss":"gateway","aud":"users","sub":"user-1","iat":%d,"exp":%d}`, members,
			now.Unix(), now.Add(30*time.Second).Unix())
	}
	if got, err := v.Verify(signJSON(gwKey.Key, header(""), payload(""))); err != nil {
		t.Fatalf("Verify(hand-built good token as text) = %+v, %v, want nil error", got, err)
	}
	numericString := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }

	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"garbage", "garbage"},
		{"minted for another audience", mint(t, gateway, "orders", "user-1")},
		{"from an untrusted service", mint(t, orders, "users", "user-1")},
		{"signed by a key not in the bundle", mint(t, impostor, "users", "user-1")},
		{"signed by another deployment's gateway", mint(t, otherGateway, "users", "user-1")},
		{"gateway's key claiming to be notifications", edToken(t, gwKey, "svc+jwt", with(good, "iss", "notifications"))},
		{"untrusted service's key claiming to be gateway", edToken(t, kr.Identities["orders"], "svc+jwt", good)},
		{"the users service's own key", edToken(t, kr.Identities["users"], "svc+jwt", with(good, "iss", "users"))},
		{"access token", access},
		{"access key with internal claims", edToken(t, kr.Access, "svc+jwt", good)},
		{"typ at+jwt", edToken(t, gwKey, "at+jwt", good)},
		{"typ missing", signToken(t, jwt.SigningMethodEdDSA, gwKey.Key, map[string]any{"kid": gwKey.ID, "typ": nil}, good)},
		{"kid missing", signToken(t, jwt.SigningMethodEdDSA, gwKey.Key, map[string]any{"typ": "svc+jwt"}, good)},
		{"alg none", signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType,
			map[string]any{"kid": gwKey.ID, "typ": "svc+jwt"}, good)},
		{"alg HS256 keyed with the public key", signToken(t, jwt.SigningMethodHS256, []byte(gwKey.Public().Key),
			map[string]any{"kid": gwKey.ID, "typ": "svc+jwt"}, good)},
		{"lifetime 61s", edToken(t, gwKey, "svc+jwt", with(good, "exp", now.Add(61*time.Second).Unix()))},
		{"lifetime one year", edToken(t, gwKey, "svc+jwt", with(good, "exp", now.AddDate(1, 0, 0).Unix()))},
		{"no iat", edToken(t, gwKey, "svc+jwt", with(good, "iat", nil))},
		{"no exp", edToken(t, gwKey, "svc+jwt", with(good, "exp", nil))},
		{"no sub", edToken(t, gwKey, "svc+jwt", with(good, "sub", nil))},
		{"no aud", edToken(t, gwKey, "svc+jwt", with(good, "aud", nil))},
		{"no iss", edToken(t, gwKey, "svc+jwt", with(good, "iss", nil))},
		{"iat in the future", edToken(t, gwKey, "svc+jwt", with(good,
			"iat", now.Add(time.Hour).Unix(), "exp", now.Add(time.Hour+time.Minute).Unix()))},
		{"expired", edToken(t, gwKey, "svc+jwt", with(good,
			"iat", now.Add(-2*time.Minute).Unix(), "exp", now.Add(-time.Minute).Unix()))},
		// No skew past exp: an internal token is never accepted more than
		// 60 s after it was issued.
		{"expired a second ago", edToken(t, gwKey, "svc+jwt", with(good,
			"iat", now.Add(-61*time.Second).Unix(), "exp", now.Add(-time.Second).Unix()))},
		{"at its exp", edToken(t, gwKey, "svc+jwt", with(good,
			"iat", now.Add(-60*time.Second).Unix(), "exp", now.Unix()))},
		{"issued by a clock 6s ahead", edToken(t, gwKey, "svc+jwt", with(good,
			"iat", now.Add(6*time.Second).Unix(), "exp", now.Add(66*time.Second).Unix()))},
		{"nbf 6s ahead", edToken(t, gwKey, "svc+jwt", with(good, "nbf", now.Add(6*time.Second).Unix()))},
		{"tampered payload", tampered},
		{"crit naming an extension", signJSON(gwKey.Key, header(`"crit":["urn:example:mfa"],"urn:example:mfa":true,`), payload(""))},
		{"alg twice", signJSON(gwKey.Key, header(`"alg":"none",`), payload(""))},
		{"iss twice", signJSON(gwKey.Key, header(""), payload(`"iss":"notifications",`))},
		{"sub twice", signJSON(gwKey.Key, header(""), payload(`"sub":"user-2",`))},
		{"exp a string", edToken(t, gwKey, "svc+jwt", with(good, "exp", numericString(30*time.Second)))},
		{"iat a string", edToken(t, gwKey, "svc+jwt", with(good, "iat", numericString(0)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Twice: a refused token must not be remembered as verified.
			for range 2 {
				got, err := v.Verify(tt.token)
				wantUnauthorized(t, "Verify("+quote(tt.token)+")", got, err)
			}
		})
	}
}

func TestServiceVerifierExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		after   time.Duration
		wantErr bool
	}{
		{name: "fresh", after: 0},
		{name: "just before exp", after: 59 * time.Second},
		{name: "at exp", after: 60 * time.Second, wantErr: true},
		{name: "30s after exp", after: 90 * time.Second, wantErr: true},
		{name: "an hour later", after: time.Hour, wantErr: true},
		// A negative delay: the minter's clock runs ahead of the verifier's.
		{name: "minter ahead by 5s", after: -5 * time.Second},
		{name: "minter ahead by 6s", after: -6 * time.Second, wantErr: true},
	}
	for _, tt := range tests {
		// Verified once when minted, the token is remembered: the answer
		// later must be the same as a first verification's.
		for _, seen := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, verified when minted %v", tt.name, seen), func(t *testing.T) {
				t.Parallel()
				kr := newTestKeyring(t)
				clock := newTestClock(t)
				v := newUsersVerifier(t, kr, clock.Now)
				token := mint(t, auth.NewMinter("gateway", kr.Identities["gateway"], clock.Now), "users", "user-1")
				if seen {
					if _, err := v.Verify(token); err != nil {
						t.Fatalf("Verify(token) when minted = %v, want nil", err)
					}
				}
				clock.Advance(tt.after)
				got, err := v.Verify(token)
				if tt.wantErr {
					wantUnauthorized(t, "Verify(token) after "+tt.after.String(), got, err)
					return
				}
				if want := (auth.Caller{Service: "gateway", Subject: "user-1"}); err != nil || got != want {
					t.Errorf("Verify(token) after %v = %+v, %v, want %+v, nil", tt.after, got, err, want)
				}
			})
		}
	}
}

func TestMinterToken(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	clock := newTestClock(t)
	m := auth.NewMinter("gateway", kr.Identities["gateway"], clock.Now)

	first := mint(t, m, "users", "user-1")
	header, claims := decodeSegment(t, first, 0), decodeSegment(t, first, 1)
	for name, want := range map[string]any{"typ": "svc+jwt", "alg": "EdDSA", "kid": kr.Identities["gateway"].ID} {
		if header[name] != want {
			t.Errorf("header %s = %v, want %v", name, header[name], want)
		}
	}
	for name, want := range map[string]any{"iss": "gateway", "sub": "user-1"} {
		if claims[name] != want {
			t.Errorf("claim %s = %v, want %v", name, claims[name], want)
		}
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 60 {
		t.Errorf("claim exp-iat = %v, want 60", exp-iat)
	}

	// Other (audience, subject) pairs get their own tokens.
	if other := mint(t, m, "users", "user-2"); other == first {
		t.Errorf("Token(users, user-2) = Token(users, user-1), want a different token")
	}
	if other := mint(t, m, "orders", "user-1"); other == first {
		t.Errorf("Token(orders, user-1) = Token(users, user-1), want a different token")
	}

	// Reused for under half its life, then renewed.
	clock.Advance(29 * time.Second)
	if again := mint(t, m, "users", "user-1"); again != first {
		t.Errorf("Token(users, user-1) 29s later = %q, want the cached %q", again, first)
	}
	clock.Advance(time.Second)
	renewed := mint(t, m, "users", "user-1")
	if renewed == first {
		t.Errorf("Token(users, user-1) 30s later = the cached token, want a new one")
	}
	if iat := decodeSegment(t, renewed, 1)["iat"]; iat != float64(t0.Add(30*time.Second).Unix()) {
		t.Errorf("renewed token iat = %v, want %d", iat, t0.Add(30*time.Second).Unix())
	}
	clock.Advance(29 * time.Second)
	if again := mint(t, m, "users", "user-1"); again != renewed {
		t.Errorf("Token(users, user-1) 59s later = %q, want the renewed %q", again, renewed)
	}
	// Whatever the cache hands out still verifies.
	v := newUsersVerifier(t, kr, clock.Now)
	if got, err := v.Verify(renewed); err != nil || got.Subject != "user-1" {
		t.Errorf("Verify(renewed) = %+v, %v, want subject user-1", got, err)
	}
}

func TestMinterConcurrent(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	clock := newTestClock(t)
	m := auth.NewMinter("gateway", kr.Identities["gateway"], clock.Now)
	want := mint(t, m, "users", "user-1")
	tokens := make([]string, 8)
	errs := make([]error, len(tokens))
	var wg sync.WaitGroup
	for i := range tokens {
		wg.Go(func() { // exits when Token returns
			if i%2 == 0 {
				clock.Advance(time.Second) // stays under the 30 s of reuse
			}
			tokens[i], errs[i] = m.Token("users", "user-1")
		})
	}
	wg.Wait()
	for i, got := range tokens {
		if errs[i] != nil || got != want {
			t.Errorf("concurrent Token(users, user-1) = %q, %v, want the cached %q", got, errs[i], want)
		}
	}
}

func TestMinterEmptySubjectIsService(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	clock := newTestClock(t)
	m := auth.NewMinter("notifications", kr.Identities["notifications"], clock.Now)
	token := mint(t, m, "users", "")
	if sub := decodeSegment(t, token, 1)["sub"]; sub != "notifications" {
		t.Errorf("Token(users, \"\") sub = %v, want notifications", sub)
	}
	// Acting for itself by name is the same identity, so the same token.
	if named := mint(t, m, "users", "notifications"); named != token {
		t.Errorf("Token(users, notifications) = %q, want the token of Token(users, \"\") %q", named, token)
	}
}

func TestNewServiceVerifierErrors(t *testing.T) {
	t.Parallel()
	partial, err := auth.GenerateKeyring([]string{"gateway", "users"})
	if err != nil {
		t.Fatalf("GenerateKeyring() = %v, want nil", err)
	}
	badKid := newTestKeyring(t)
	set := badKid.Bundle.Services["gateway"]
	set.Keys = append([]auth.JWK(nil), set.Keys...)
	set.Keys[0].Kid = "chosen-by-attacker"
	badKid.Bundle.Services["gateway"] = set

	tests := []struct {
		name    string
		bundle  auth.Bundle
		wantSub string
	}{
		{"bundle lacks a trusted caller", partial.Bundle, "notifications"},
		{"kid is not the thumbprint", badKid.Bundle, "thumbprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := auth.NewServiceVerifier("users", usersCallers, tt.bundle, time.Now)
			if err == nil {
				t.Fatalf("NewServiceVerifier(users, %v) = %v, nil, want an error", usersCallers, v)
			}
			if !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("NewServiceVerifier(users, %v) error = %q, want it to mention %q", usersCallers, err, tt.wantSub)
			}
		})
	}
}

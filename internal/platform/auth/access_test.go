package auth_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

func newTestAccessTokens(t *testing.T) (*auth.AccessTokens, auth.PrivateKey, *testClock) {
	t.Helper()
	key := newTestKey(t)
	clock := newTestClock(t)
	return auth.NewAccessTokens(key, []auth.PublicKey{key.Public()}, clock.Now), key, clock
}

func TestAccessTokensIssueVerify(t *testing.T) {
	t.Parallel()
	at, key, _ := newTestAccessTokens(t)

	token, expiresIn, err := at.Issue(user1)
	if err != nil {
		t.Fatalf("Issue(%q) = %v, want nil", user1, err)
	}
	if expiresIn != 900 {
		t.Errorf("Issue(%q) expiresIn = %d, want 900", user1, expiresIn)
	}
	got, err := at.Verify(token)
	if err != nil || got != user1 {
		t.Fatalf("Verify(%q) = %q, %v, want %q, nil", token, got, err, user1)
	}

	header := decodeSegment(t, token, 0)
	for name, want := range map[string]any{"typ": "at+jwt", "alg": "EdDSA", "kid": key.ID} {
		if header[name] != want {
			t.Errorf("header %s = %v, want %v", name, header[name], want)
		}
	}

	claims := decodeSegment(t, token, 1)
	if claims["iss"] != "blueprint-gateway" {
		t.Errorf("claim iss = %v, want blueprint-gateway", claims["iss"])
	}
	if claims["sub"] != user1 {
		t.Errorf("claim sub = %v, want %s", claims["sub"], user1)
	}
	// aud may be a string or an array of strings (RFC 7519 §4.1.3).
	var aud []string
	switch v := claims["aud"].(type) {
	case string:
		aud = []string{v}
	case []any:
		for _, a := range v {
			s, _ := a.(string)
			aud = append(aud, s)
		}
	}
	if !slices.Equal(aud, []string{"blueprint-api"}) {
		t.Errorf("claim aud = %v, want [blueprint-api]", claims["aud"])
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if iat != float64(t0.Unix()) {
		t.Errorf("claim iat = %v, want %d (the clock's now)", claims["iat"], t0.Unix())
	}
	if exp-iat != 900 {
		t.Errorf("claim exp-iat = %v, want 900", exp-iat)
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		t.Errorf("claim jti = %v, want a non-empty string", claims["jti"])
	}

	// Every token gets its own id, even for the same user in the same second.
	other, _, err := at.Issue(user1)
	if err != nil {
		t.Fatalf("Issue(%q) = %v, want nil", user1, err)
	}
	if a, b := claims["jti"], decodeSegment(t, other, 1)["jti"]; a == b {
		t.Errorf("two tokens share jti %v, want distinct ids", a)
	}
}

// TestAccessTokensClockSkew checks the 30 s of clock skew tokens are allowed, both
// for a token past its expiry and for one issued by a clock that runs ahead.
func TestAccessTokensClockSkew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		verify  time.Duration // verifier's clock minus the issuer's
		wantErr bool
	}{
		{name: "fresh", verify: 0},
		{name: "just before exp", verify: 15*time.Minute - time.Second},
		{name: "expired within skew", verify: 15*time.Minute + 29*time.Second},
		{name: "expired beyond skew", verify: 15*time.Minute + 31*time.Second, wantErr: true},
		{name: "expired long ago", verify: 24 * time.Hour, wantErr: true},
		// A negative delay: the issuer's clock runs ahead of the verifier's.
		{name: "issuer ahead within skew", verify: -29 * time.Second},
		{name: "issuer ahead beyond skew", verify: -31 * time.Second, wantErr: true},
	}
	for _, tt := range tests {
		// Verified once at issue, the token is remembered: the answer
		// later must be the same as a first verification's.
		for _, seen := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, verified at issue %v", tt.name, seen), func(t *testing.T) {
				t.Parallel()
				at, _, clock := newTestAccessTokens(t)
				token, _, err := at.Issue(user1)
				if err != nil {
					t.Fatalf("Issue() = %v, want nil", err)
				}
				if seen {
					if _, err := at.Verify(token); err != nil {
						t.Fatalf("Verify(token) at issue = %v, want nil", err)
					}
				}
				clock.Advance(tt.verify)
				got, err := at.Verify(token)
				if tt.wantErr {
					wantUnauthorized(t, fmt.Sprintf("Verify(token) %v after issue", tt.verify), got, err)
					return
				}
				if err != nil || got != user1 {
					t.Errorf("Verify(token) %v after issue = %q, %v, want %q, nil", tt.verify, got, err, user1)
				}
			})
		}
	}
}

func TestAccessTokensVerifyRejects(t *testing.T) {
	t.Parallel()
	at, key, clock := newTestAccessTokens(t)
	stranger := newTestKey(t)
	kr := newTestKeyring(t)
	now := clock.Now()
	good := jwt.MapClaims{
		"iss": auth.AccessIssuer,
		"aud": []string{auth.AccessAudience},
		"sub": user1,
		"iat": now.Unix(),
		"exp": now.Add(auth.AccessTTL).Unix(),
		"jti": "4b4d0a8e-0c9e-4f5e-9d1c-3c1f6b7f2a10",
	}
	// header and payload are a good token's JSON as text, with members put
	// first: a later duplicate is the copy a last-wins parser keeps.
	header := func(members string) string {
		return fmt.Sprintf(`{%s"alg":"EdDSA","kid":%q,"typ":"at+jwt"}`, members, key.ID)
	}
	payload := func(members string) string {
		return fmt.Sprintf(`{%s"iss":%q,"aud":%q,"sub":%q,"iat":%d,"exp":%d}`, members,
			auth.AccessIssuer, auth.AccessAudience, user1, now.Unix(), now.Add(auth.AccessTTL).Unix())
	}
	// The hand-built baselines must pass, or every rejection below proves nothing.
	for _, token := range []string{edToken(t, key, "at+jwt", good), signJSON(key.Key, header(""), payload(""))} {
		if got, err := at.Verify(token); err != nil || got != user1 {
			t.Fatalf("Verify(hand-built good token %s) = %q, %v, want %q, nil", token, got, err, user1)
		}
	}
	numericString := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }

	issued, _, err := at.Issue(user1)
	if err != nil {
		t.Fatalf("Issue() = %v, want nil", err)
	}
	tampered := replaceSegment(t, issued, 1, with(decodeSegment(t, issued, 1), "sub", "admin"))
	parts := strings.Split(issued, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	flippedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	internal, err := auth.NewMinter("gateway", kr.Identities["gateway"], clock.Now).Token("users", "user-1")
	if err != nil {
		t.Fatalf("Minter.Token() = %v, want nil", err)
	}

	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"garbage", "not a token"},
		{"three dots", "..."},
		{"two segments", parts[0] + "." + parts[1]},
		{"four segments", issued + ".x"},
		{"bearer prefix", "Bearer " + issued},
		{"not base64", "!!!.???.***"},
		{"signed by unknown key", edToken(t, stranger, "at+jwt", good)},
		{"unknown key claiming a known kid", signToken(t, jwt.SigningMethodEdDSA, stranger.Key,
			map[string]any{"kid": key.ID, "typ": "at+jwt"}, good)},
		{"kid missing", signToken(t, jwt.SigningMethodEdDSA, key.Key, map[string]any{"typ": "at+jwt"}, good)},
		{"kid unknown", signToken(t, jwt.SigningMethodEdDSA, key.Key,
			map[string]any{"kid": "no-such-kid", "typ": "at+jwt"}, good)},
		{"kid not a string", signToken(t, jwt.SigningMethodEdDSA, key.Key,
			map[string]any{"kid": 7, "typ": "at+jwt"}, good)},
		{"alg none", signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType,
			map[string]any{"kid": key.ID, "typ": "at+jwt"}, good)},
		// The classic key-confusion attack: HMAC keyed with the public key.
		{"alg HS256 keyed with the public key", signToken(t, jwt.SigningMethodHS256, []byte(key.Public().Key),
			map[string]any{"kid": key.ID, "typ": "at+jwt"}, good)},
		{"typ svc+jwt", edToken(t, key, "svc+jwt", good)},
		{"typ JWT", edToken(t, key, "JWT", good)},
		{"typ missing", signToken(t, jwt.SigningMethodEdDSA, key.Key, map[string]any{"kid": key.ID, "typ": nil}, good)},
		{"internal token", internal},
		{"signed by a service key", edToken(t, kr.Identities["gateway"], "at+jwt", good)},
		{"wrong iss", edToken(t, key, "at+jwt", with(good, "iss", "evil-gateway"))},
		{"no iss", edToken(t, key, "at+jwt", with(good, "iss", nil))},
		{"wrong aud", edToken(t, key, "at+jwt", with(good, "aud", []string{"users"}))},
		{"no aud", edToken(t, key, "at+jwt", with(good, "aud", nil))},
		{"no exp", edToken(t, key, "at+jwt", with(good, "exp", nil))},
		{"exp not a number", edToken(t, key, "at+jwt", with(good, "exp", "tomorrow"))},
		{"no sub", edToken(t, key, "at+jwt", with(good, "sub", nil))},
		{"empty sub", edToken(t, key, "at+jwt", with(good, "sub", ""))},
		{"iat in the future", edToken(t, key, "at+jwt", with(good, "iat", now.Add(time.Hour).Unix()))},
		{"nbf in the future", edToken(t, key, "at+jwt", with(good, "nbf", now.Add(time.Hour).Unix()))},
		{"tampered payload", tampered},
		{"tampered signature", flippedSig},
		{"signature stripped", parts[0] + "." + parts[1] + "."},
		{"oversized", edToken(t, key, "at+jwt", with(good, "pad", strings.Repeat("x", 8<<10)))},
		// RFC 7515 §4.1.11: crit lists extensions the recipient must
		// understand, and Blueprint understands none.
		{"crit naming an extension", signJSON(key.Key, header(`"crit":["urn:example:mfa"],"urn:example:mfa":true,`), payload(""))},
		{"crit empty", signJSON(key.Key, header(`"crit":[],`), payload(""))},
		// RFC 7515 §4, RFC 7519 §4: a name given twice is refused, whichever
		// copy one parser or another would keep.
		{"alg twice", signJSON(key.Key, header(`"alg":"none",`), payload(""))},
		{"typ twice", signJSON(key.Key, header(`"typ":"svc+jwt",`), payload(""))},
		{"sub twice", signJSON(key.Key, header(""), payload(`"sub":"gateway",`))},
		{"sub twice, once escaped", signJSON(key.Key, header(""), payload(`"s\u0075b":"gateway",`))},
		{"a name twice in a nested object", signJSON(key.Key, header(""), payload(`"cnf":{"jkt":"a","jkt":"b"},`))},
		// RFC 7519 §2: a NumericDate is a JSON number, not a string of one.
		{"exp a string", edToken(t, key, "at+jwt", with(good, "exp", numericString(auth.AccessTTL)))},
		{"iat a string", edToken(t, key, "at+jwt", with(good, "iat", numericString(0)))},
		{"nbf a string", edToken(t, key, "at+jwt", with(good, "nbf", numericString(0)))},
		// Past int64 seconds, a time would wrap round to one long past.
		{"nbf in the year 300 billion", edToken(t, key, "at+jwt", with(good, "nbf", 1e19))},
		{"iat in the year 300 billion", edToken(t, key, "at+jwt", with(good, "iat", 1e19))},
		{"iat before 1970", edToken(t, key, "at+jwt", with(good, "iat", -1))},
		// sub must be a user id as the users service writes them.
		{"sub a service name", edToken(t, key, "at+jwt", with(good, "sub", "gateway"))},
		{"sub not a UUID", edToken(t, key, "at+jwt", with(good, "sub", "user-1"))},
		{"sub a UUIDv4", edToken(t, key, "at+jwt", with(good, "sub", "9b285d65-fee2-4d21-87ef-16622344d51a"))},
		{"sub a user id in upper case", edToken(t, key, "at+jwt", with(good, "sub", strings.ToUpper(user1)))},
		{"sub a user id without hyphens", edToken(t, key, "at+jwt", with(good, "sub", strings.ReplaceAll(user1, "-", "")))},
		{"sub a user id in braces", edToken(t, key, "at+jwt", with(good, "sub", "{"+user1+"}"))},
		{"sub a user id as a URN", edToken(t, key, "at+jwt", with(good, "sub", "urn:uuid:"+user1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Twice: a refused token must not be remembered as verified.
			for range 2 {
				got, err := at.Verify(tt.token)
				wantUnauthorized(t, "Verify("+quote(tt.token)+")", got, err)
			}
		})
	}
}

// TestAccessTokensIssueRefusesNonUserIDs: the gateway signs no token its
// own Verify would refuse.
func TestAccessTokensIssueRefusesNonUserIDs(t *testing.T) {
	t.Parallel()
	at, _, _ := newTestAccessTokens(t)
	for _, sub := range []string{"", "gateway", "user-1", strings.ToUpper(user1)} {
		if token, _, err := at.Issue(sub); err == nil {
			t.Errorf("Issue(%q) = %q, nil, want an error", sub, token)
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestAccessTokensRotation(t *testing.T) {
	t.Parallel()
	clock := newTestClock(t)
	oldKey, newKey := newTestKey(t), newTestKey(t)

	before := auth.NewAccessTokens(oldKey, []auth.PublicKey{oldKey.Public()}, clock.Now)
	oldToken, _, err := before.Issue(user1)
	if err != nil {
		t.Fatalf("Issue() = %v, want nil", err)
	}

	// During the rotation the gateway signs with the new key and still
	// accepts the old one, so nobody is logged out.
	during := auth.NewAccessTokens(newKey, []auth.PublicKey{newKey.Public(), oldKey.Public()}, clock.Now)
	newToken, _, err := during.Issue(user2)
	if err != nil {
		t.Fatalf("Issue() = %v, want nil", err)
	}
	if kid := decodeSegment(t, newToken, 0)["kid"]; kid != newKey.ID {
		t.Errorf("new token kid = %v, want %v (the new key)", kid, newKey.ID)
	}
	for token, want := range map[string]string{oldToken: user1, newToken: user2} {
		if got, err := during.Verify(token); err != nil || got != want {
			t.Errorf("Verify(%q) during rotation = %q, %v, want %q, nil", token, got, err, want)
		}
	}
	if got, err := before.Verify(newToken); err == nil {
		t.Errorf("Verify(new token) before rotation = %q, nil, want an error", got)
	}

	// JWKS publishes both public keys and nothing private.
	jwks := during.JWKS()
	var kids []string
	for _, k := range jwks.Keys {
		kids = append(kids, k.Kid)
	}
	slices.Sort(kids)
	wantKids := []string{oldKey.ID, newKey.ID}
	slices.Sort(wantKids)
	if !slices.Equal(kids, wantKids) {
		t.Errorf("JWKS kids = %v, want %v", kids, wantKids)
	}
	keys, err := jwks.PublicKeys()
	if err != nil {
		t.Fatalf("JWKS().PublicKeys() = %v, want nil", err)
	}
	for _, k := range keys {
		want := map[string]ed25519.PublicKey{oldKey.ID: oldKey.Public().Key, newKey.ID: newKey.Public().Key}[k.ID]
		if !bytes.Equal(k.Key, want) {
			t.Errorf("JWKS key %s = %x, want %x", k.ID, k.Key, want)
		}
	}
	assertPublicJWKS(t, jwks, oldKey, newKey)

	// After the rotation, the old key is gone and its tokens with it.
	after := auth.NewAccessTokens(newKey, []auth.PublicKey{newKey.Public()}, clock.Now)
	if got, err := after.Verify(oldToken); err == nil {
		t.Errorf("Verify(old token) after rotation = %q, nil, want an error", got)
	}
}

// assertPublicJWKS checks that the JSON of set holds exactly the public
// members of an Ed25519 JWK and none of the private keys' bytes.
func assertPublicJWKS(t *testing.T, set auth.JWKSet, private ...auth.PrivateKey) {
	t.Helper()
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatalf("json.Marshal(JWKS) = %v, want nil", err)
	}
	var doc map[string][]map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("JWKS JSON %s: %v", data, err)
	}
	if len(doc) != 1 || doc["keys"] == nil {
		t.Errorf("JWKS JSON %s has top-level members other than keys", data)
	}
	allowed := []string{"alg", "crv", "kid", "kty", "use", "x"}
	for _, k := range doc["keys"] {
		var names []string
		for name := range k {
			names = append(names, name)
		}
		slices.Sort(names)
		if !slices.Equal(names, allowed) {
			t.Errorf("JWK members = %v, want %v", names, allowed)
		}
		for name, want := range map[string]string{"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA"} {
			if k[name] != want {
				t.Errorf("JWK %s = %v, want %v", name, k[name], want)
			}
		}
	}
	for _, p := range private {
		for _, enc := range encodings(p.Key.Seed()) {
			if strings.Contains(string(data), enc) {
				t.Errorf("JWKS JSON %s contains the private key of %s", data, p.ID)
			}
		}
	}
}

// encodings are the ways key bytes could end up in text: base64 and hex,
// and the %v and %#v forms of a byte slice. A 12-byte prefix is enough to
// tell and, being a multiple of 3, is a prefix of the base64 of the whole.
func encodings(b []byte) []string {
	p := b[:12]
	return []string{
		base64.RawURLEncoding.EncodeToString(p),
		base64.StdEncoding.EncodeToString(p),
		hex.EncodeToString(p),
		strings.Trim(fmt.Sprint(p), "[]"),
		strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%#v", p), "[]byte{"), "}"),
	}
}

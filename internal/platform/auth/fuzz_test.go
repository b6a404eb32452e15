package auth_test

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// The fuzz tests hold the verifiers to one promise: whatever the input, the
// answer is a verified caller or an Unauthorized error, never a panic, and
// a verified caller only for a properly signed, strictly formed token.
//
// The Fuzz…Verify targets take whole token strings; the Fuzz…VerifySigned
// targets take a header and a payload as JSON text and sign them with a
// trusted key, so that the fuzzer explores what a key holder could send
// rather than what a forger cannot get past the signature.

// fuzzSeeds are inputs shaped like the attacks a verifier must survive,
// built around one genuine token so the fuzzer starts close to valid ones.
func fuzzSeeds(genuine string) []string {
	parts := strings.Split(genuine, ".")
	return []string{
		"",
		".",
		"..",
		"a.b.c",
		"Bearer " + genuine,
		genuine,
		genuine + ".",
		parts[0] + "." + parts[1] + ".",
		parts[0] + ".." + parts[2],
		"." + parts[1] + "." + parts[2],
		"eyJhbGciOiJub25lIn0." + parts[1] + ".",
		"eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9." + parts[1] + "." + parts[2],
		"eyJ9." + parts[1] + "." + parts[2],
		strings.Repeat("A", 4096),
		"\x00\xff.\x00\xff.\x00\xff",
	}
}

// tokenJSON is a token's header and payload as JSON text.
type tokenJSON struct{ header, payload string }

// claimsJSON says who a token is from, to and for, and when it was issued
// and expires; times are JSON numbers unless the test writes them otherwise.
type claimsJSON struct {
	typ, kid, iss, aud, sub string
	iat, exp                int64
}

func (c claimsJSON) header(members ...string) string {
	return object(append(members, fmt.Sprintf(`"alg":"EdDSA","kid":%q,"typ":%q`, c.kid, c.typ))...)
}

func (c claimsJSON) payload(members ...string) string {
	return object(append(members, fmt.Sprintf(`"iss":%q,"aud":%q,"sub":%q,"iat":%d,"exp":%d`,
		c.iss, c.aud, c.sub, c.iat, c.exp))...)
}

func object(members ...string) string { return "{" + strings.Join(members, ",") + "}" }

// json is the JSON of the token c describes.
func (c claimsJSON) json() tokenJSON { return tokenJSON{c.header(), c.payload()} }

// attacks are the JSON of tokens like c that every verifier must refuse.
func (c claimsJSON) attacks() []tokenJSON {
	times := func(iat, exp string) string {
		return object(fmt.Sprintf(`"iss":%q,"aud":%q,"sub":%q,"iat":%s,"exp":%s`, c.iss, c.aud, c.sub, iat, exp))
	}
	expired := c
	expired.iat, expired.exp = c.iat-3600, c.exp-3600
	return []tokenJSON{
		{c.header(`"crit":["urn:example:mfa"]`, `"urn:example:mfa":true`), c.payload()},
		{c.header(`"alg":"none"`), c.payload()},
		{c.header(), c.payload(`"sub":"gateway"`)},
		{c.header(), c.payload(`"s\u0075b":"gateway"`)},
		{c.header(), c.payload(`"cnf":{"jkt":"a","jkt":"b"}`)},
		{c.header(), times(fmt.Sprint(c.iat), fmt.Sprintf(`"%d"`, c.exp))},
		{c.header(), times(fmt.Sprintf(`"%d"`, c.iat), fmt.Sprint(c.exp))},
		{c.header(), c.payload(`"nbf":1e19`)},
		expired.json(),
	}
}

// accessClaims and serviceClaims describe good tokens at t0.
func accessClaims(key auth.PrivateKey) claimsJSON {
	return claimsJSON{typ: "at+jwt", kid: key.ID, iss: auth.AccessIssuer, aud: auth.AccessAudience, sub: user1,
		iat: t0.Unix(), exp: t0.Add(auth.AccessTTL).Unix()}
}

func serviceClaims(key auth.PrivateKey) claimsJSON {
	return claimsJSON{typ: "svc+jwt", kid: key.ID, iss: "gateway", aud: "users", sub: "user-1",
		iat: t0.Unix(), exp: t0.Add(auth.ServiceTokenTTL).Unix()}
}

// accessAttacks adds to the attacks on every token an access token for a
// service rather than a user.
func accessAttacks(c claimsJSON) []tokenJSON {
	service := c
	service.sub = "gateway"
	return append(c.attacks(), service.json())
}

// serviceAttacks adds to the attacks on every token an internal token that
// lives an hour and one used a second after its exp.
func serviceAttacks(c claimsJSON) []tokenJSON {
	long, late := c, c
	long.exp += 3600
	late.iat, late.exp = c.iat-61, c.exp-61
	return append(c.attacks(), long.json(), late.json())
}

// wantUnauthorizedOnly fails the test unless err is nil or an *apperr.Error
// of kind Unauthorized.
func wantUnauthorizedOnly(t *testing.T, token string, err error) {
	t.Helper()
	if e, ok := err.(*apperr.Error); err != nil && (!ok || e.Kind != apperr.Unauthorized) {
		t.Fatalf("Verify(%q) error = %#v, want an *apperr.Error of kind Unauthorized", token, err)
	}
}

func FuzzAccessTokensVerify(f *testing.F) {
	key, err := auth.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	at := auth.NewAccessTokens(key, []auth.PublicKey{key.Public()}, func() time.Time { return t0 })
	genuine, _, err := at.Issue(user1)
	if err != nil {
		f.Fatal(err)
	}
	valid := accessClaims(key).json()
	// The only tokens that may pass: the one issued and the hand-built one.
	good := []string{genuine, signJSON(key.Key, valid.header, valid.payload)}
	for _, s := range append(fuzzSeeds(genuine), good[1]) {
		f.Add(s)
	}
	for _, s := range accessAttacks(accessClaims(key)) {
		f.Add(signJSON(key.Key, s.header, s.payload))
	}
	f.Fuzz(func(t *testing.T, token string) {
		user, err := at.Verify(token)
		wantUnauthorizedOnly(t, token, err)
		if err == nil && (!slices.Contains(good, token) || user != user1) {
			t.Fatalf("Verify(%q) = %q, nil, want an error: the token was never issued", token, user)
		}
	})
}

func FuzzServiceVerifierVerify(f *testing.F) {
	kr, err := auth.GenerateKeyring(testServices)
	if err != nil {
		f.Fatal(err)
	}
	now := func() time.Time { return t0 }
	v, err := auth.NewServiceVerifier("users", usersCallers, kr.Bundle, now)
	if err != nil {
		f.Fatal(err)
	}
	key := kr.Identities["gateway"]
	genuine, err := auth.NewMinter("gateway", key, now).Token("users", "user-1")
	if err != nil {
		f.Fatal(err)
	}
	valid := serviceClaims(key).json()
	// The only tokens that may pass: the one minted and the hand-built one.
	good := []string{genuine, signJSON(key.Key, valid.header, valid.payload)}
	for _, s := range append(fuzzSeeds(genuine), good[1]) {
		f.Add(s)
	}
	for _, s := range serviceAttacks(serviceClaims(key)) {
		f.Add(signJSON(key.Key, s.header, s.payload))
	}
	if other, err := auth.NewMinter("orders", kr.Identities["orders"], now).Token("users", "user-1"); err == nil {
		f.Add(other)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		wantUnauthorizedOnly(t, token, err)
		if want := (auth.Caller{Service: "gateway", Subject: "user-1"}); err == nil && (!slices.Contains(good, token) || c != want) {
			t.Fatalf("Verify(%q) = %+v, nil, want an error: the token was never minted", token, c)
		}
	})
}

func FuzzAccessTokensVerifySigned(f *testing.F) {
	key, err := auth.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	at := auth.NewAccessTokens(key, []auth.PublicKey{key.Public()}, func() time.Time { return t0 })
	for _, s := range append(accessAttacks(accessClaims(key)), accessClaims(key).json()) {
		f.Add(s.header, s.payload)
	}
	f.Fuzz(func(t *testing.T, header, payload string) {
		token := signJSON(key.Key, header, payload)
		user, err := at.Verify(token)
		wantUnauthorizedOnly(t, token, err)
		if err != nil {
			return
		}
		claims := wantStrictForm(t, token, header, payload, "at+jwt", key.ID)
		if claims["iss"] != auth.AccessIssuer || !audienceIncludes(claims["aud"], auth.AccessAudience) ||
			claims["sub"] != user || !canonicalUUIDv7.MatchString(user) {
			t.Fatalf("Verify(%q) = %q, nil: iss, aud or sub %v is not an access token's", token, user, claims)
		}
		// Times in seconds, read to the second as the JWT library reads them.
		now, exp := float64(t0.Unix()), math.Floor(claims["exp"].(float64))
		iat, hasIat := claims["iat"].(float64)
		nbf, hasNbf := claims["nbf"].(float64)
		if now >= exp+30 || (hasIat && math.Floor(iat)-30 > now) || (hasNbf && math.Floor(nbf)-30 > now) {
			t.Fatalf("Verify(%q) = %q, nil at %v: the token is outside its times and 30 s of skew", token, user, t0)
		}
	})
}

func FuzzServiceVerifierVerifySigned(f *testing.F) {
	kr, err := auth.GenerateKeyring(testServices)
	if err != nil {
		f.Fatal(err)
	}
	v, err := auth.NewServiceVerifier("users", usersCallers, kr.Bundle, func() time.Time { return t0 })
	if err != nil {
		f.Fatal(err)
	}
	key := kr.Identities["gateway"]
	for _, s := range append(serviceAttacks(serviceClaims(key)), serviceClaims(key).json()) {
		f.Add(s.header, s.payload)
	}
	f.Fuzz(func(t *testing.T, header, payload string) {
		token := signJSON(key.Key, header, payload)
		c, err := v.Verify(token)
		wantUnauthorizedOnly(t, token, err)
		if err != nil {
			return
		}
		claims := wantStrictForm(t, token, header, payload, "svc+jwt", key.ID)
		if claims["iss"] != "gateway" || !audienceIncludes(claims["aud"], "users") ||
			c.Service != "gateway" || claims["sub"] != c.Subject || c.Subject == "" {
			t.Fatalf("Verify(%q) = %+v, nil: iss, aud or sub %v is not the gateway's for users", token, c, claims)
		}
		// Times in seconds, read to the second as the JWT library reads them.
		now, exp := float64(t0.Unix()), math.Floor(claims["exp"].(float64))
		iat, hasIat := claims["iat"].(float64)
		nbf, hasNbf := claims["nbf"].(float64)
		if !hasIat || exp-math.Floor(iat) > 60 || now >= exp || math.Floor(iat)-5 > now ||
			(hasNbf && math.Floor(nbf)-5 > now) {
			t.Fatalf("Verify(%q) = %+v, nil at %v: the token lives over 60 s, is expired, or is from over 5 s ahead",
				token, c, t0)
		}
	})
}

// canonicalUUIDv7 is a UUIDv7 written as the users service writes its ids.
var canonicalUUIDv7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// wantStrictForm fails the test unless the header and payload of an
// accepted token are strictly formed: typ and kid as signed, alg EdDSA, no
// crit, no member named twice, and exp, iat and nbf JSON numbers (exp
// present). It returns the payload's claims.
func wantStrictForm(t *testing.T, token, header, payload, typ, kid string) map[string]any {
	t.Helper()
	var h, claims map[string]any
	if json.Unmarshal([]byte(header), &h) != nil || json.Unmarshal([]byte(payload), &claims) != nil {
		t.Fatalf("Verify(%q) accepted a header or payload that is not a JSON object", token)
	}
	if _, crit := h["crit"]; crit || h["alg"] != "EdDSA" || h["typ"] != typ || h["kid"] != kid {
		t.Fatalf("Verify(%q) accepted the header %s", token, header)
	}
	if namesTwice(header) || namesTwice(payload) {
		t.Fatalf("Verify(%q) accepted a member named twice: %s %s", token, header, payload)
	}
	for _, name := range []string{"exp", "iat", "nbf"} {
		value, present := claims[name]
		if _, isNumber := value.(float64); (present || name == "exp") && !isNumber {
			t.Fatalf("Verify(%q) accepted %s = %#v, want a JSON number", token, name, value)
		}
	}
	return claims
}

// audienceIncludes reports whether aud, a string or an array of strings,
// names want.
func audienceIncludes(aud any, want string) bool {
	switch aud := aud.(type) {
	case string:
		return aud == want
	case []any:
		return slices.Contains(aud, any(want))
	}
	return false
}

// namesTwice reports whether the JSON text data, a valid JSON value, names a
// member twice in one object. Each member has one colon outside strings;
// duplicates make more colons than the decoded objects have members.
func namesTwice(data string) bool {
	colons, inString, escaped := 0, false, false
	for _, c := range []byte(data) {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && c == ':':
			colons++
		}
	}
	var v any
	_ = json.Unmarshal([]byte(data), &v)
	return colons != members(v)
}

// members counts the members of every object in v, decoded JSON.
func members(v any) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		n = len(v)
		for _, e := range v {
			n += members(e)
		}
	case []any:
		for _, e := range v {
			n += members(e)
		}
	}
	return n
}

//go:build security

package security

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

var _ = addClass("tokens", attackTokens)

// b64 is base64url without padding, as JWS encodes each part.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signed makes a compact EdDSA JWS of a header and a payload written as raw
// JSON (so that duplicate members and wrong types can be sent as they are).
func signed(key ed25519.PrivateKey, header, payload string) string {
	input := b64(header) + "." + b64(payload)
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(input)))
}

// attackTokens presents forged and malformed tokens to an authenticated
// route. Some are signed with the deployment's real access key, as an
// insider or a leaked key would: strictness must not rest on the key alone.
func attackTokens(t *testing.T, s *system) {
	victim := newClient(t, s)
	victimID, _ := victim.signUp("victim password 1")
	kr, err := auth.LoadKeyring(s.keys, []string{"gateway"}, true)
	if err != nil {
		t.Fatalf("keys: %v", err)
	}
	access, gateway := kr.Access, kr.Identities["gateway"]
	_, attackerKey, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now().Unix()
	claims := func(sub string, exp int64) string {
		return fmt.Sprintf(`{"iss":%q,"aud":[%q],"sub":%q,"iat":%d,"exp":%d,"jti":"j-%d"}`,
			auth.AccessIssuer, auth.AccessAudience, sub, now, exp, time.Now().UnixNano())
	}
	header := func(kid string, extra string) string {
		return fmt.Sprintf(`{"alg":"EdDSA","typ":"at+jwt","kid":%q%s}`, kid, extra)
	}
	good := signed(access.Key, header(access.ID, ""), claims(victimID, now+600))

	parts := strings.Split(good, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 0x01
	flipped := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)

	// HS256 keyed with the public key, the classic algorithm confusion.
	pub := access.Key.Public().(ed25519.PublicKey)
	hsInput := b64(fmt.Sprintf(`{"alg":"HS256","typ":"at+jwt","kid":%q}`, access.ID)) + "." + b64(claims(victimID, now+600))
	mac := hmac.New(sha256.New, pub)
	mac.Write([]byte(hsInput))
	confused := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	attackerJWK := fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q}`,
		base64.RawURLEncoding.EncodeToString(attackerKey.Public().(ed25519.PublicKey)))
	serviceToken := signed(gateway.Key,
		fmt.Sprintf(`{"alg":"EdDSA","typ":"svc+jwt","kid":%q}`, gateway.ID),
		fmt.Sprintf(`{"iss":"gateway","aud":["users"],"sub":%q,"iat":%d,"exp":%d}`, victimID, now, now+50))

	cases := []struct {
		name  string
		token string
	}{
		{"alg none", b64(fmt.Sprintf(`{"alg":"none","typ":"at+jwt","kid":%q}`, access.ID)) + "." + b64(claims(victimID, now+600)) + "."},
		{"HS256 keyed with the public key", confused},
		{"a bit flipped in the signature", flipped},
		{"an unknown kid", signed(attackerKey, header("attacker", ""), claims(victimID, now+600))},
		{"jku to the attacker's keys", signed(attackerKey, header("attacker", `,"jku":"https://attacker.example/jwks.json"`), claims(victimID, now+600))},
		{"x5u to the attacker's certificate", signed(attackerKey, header("attacker", `,"x5u":"https://attacker.example/cert.pem"`), claims(victimID, now+600))},
		{"embedded jwk of the attacker", signed(attackerKey, header("attacker", `,"jwk":`+attackerJWK), claims(victimID, now+600))},
		{"the real kid, the attacker's signature", signed(attackerKey, header(access.ID, ""), claims(victimID, now+600))},
		{"expired", signed(access.Key, header(access.ID, ""), claims(victimID, now-120))},
		{"another audience", signed(access.Key, header(access.ID, ""), strings.Replace(claims(victimID, now+600), auth.AccessAudience, "elsewhere", 1))},
		{"an internal service token at the gateway", serviceToken},
		// Signed with the real key: the parser must be strict by itself.
		{"an unknown crit header", signed(access.Key, header(access.ID, `,"crit":["exp"]`), claims(victimID, now+600))},
		{"a duplicate sub", signed(access.Key, header(access.ID, ""),
			strings.Replace(claims(victimID, now+600), `"sub":`, `"sub":"someone-else","sub":`, 1))},
		{"a duplicate alg in the header", signed(access.Key, fmt.Sprintf(`{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":%q}`, access.ID), claims(victimID, now+600))},
		{"exp as a string", signed(access.Key, header(access.ID, ""),
			fmt.Sprintf(`{"iss":%q,"aud":[%q],"sub":%q,"iat":%d,"exp":"%d","jti":"x"}`, auth.AccessIssuer, auth.AccessAudience, victimID, now, now+600))},
		{"a service's name as the user", signed(access.Key, header(access.ID, ""), claims("gateway", now+600))},
		{"garbage", "not.a.token"},
	}
	for _, tc := range cases {
		c := newClient(t, s)
		c.token = tc.token
		expectRefused(t, s, tc.name, c.send("GET", "/users/me", ""), http.StatusUnauthorized)
	}

	// The control case: the well-formed token signed with the real key.
	c := newClient(t, s)
	c.token = good
	if a := c.send("GET", "/users/me", ""); a.status != http.StatusOK {
		t.Fatalf("a well-formed token = %v %s; the attacks above prove nothing if it is refused too", a, a.body)
	}

	// Two Authorization headers: which one would count?
	c = newClient(t, s)
	expectRefused(t, s, "two Authorization headers", c.send("GET", "/users/me", "",
		"Authorization", "Bearer "+victim.token, "Authorization", "Bearer "+good), http.StatusUnauthorized, http.StatusBadRequest)
}

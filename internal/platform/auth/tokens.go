package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// Access token constants from the public API contract.
const (
	AccessIssuer   = "blueprint-gateway"
	AccessAudience = "blueprint-api"
	AccessTTL      = 15 * time.Minute
	accessType     = "at+jwt"
)

// Internal token constants: short-lived, bound to caller and callee.
const (
	ServiceTokenTTL = 60 * time.Second
	serviceType     = "svc+jwt"
)

// clockSkew is how far apart two machines' clocks may be.
const clockSkew = 30 * time.Second

// ErrInvalidToken is the cause of every rejected token. Callers see one
// answer (401) whatever was wrong, and the reason goes to the error chain.
var ErrInvalidToken = errors.New("invalid token")

func unauthorized(reason string, err error) error {
	return &apperr.Error{
		Kind: apperr.Unauthorized, Code: "unauthorized", Detail: "the bearer token is missing or invalid",
		// RFC 6750: name the error only when a token was sent.
		Challenge: `Bearer realm="blueprint", error="invalid_token"`,
		Err:       fmt.Errorf("%w: %s: %w", ErrInvalidToken, reason, errOrNil(err)),
	}
}

func errOrNil(err error) error {
	if err == nil {
		return errors.New("rejected")
	}
	return err
}

// sign makes a compact JWS of claims with the EdDSA key and the given typ.
func sign(key PrivateKey, typ string, claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = key.ID
	t.Header["typ"] = typ
	s, err := t.SignedString(key.Key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// verify parses and checks a token: algorithm pinned to EdDSA, typ, kid
// known, signature, exp required, iss and aud, at most clockSkew of skew.
// keyFor picks the verification key from the kid and the claimed issuer.
func verify(token, typ, issuer, audience string, now func() time.Time,
	keyFor func(kid, iss string) (PublicKey, bool)) (*jwt.RegisteredClaims, error) {
	// One token, one spelling: base64 decoders skip line breaks and ignore
	// unused bits, which would let one token be written many ways.
	if !compactJWS(token) {
		return nil, unauthorized("not a compact JWS", nil)
	}
	opts := []jwt.ParserOption{
		jwt.WithStrictDecoding(),
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(clockSkew),
		jwt.WithTimeFunc(now),
	}
	if issuer != "" {
		opts = append(opts, jwt.WithIssuer(issuer))
	}
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if t.Header["typ"] != typ {
			return nil, fmt.Errorf("typ is %v, want %s", t.Header["typ"], typ)
		}
		kid, _ := t.Header["kid"].(string)
		key, ok := keyFor(kid, claims.Issuer)
		if !ok {
			return nil, fmt.Errorf("unknown kid %q for issuer %q", kid, claims.Issuer)
		}
		return key.Key, nil
	})
	if err != nil {
		return nil, unauthorized("verify", err)
	}
	if claims.Subject == "" {
		return nil, unauthorized("no subject", nil)
	}
	return claims, nil
}

// verifiedWindow is when verify, given the same token again, would accept
// it: its iat and exp with clockSkew either side. A verifier that caches a
// token it accepted for this window answers exactly as verify would, with
// one signature check per token instead of one per request.
func verifiedWindow(c *jwt.RegisteredClaims) (from, until time.Time) {
	if c.IssuedAt != nil {
		from = c.IssuedAt.Add(-clockSkew)
	}
	return from, c.ExpiresAt.Add(clockSkew)
}

// compactJWS reports whether token is three base64url segments.
func compactJWS(token string) bool {
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// keyIndex maps key ids to keys.
func keyIndex(sets ...[]PublicKey) map[string]PublicKey {
	idx := map[string]PublicKey{}
	for _, set := range sets {
		for _, k := range set {
			idx[k.ID] = k
		}
	}
	return idx
}

// AccessTokens issues and verifies the public access tokens. Only the
// gateway holds one.
type AccessTokens struct {
	signing  PrivateKey
	keys     map[string]PublicKey
	jwks     JWKSet
	now      func() time.Time
	verified *tokenCache[string, string] // token → user id
}

// NewAccessTokens signs with signing and accepts any key in verify (the
// signing key and, during a rotation, the previous one).
func NewAccessTokens(signing PrivateKey, verify []PublicKey, now func() time.Time) *AccessTokens {
	return &AccessTokens{signing: signing, keys: keyIndex(verify), jwks: NewJWKSet(verify), now: now,
		verified: newTokenCache[string, string]()}
}

// Issue returns an access token for the user and its lifetime in seconds.
func (a *AccessTokens) Issue(userID string) (string, int, error) {
	now := a.now()
	token, err := sign(a.signing, accessType, jwt.RegisteredClaims{
		Issuer:    AccessIssuer,
		Subject:   userID,
		Audience:  jwt.ClaimStrings{AccessAudience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(AccessTTL)),
		ID:        uuid.NewString(),
	})
	return token, int(AccessTTL / time.Second), err
}

// Verify returns the user id of a valid access token, or an Unauthorized
// error. A token accepted once is remembered, keyed by its whole text,
// for as long as it stays valid; forged or broken ones never are.
func (a *AccessTokens) Verify(token string) (string, error) {
	now := a.now()
	if user, ok := a.verified.get(token, now); ok {
		return user, nil
	}
	claims, err := verify(token, accessType, AccessIssuer, AccessAudience, a.now,
		func(kid, _ string) (PublicKey, bool) { k, ok := a.keys[kid]; return k, ok })
	if err != nil {
		return "", err
	}
	from, until := verifiedWindow(claims)
	a.verified.put(token, claims.Subject, from, until, now)
	return claims.Subject, nil
}

// JWKS returns the public keys of access tokens.
func (a *AccessTokens) JWKS() JWKSet { return a.jwks }

// Caller is the verified identity behind an internal request.
type Caller struct {
	// Service is the calling service (the token's iss).
	Service string
	// Subject is the end user the service acts for, or the service itself.
	Subject string
}

// ServiceVerifier accepts internal tokens addressed to one service from the
// services in its trust list.
type ServiceVerifier struct {
	self     string
	trusted  map[string]map[string]PublicKey // issuer → kid → key
	now      func() time.Time
	verified *tokenCache[string, Caller]
}

// NewServiceVerifier returns a verifier for the service self that trusts
// tokens from the named callers, whose keys it finds in the bundle.
func NewServiceVerifier(self string, callers []string, bundle Bundle, now func() time.Time) (*ServiceVerifier, error) {
	v := &ServiceVerifier{self: self, trusted: map[string]map[string]PublicKey{}, now: now,
		verified: newTokenCache[string, Caller]()}
	for _, c := range callers {
		set, ok := bundle.Services[c]
		if !ok {
			return nil, fmt.Errorf("trust bundle has no keys for %s, which %s trusts", c, self)
		}
		keys, err := set.PublicKeys()
		if err != nil {
			return nil, fmt.Errorf("trust bundle, %s: %w", c, err)
		}
		v.trusted[c] = keyIndex(keys)
	}
	return v, nil
}

// Verify checks an internal token and returns who is calling. Like
// AccessTokens.Verify, it remembers the tokens it accepted while they are
// valid: a Minter sends the same token for 30 s.
func (v *ServiceVerifier) Verify(token string) (Caller, error) {
	now := v.now()
	if c, ok := v.verified.get(token, now); ok {
		return c, nil
	}
	claims, err := verify(token, serviceType, "", v.self, v.now, func(kid, iss string) (PublicKey, bool) {
		k, ok := v.trusted[iss][kid]
		return k, ok
	})
	if err != nil {
		return Caller{}, err
	}
	// A leaked internal token must be useless within a minute: refuse any
	// that claims a longer life, whoever signed it.
	if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > ServiceTokenTTL {
		return Caller{}, unauthorized("lifetime over 60s", nil)
	}
	c := Caller{Service: claims.Issuer, Subject: claims.Subject}
	from, until := verifiedWindow(claims)
	v.verified.put(token, c, from, until, now)
	return c, nil
}

// Minter makes the internal tokens one service sends. A token is reused for
// the same (audience, subject) until half its life has passed: the hot path
// signs at most once per 30 s per user instead of on every call.
type Minter struct {
	service string
	key     PrivateKey
	now     func() time.Time
	cache   *tokenCache[[2]string, string]
}

// NewMinter returns a Minter for the service holding key.
func NewMinter(service string, key PrivateKey, now func() time.Time) *Minter {
	return &Minter{service: service, key: key, now: now, cache: newTokenCache[[2]string, string]()}
}

// Token returns a token for a call to audience on behalf of subject (a user
// id, or "" when the service acts for itself).
func (m *Minter) Token(audience, subject string) (string, error) {
	if subject == "" {
		subject = m.service
	}
	k := [2]string{audience, subject}
	now := m.now()
	if token, ok := m.cache.get(k, now); ok {
		return token, nil
	}
	// Two calls that miss at once both sign; either token is good.
	token, err := sign(m.key, serviceType, jwt.RegisteredClaims{
		Issuer:    m.service,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ServiceTokenTTL)),
	})
	if err != nil {
		return "", err
	}
	m.cache.put(k, token, time.Time{}, now.Add(ServiceTokenTTL/2), now)
	return token, nil
}

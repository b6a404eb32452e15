package auth

import (
	"errors"
	"fmt"
	"slices"
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

// clockSkew is how far apart two machines' clocks may be, for access tokens.
const clockSkew = 30 * time.Second

// serviceClockSkew is how far ahead of the verifier's clock the minter's may
// be. It is granted that way only: an internal token is never accepted after
// its exp, so never more than ServiceTokenTTL after it was issued.
const serviceClockSkew = 5 * time.Second

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

// policy is what one kind of token must carry besides a good signature.
type policy struct {
	typ      string
	issuer   string // empty: any issuer keyFor finds the signing key of
	audience string
	// ahead is how far past this clock a token's iat and nbf may be; late,
	// how long after its exp the token is still accepted.
	ahead, late time.Duration
	// maxLifetime, when set, bounds exp − iat and makes iat required.
	maxLifetime time.Duration
	// subject reports whether a sub names what this kind of token is for.
	subject func(string) bool
}

// verified is what Blueprint keeps of a token that passed verify.
type verified struct {
	issuer, subject string
	// from and until bound when verify accepts the token (until excluded):
	// a verifier that remembers it for that window answers as verify would.
	from, until time.Time
}

// verify checks a token against p at now: its form, the algorithm (pinned
// to EdDSA), crit, typ, kid and signature, that no JSON member is named
// twice, then its claims. keyFor picks the verification key from the kid
// and the claimed issuer. The costlier checks of form come after the
// signature, so that a forger cannot make them run.
func verify(token string, p policy, now time.Time, keyFor func(kid, iss string) (PublicKey, bool)) (verified, error) {
	// One token, one spelling: base64 decoders skip line breaks and ignore
	// unused bits, which would let one token be written many ways.
	if !compactJWS(token) {
		return verified{}, unauthorized("not a compact JWS", nil)
	}
	// MapClaims keeps JSON types, where RegisteredClaims would read a
	// NumericDate from a string, and matches names exactly, where a struct's
	// fields would ignore case.
	claims := jwt.MapClaims{}
	parser := jwt.NewParser(
		jwt.WithStrictDecoding(),
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		// The library's validator allows one skew both ways of every time;
		// checkClaims allows each its own.
		jwt.WithoutClaimsValidation(),
	)
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		// RFC 7515 §4.1.11: crit lists extensions the recipient must
		// understand, and Blueprint understands none.
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("crit header: no extension is supported")
		}
		if t.Header["typ"] != p.typ {
			return nil, fmt.Errorf("typ is %v, want %s", t.Header["typ"], p.typ)
		}
		kid, _ := t.Header["kid"].(string)
		iss, _ := claims["iss"].(string)
		key, ok := keyFor(kid, iss)
		if !ok {
			return nil, fmt.Errorf("unknown kid %q for issuer %q", kid, iss)
		}
		return key.Key, nil
	})
	if err != nil {
		return verified{}, unauthorized("verify", err)
	}
	if err := uniqueNames(token); err != nil {
		return verified{}, unauthorized("malformed", err)
	}
	v, err := p.checkClaims(claims, now)
	if err != nil {
		return verified{}, unauthorized("claims", err)
	}
	return v, nil
}

// checkClaims checks the iss, aud, sub and times of a signed token.
func (p policy) checkClaims(c jwt.MapClaims, now time.Time) (verified, error) {
	iss, err := c.GetIssuer()
	if err != nil || (p.issuer != "" && iss != p.issuer) {
		return verified{}, fmt.Errorf("iss %v is not the issuer of a %s token", c["iss"], p.typ)
	}
	if aud, err := c.GetAudience(); err != nil || !slices.Contains(aud, p.audience) {
		return verified{}, fmt.Errorf("aud %v does not name %s", c["aud"], p.audience)
	}
	sub, err := c.GetSubject()
	if err != nil || !p.subject(sub) {
		return verified{}, fmt.Errorf("sub %v is not the subject of a %s token", c["sub"], p.typ)
	}
	exp, expErr := numericDate(c, "exp")
	iat, iatErr := numericDate(c, "iat")
	nbf, nbfErr := numericDate(c, "nbf")
	if err := errors.Join(expErr, iatErr, nbfErr); err != nil {
		return verified{}, err
	}
	if exp.IsZero() {
		return verified{}, errors.New("no exp")
	}
	if p.maxLifetime > 0 && (iat.IsZero() || exp.Sub(iat) > p.maxLifetime) {
		return verified{}, fmt.Errorf("no iat, or a lifetime over %v", p.maxLifetime)
	}
	v := verified{issuer: iss, subject: sub, until: exp.Add(p.late)}
	for _, start := range []time.Time{iat, nbf} {
		if !start.IsZero() && start.Add(-p.ahead).After(v.from) {
			v.from = start.Add(-p.ahead)
		}
	}
	if now.Before(v.from) || !now.Before(v.until) {
		return verified{}, fmt.Errorf("valid from %v until %v, not at %v", v.from, v.until, now)
	}
	return v, nil
}

// maxNumericDate is 9999-12-31T23:59:59Z, later than any token lives.
const maxNumericDate = 253402300799

// numericDate reads the time claim name of c, or the zero time if c has none.
// RFC 7519 §2 makes it a JSON number of seconds since 1970 (MapClaims keeps
// JSON types, so a string is refused). It is read to the second, and only up
// to maxNumericDate: past int64 seconds, a conversion goes wrong, and an nbf
// of 1e19 would read as a time long past.
func numericDate(c jwt.MapClaims, name string) (time.Time, error) {
	v, ok := c[name]
	if !ok {
		return time.Time{}, nil
	}
	seconds, ok := v.(float64)
	if !ok || seconds < 0 || seconds > maxNumericDate {
		return time.Time{}, fmt.Errorf("%s %v is not a NumericDate", name, v)
	}
	return time.Unix(int64(seconds), 0), nil
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

// accessPolicy is what an access token must carry: 30 s of skew either way,
// and a user id for sub, since the gateway calls the other services as that
// user.
var accessPolicy = policy{typ: accessType, issuer: AccessIssuer, audience: AccessAudience,
	ahead: clockSkew, late: clockSkew, subject: isUserID}

// isUserID reports whether s is a user id as the users service makes them:
// a UUIDv7 written the one way uuid.UUID.String writes it.
func isUserID(s string) bool {
	id, err := uuid.Parse(s)
	return err == nil && id.Version() == 7 && id.Variant() == uuid.RFC4122 && id.String() == s
}

// NewAccessTokens signs with signing and accepts any key in verify (the
// signing key and, during a rotation, the previous one).
func NewAccessTokens(signing PrivateKey, verify []PublicKey, now func() time.Time) *AccessTokens {
	return &AccessTokens{signing: signing, keys: keyIndex(verify), jwks: NewJWKSet(verify), now: now,
		verified: newTokenCache[string, string]()}
}

// Issue returns an access token for the user and its lifetime in seconds.
// It refuses what is not a user id: Verify would refuse the token.
func (a *AccessTokens) Issue(userID string) (string, int, error) {
	if !isUserID(userID) {
		return "", 0, fmt.Errorf("issue access token: %q is not a user id", userID)
	}
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
	v, err := verify(token, accessPolicy, now,
		func(kid, _ string) (PublicKey, bool) { k, ok := a.keys[kid]; return k, ok })
	if err != nil {
		return "", err
	}
	a.verified.put(token, v.subject, v.from, v.until, now)
	return v.subject, nil
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
	policy   policy
	trusted  map[string]map[string]PublicKey // issuer → kid → key
	now      func() time.Time
	verified *tokenCache[string, Caller]
}

// NewServiceVerifier returns a verifier for the service self that trusts
// tokens from the named callers, whose keys it finds in the bundle.
func NewServiceVerifier(self string, callers []string, bundle Bundle, now func() time.Time) (*ServiceVerifier, error) {
	v := &ServiceVerifier{
		policy: policy{typ: serviceType, audience: self, ahead: serviceClockSkew,
			// A leaked internal token must be useless within a minute:
			// refuse any that claims a longer life, whoever signed it.
			maxLifetime: ServiceTokenTTL,
			// A user id, or the caller's own name when it acts for itself.
			subject: func(sub string) bool { return sub != "" }},
		trusted: map[string]map[string]PublicKey{}, now: now, verified: newTokenCache[string, Caller](),
	}
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
	passed, err := verify(token, v.policy, now, func(kid, iss string) (PublicKey, bool) {
		k, ok := v.trusted[iss][kid]
		return k, ok
	})
	if err != nil {
		return Caller{}, err
	}
	c := Caller{Service: passed.issuer, Subject: passed.subject}
	v.verified.put(token, c, passed.from, passed.until, now)
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

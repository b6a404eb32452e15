package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// Name is the service's name: its identity as a caller.
const Name = "gateway"

// Limits protect the gateway and the services behind it. Zero values switch
// a limit off.
type Limits struct {
	// MaxInFlight is how many requests the gateway serves at once; past it,
	// requests are shed with 503.
	MaxInFlight int
	// MaxInFlightPerIP is how many of them one client IP may hold at once;
	// past it, its next request is refused with 429.
	MaxInFlightPerIP int
	// PerSecond and Burst limit every client IP and every user.
	PerSecond float64
	Burst     int
	// RegisterPerHour limits registration attempts per client IP, and
	// RegisterPerSecond all of them together, in bursts of registerBurst
	// seconds' worth: each costs users a password hash.
	RegisterPerHour, RegisterPerSecond int
	// LoginPerMinute limits login attempts per client IP.
	LoginPerMinute int
	// LoginFailures limits failed logins per email and client IP per 15
	// minutes, and LoginAccountFailures per email from every address; a
	// failure past the latter locks the email's logins for a second, and
	// each further one for twice as long, up to 15 minutes.
	LoginFailures, LoginAccountFailures int
	// Redis, when set, holds the rate-limit buckets, shared by every
	// gateway replica using it with the same RedisPrefix; nil keeps them in
	// this process's memory.
	Redis       *redis.Client
	RedisPrefix string
	// OrderTimeout bounds a POST /orders from its first call to orders to
	// its answer (UPSTREAM_TIMEOUT: as long as one call). While orders
	// answers that another request holds the order's Idempotency-Key, the
	// gateway waits for that key's lock to end and calls again, when the
	// wait and one more call fit in it (createorder.go). Zero: a key in
	// flight is answered 409 at once.
	OrderTimeout time.Duration
}

// Upstreams are the services behind the gateway.
type Upstreams struct {
	Users, Orders, Notifications *upstream.Client
}

// Gateway serves the public API.
type Gateway struct {
	tokens    *auth.AccessTokens
	upstreams Upstreams
	logger    *slog.Logger
	now       func() time.Time

	maxInFlight int
	inFlight    atomic.Int64
	shedCount   metric.Int64Counter
	lastShedLog atomic.Int64 // Unix nanoseconds

	inFlightByIP *clientsInFlight // nil when off

	perClient, perUser             *rateLimit // nil when off
	registerPerIP, registerGlobal  *rateLimit
	loginPerIP                     *rateLimit
	loginFailures, accountFailures *rateLimit
	accountLocks                   lockouts // with accountFailures
	rateLimited                    metric.Int64Counter

	orderTimeout time.Duration
	keyWaits     metric.Int64Counter
}

// loginFailureWindow is the period over which login failures are counted:
// an address's for an account, and the account's from every address.
const loginFailureWindow = 15 * time.Minute

// registerBurst is how many seconds' worth of registrations may come at
// once from every client together: a few people signing up at the same
// moment, while what users is asked to hash at once stays small. Each
// registration waits its turn for a hash, holding a call to users (a place
// in its bulkhead, which logins need too) while it does.
const registerBurst = 3

// accountLockout is the shape of the lock of an account failing from many
// addresses (lockout.go). Its locks are counted until an hour after the
// last, longer than the longest, so that an attacker who waits one out
// finds the next failure locking the account as long again.
var accountLockout = lockoutPolicy{name: scopeLoginAccount, window: time.Hour, base: time.Second, max: 15 * time.Minute}

// The policy names: keys of the buckets, names in the RateLimit headers,
// scopes of the metrics.
const (
	scopeIP             = "ip"
	scopeIPInFlight     = "ip_in_flight"
	scopeUser           = "user"
	scopeRegister       = "register"
	scopeRegisterGlobal = "register_global"
	scopeLogin          = "login"
	scopeLoginFailures  = "login_failures"
	scopeLoginAccount   = "login_account"
)

// New returns the gateway. Its metrics: blueprint.gateway.in_flight,
// blueprint.gateway.shed, blueprint.gateway.rate_limited by scope,
// blueprint.gateway.order_key_waits, and, with Redis,
// blueprint.gateway.rate_limit_fallbacks by scope.
func New(tokens *auth.AccessTokens, up Upstreams, limits Limits, logger *slog.Logger,
	meters metric.MeterProvider, tracers trace.TracerProvider, now func() time.Time,
) (*Gateway, error) {
	const scope = "github.com/ds-blueprint/blueprint/internal/gateway"
	m := meters.Meter(scope)
	g := &Gateway{tokens: tokens, upstreams: up, logger: logger, now: now, maxInFlight: limits.MaxInFlight,
		orderTimeout: limits.OrderTimeout}
	var err error
	if g.keyWaits, err = m.Int64Counter("blueprint.gateway.order_key_waits",
		metric.WithDescription("Waits of a POST /orders for its Idempotency-Key's lock, held by another request, to end before calling orders again.")); err != nil {
		return nil, err
	}
	if g.shedCount, err = m.Int64Counter("blueprint.gateway.shed",
		metric.WithDescription("Requests refused with 503 because the gateway was serving as many as it may at once.")); err != nil {
		return nil, err
	}
	inFlight, err := m.Int64ObservableGauge("blueprint.gateway.in_flight",
		metric.WithDescription("Requests the gateway is serving."))
	if err != nil {
		return nil, err
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(inFlight, g.inFlight.Load())
		return nil
	}, inFlight); err != nil {
		return nil, err
	}
	if g.rateLimited, err = m.Int64Counter("blueprint.gateway.rate_limited",
		metric.WithDescription("Requests refused with 429, by the limit that refused them (scope: ip_in_flight, ip, user, register, register_global, login, login_failures, login_account).")); err != nil {
		return nil, err
	}

	// newLimiter keeps a policy's buckets in Redis when there is one, else here.
	newLimiter := func(p policy) limiter { return newKeyedLimiter(p, now) }
	var store *redisStore
	if limits.Redis != nil {
		if store, err = newRedisStore(limits.Redis, limits.RedisPrefix, logger, tracers.Tracer(scope), m, now); err != nil {
			return nil, err
		}
		newLimiter = func(p policy) limiter { return newRedisLimiter(store, p) }
	}
	add := func(p policy) *rateLimit { return newRateLimit(p, newLimiter(p)) }
	if limits.MaxInFlightPerIP > 0 {
		g.inFlightByIP = newClientsInFlight(limits.MaxInFlightPerIP)
	}
	if limits.PerSecond > 0 {
		if limits.Burst < 1 {
			return nil, fmt.Errorf("rate limit burst %d: must be at least 1", limits.Burst)
		}
		g.perClient = add(perSecond(scopeIP, limits.PerSecond, limits.Burst))
		g.perUser = add(perSecond(scopeUser, limits.PerSecond, limits.Burst))
	}
	if limits.RegisterPerHour > 0 {
		g.registerPerIP = add(policy{name: scopeRegister, quota: limits.RegisterPerHour, window: time.Hour})
	}
	if limits.RegisterPerSecond > 0 {
		g.registerGlobal = add(policy{name: scopeRegisterGlobal, quota: registerBurst * limits.RegisterPerSecond, window: registerBurst * time.Second})
	}
	if limits.LoginPerMinute > 0 {
		g.loginPerIP = add(policy{name: scopeLogin, quota: limits.LoginPerMinute, window: time.Minute})
	}
	if limits.LoginFailures > 0 {
		g.loginFailures = add(policy{name: scopeLoginFailures, quota: limits.LoginFailures, window: loginFailureWindow})
	}
	if limits.LoginAccountFailures > 0 {
		// Both refill over the same 15 minutes: one address, within its
		// own limit, can then never empty the account's, and lock it.
		if limits.LoginFailures > 0 && limits.LoginAccountFailures <= limits.LoginFailures {
			return nil, fmt.Errorf("login failures per account %d: must be more than per address, %d, or one address could lock the account",
				limits.LoginAccountFailures, limits.LoginFailures)
		}
		g.accountFailures = add(policy{name: scopeLoginAccount, quota: limits.LoginAccountFailures, window: loginFailureWindow})
		g.accountLocks = newLocalLockouts(accountLockout, now)
		if store != nil {
			g.accountLocks = newRedisLockouts(store, accountLockout)
		}
	}
	return g, nil
}

// Handler returns the public API. A client's requests in flight are
// counted first, so one over its share never takes a slot of the
// gateway's; then shedding, so an overloaded gateway refuses a request
// before spending anything on it, Redis included.
func (g *Gateway) Handler() http.Handler {
	rt := httpx.NewRouter()
	g.addRoutes(rt)
	return g.limitInFlightPerIP(g.shedLoad(g.limitClients(rt)))
}

// Routes returns the route patterns of the public API, for what acts per
// route from outside (fault injection rules).
func (g *Gateway) Routes() []string {
	rt := httpx.NewRouter()
	g.addRoutes(rt)
	return rt.Routes()
}

type userKey struct{}

// requireUser lets a request through only with a valid access token and the
// user within their rate limit, and puts the user id in its context.
func (g *Gateway) requireUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userID, err := g.authenticate(r)
		if err == nil && g.perUser != nil {
			err = g.take(w, r, g.perUser, userID, "too many requests for this user")
		}
		if err != nil {
			httpx.WriteError(w, r, g.logger, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, userID)))
	})
}

func (g *Gateway) authenticate(r *http.Request) (string, error) {
	token, err := auth.BearerToken(r)
	if err != nil {
		return "", err
	}
	return g.tokens.Verify(token)
}

func userFrom(ctx context.Context) string {
	id, _ := ctx.Value(userKey{}).(string)
	return id
}

// relay answers the client with an upstream's response: status, body,
// Content-Type and the named headers. Success and client errors pass through; the upstream's own failures and any refusal of the
// gateway's credentials become the gateway's problem.
//
// A 503 with Retry-After passes through too, Retry-After included: the
// service is alive and shedding (users refusing logins it could not check
// before the deadline), and when to come back is its answer to give.
func (g *Gateway) relay(w http.ResponseWriter, r *http.Request, service string, resp *upstream.Response, headers ...string) error {
	switch {
	case resp.Status == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		headers = append(headers, "Retry-After") // and on to pass the answer through
	case resp.Status == http.StatusUnauthorized || resp.Status == http.StatusForbidden:
		return apperr.New(apperr.BadGateway, "upstream_error",
			service+" refused the gateway's credentials (status "+strconv.Itoa(resp.Status)+")")
	case resp.Status == http.StatusServiceUnavailable:
		return &apperr.Error{Kind: apperr.Unavailable, Code: "upstream_unavailable",
			Detail: service + " is unavailable", RetryAfter: 1}
	case resp.Status == http.StatusGatewayTimeout:
		return apperr.New(apperr.Timeout, "upstream_timeout", service+" did not answer in time")
	case resp.Status >= 500:
		return apperr.New(apperr.BadGateway, "upstream_error",
			service+" failed (status "+strconv.Itoa(resp.Status)+")")
	}
	for _, h := range append([]string{"Content-Type"}, headers...) {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
	return nil
}

package gateway

import (
	"context"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// Name is the service's name: its identity as a caller.
const Name = "gateway"

// RateLimits configures the gateway's limits. Zero values switch a limit off.
type RateLimits struct {
	// PerSecond and Burst limit every client IP and every user.
	PerSecond float64
	Burst     int
	// LoginPerMinute limits login attempts per client IP.
	LoginPerMinute int
	// LoginFailures limits failed logins per email per 15 minutes.
	LoginFailures int
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

	perClient, perUser *keyedLimiter // nil when off
	loginPerIP         *keyedLimiter
	loginFailures      *keyedLimiter
}

// loginFailureWindow is the period over which login failures are counted.
const loginFailureWindow = 15 * time.Minute

// New returns the gateway.
func New(tokens *auth.AccessTokens, up Upstreams, limits RateLimits, logger *slog.Logger, now func() time.Time) *Gateway {
	g := &Gateway{tokens: tokens, upstreams: up, logger: logger}
	if limits.PerSecond > 0 {
		g.perClient = newKeyedLimiter(rate.Limit(limits.PerSecond), limits.Burst, now)
		g.perUser = newKeyedLimiter(rate.Limit(limits.PerSecond), limits.Burst, now)
	}
	if limits.LoginPerMinute > 0 {
		g.loginPerIP = newKeyedLimiter(rate.Limit(float64(limits.LoginPerMinute)/60), limits.LoginPerMinute, now)
	}
	if limits.LoginFailures > 0 {
		g.loginFailures = newKeyedLimiter(rate.Limit(float64(limits.LoginFailures)/loginFailureWindow.Seconds()), limits.LoginFailures, now)
	}
	return g
}

// Handler returns the public API.
func (g *Gateway) Handler() http.Handler {
	rt := httpx.NewRouter()
	g.addRoutes(rt)
	return g.limitClients(rt)
}

// Routes returns the route patterns of the public API, for what acts per
// route from outside (fault injection rules).
func (g *Gateway) Routes() []string {
	rt := httpx.NewRouter()
	g.addRoutes(rt)
	return rt.Routes()
}

func rateLimited(wait time.Duration, detail string) error {
	return &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited", Detail: detail,
		RetryAfter: max(1, int(math.Ceil(wait.Seconds())))}
}

// clientIP is the peer address. Behind a proxy, configure the proxy to
// limit clients; the gateway does not trust X-Forwarded-For from anyone.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limitClients applies the per-IP limit to every request.
func (g *Gateway) limitClients(next http.Handler) http.Handler {
	if g.perClient == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := g.perClient.allow(clientIP(r)); !ok {
			httpx.WriteError(w, r, g.logger, rateLimited(wait, "too many requests from this address"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

type userKey struct{}

// requireUser lets a request through only with a valid access token and the
// user within their rate limit, and puts the user id in its context.
func (g *Gateway) requireUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userID, err := g.authenticate(r)
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
	userID, err := g.tokens.Verify(token)
	if err != nil {
		return "", err
	}
	if g.perUser != nil {
		if ok, wait := g.perUser.allow(userID); !ok {
			return "", rateLimited(wait, "too many requests for this user")
		}
	}
	return userID, nil
}

func userFrom(ctx context.Context) string {
	id, _ := ctx.Value(userKey{}).(string)
	return id
}

// relay answers the client with an upstream's response: status, body,
// Content-Type and the named headers. Success and client errors pass through; the upstream's own failures and any refusal of the
// gateway's credentials become the gateway's problem.
func (g *Gateway) relay(w http.ResponseWriter, r *http.Request, service string, resp *upstream.Response, headers ...string) error {
	switch {
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

package gateway

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/time/rate"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// policy is a token bucket's shape: quota tokens when full, refilled evenly
// over window, so a client may burst quota requests and then keep up
// quota/window per second. Its name keys the buckets, names the policy in
// the RateLimit headers and is the scope attribute of the metrics.
type policy struct {
	name   string
	quota  int
	window time.Duration
}

// perSecond is the policy of rps requests per second with bursts of burst.
func perSecond(name string, rps float64, burst int) policy {
	return policy{name: name, quota: burst, window: time.Duration(float64(burst) / rps * float64(time.Second))}
}

// interval is the time one token takes to come back.
func (p policy) interval() time.Duration { return p.window / time.Duration(p.quota) }

// decision is a bucket's answer to one request.
type decision struct {
	allowed bool
	// tokens are what the bucket holds after the request: whole ones are
	// requests the client may still make, the fraction is a token refilling.
	tokens float64
}

// remaining is the whole tokens left.
func (p policy) remaining(d decision) int { return max(0, int(math.Floor(d.tokens))) }

// untilNext is how long until the bucket holds a whole token again.
func (p policy) untilNext(d decision) time.Duration {
	if d.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - d.tokens) * float64(p.interval()))
}

// untilFull is how long until the bucket is full again.
func (p policy) untilFull(d decision) time.Duration {
	return time.Duration(max(0, float64(p.quota)-d.tokens) * float64(p.interval()))
}

// limiter keeps a token bucket per key (a client IP, a user id, a hashed
// email) under one policy. keyedLimiter keeps them in this process's memory;
// redisLimiter keeps them in Redis, shared by every gateway replica, and
// falls back to a keyedLimiter of its own while Redis fails. Neither
// returns an error: a rate limit never fails a request.
type limiter interface {
	// allow takes a token from key's bucket if it holds one.
	allow(ctx context.Context, key string) decision
	// peek reports key's bucket without taking a token; allowed means it
	// holds at least one.
	peek(ctx context.Context, key string) decision
}

// rateLimit is a policy and the buckets that enforce it.
type rateLimit struct {
	policy
	limiter
	// scope is the policy's name as the metric attribute, made once.
	scope metric.MeasurementOption
}

func newRateLimit(p policy, l limiter) *rateLimit {
	return &rateLimit{policy: p, limiter: l, scope: scopeOf(p.name)}
}

// scopeOf is the scope attribute of a limit's metrics.
func scopeOf(name string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String("scope", name)))
}

// The response headers of draft-ietf-httpapi-ratelimit-headers (the
// structured-field form of drafts 08 and later). Each limit a request passed
// through adds one item to each, named after its policy:
//
//	RateLimit-Policy: "ip";q=200;w=2, "user";q=200;w=2
//	RateLimit: "ip";r=187;t=1, "user";r=199;t=1
//
// q is the bucket's size and w the seconds it takes to refill from empty;
// r is the whole requests left and t the seconds until the bucket is full
// again, or, when the request was refused, until the next request may pass,
// the same point in time as Retry-After.
const (
	headerRateLimitPolicy = "RateLimit-Policy"
	headerRateLimit       = "RateLimit"
)

// setHeaders adds the policy's items to the RateLimit headers of h. The
// items of several policies share one line, a structured-field list.
func (p policy) setHeaders(h http.Header, d decision) {
	reset := p.untilFull(d)
	if !d.allowed {
		reset = p.untilNext(d)
	}
	appendItem(h, headerRateLimitPolicy, strconv.Quote(p.name)+";q="+strconv.Itoa(p.quota)+";w="+strconv.Itoa(ceilSeconds(p.window)))
	appendItem(h, headerRateLimit, strconv.Quote(p.name)+";r="+strconv.Itoa(p.remaining(d))+";t="+strconv.Itoa(ceilSeconds(reset)))
}

func appendItem(h http.Header, name, item string) {
	if v := h.Get(name); v != "" {
		item = v + ", " + item
	}
	h.Set(name, item)
}

// ceilSeconds rounds d up to whole seconds, as delay-seconds are.
func ceilSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// take draws a token for key from the limit and reports the bucket in the
// response headers. With none left it returns the refusal to answer.
func (g *Gateway) take(w http.ResponseWriter, r *http.Request, l *rateLimit, key, detail string) error {
	d := l.allow(r.Context(), key)
	l.setHeaders(w.Header(), d)
	return g.refusal(r.Context(), l, d, detail)
}

// takeUnshown is take for a limit that is not the client's to see, such as
// one every client shares: the RateLimit headers say nothing of it.
func (g *Gateway) takeUnshown(ctx context.Context, l *rateLimit, key, detail string) error {
	return g.refusal(ctx, l, l.allow(ctx, key), detail)
}

// refusal is nil when d allowed the request; otherwise it counts the
// refusal and returns the 429 to answer, whose Retry-After is when the next
// token comes.
func (g *Gateway) refusal(ctx context.Context, l *rateLimit, d decision, detail string) error {
	if d.allowed {
		return nil
	}
	g.rateLimited.Add(ctx, 1, l.scope)
	return rateLimited(l.untilNext(d), detail)
}

func rateLimited(wait time.Duration, detail string) error {
	return &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited", Detail: detail,
		RetryAfter: max(1, ceilSeconds(wait))}
}

// clientKey is the client as the per-IP limits count it: the TCP peer's
// address, and an IPv6 peer by its /64, because one subscriber is given a
// whole /64 and could otherwise take a fresh bucket per request. Behind a
// proxy, configure the proxy to limit clients: the gateway does not trust
// X-Forwarded-For from anyone.
func clientKey(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	addr := ap.Addr().Unmap()
	if addr.Is6() {
		prefix, _ := addr.Prefix(64) // cannot fail for an IPv6 address
		return prefix.String()
	}
	return addr.String()
}

// limitClients applies the per-IP limit to every request.
func (g *Gateway) limitClients(next http.Handler) http.Handler {
	if g.perClient == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.take(w, r, g.perClient, clientKey(r), "too many requests from this address"); err != nil {
			httpx.WriteError(w, r, g.logger, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// keyedLimiter keeps a token bucket per key in memory. Buckets idle long
// enough to be full again are dropped, so memory stays bounded by the keys
// active in one refill period.
type keyedLimiter struct {
	policy policy
	now    func() time.Time

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

func newKeyedLimiter(p policy, now func() time.Time) *keyedLimiter {
	return &keyedLimiter{policy: p, now: now, buckets: map[string]*rate.Limiter{}, lastSweep: now()}
}

func (l *keyedLimiter) allow(_ context.Context, key string) decision {
	now := l.now()
	b := l.bucket(key, now)
	ok := b.AllowN(now, 1)
	return decision{allowed: ok, tokens: b.TokensAt(now)}
}

func (l *keyedLimiter) peek(_ context.Context, key string) decision {
	now := l.now()
	tokens := l.bucket(key, now).TokensAt(now)
	return decision{allowed: tokens >= 1, tokens: tokens}
}

func (l *keyedLimiter) bucket(key string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = rate.NewLimiter(rate.Limit(float64(l.policy.quota)/l.policy.window.Seconds()), l.policy.quota)
		l.buckets[key] = b
	}
	return b
}

// sweep drops full buckets once per refill period; a full bucket is the
// same as no bucket.
func (l *keyedLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.policy.window {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.policy.quota) {
			delete(l.buckets, k)
		}
	}
}

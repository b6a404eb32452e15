package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// slowRate refills a bucket of 3 in an hour (a token every 20 minutes), so
// no token comes back while a test runs and Redis, on its own clock, gives
// the same answers as memory on a fake one.
const slowRate, slowBurst = 1.0 / 1200, 3

// limitBackend adds where the buckets live to a gateway's limits.
type limitBackend struct {
	name string
	with func(t *testing.T, l Limits) Limits
}

func limitBackends() []limitBackend {
	return []limitBackend{
		{"memory", func(_ *testing.T, l Limits) Limits { return l }},
		{"redis", func(t *testing.T, l Limits) Limits {
			l.Redis, l.RedisPrefix = newTestRedis(t)
			return l
		}},
	}
}

// items parses a RateLimit or RateLimit-Policy line into its policies'
// parameters: `"ip";r=2;t=1200, "user";r=0;t=9` → ip: {r: 2, t: 1200}, ….
func items(t *testing.T, line string) map[string]map[string]int {
	t.Helper()
	out := map[string]map[string]int{}
	for item := range strings.SplitSeq(line, ", ") {
		parts := strings.Split(item, ";")
		name, err := strconv.Unquote(parts[0])
		if err != nil {
			t.Fatalf("item %q of %q: policy name is not a string", item, line)
		}
		params := map[string]int{}
		for _, p := range parts[1:] {
			k, v, _ := strings.Cut(p, "=")
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("item %q of %q: %s is not an integer", item, line, p)
			}
			params[k] = n
		}
		out[name] = params
	}
	return out
}

// checkRefused checks a 429 from the named policy: problem+json, a
// Retry-After, and the policy's RateLimit item with nothing left and the
// same reset as Retry-After.
func checkRefused(t *testing.T, rec *httptest.ResponseRecorder, policy string) {
	t.Helper()
	must(t, rec, http.StatusTooManyRequests)
	if code := problemCode(rec); code != "rate_limited" {
		t.Errorf("problem code = %q, want rate_limited", code)
	}
	retry, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || retry < 1 || retry > 1200 {
		t.Errorf("Retry-After = %q, want 1 to 1200 seconds", rec.Header().Get("Retry-After"))
	}
	it := items(t, rec.Header().Get(headerRateLimit))[policy]
	if it == nil || it["r"] != 0 || it["t"] != retry {
		t.Errorf("RateLimit = %q, want %q with r=0 and t=%d (Retry-After)", rec.Header().Get(headerRateLimit), policy, retry)
	}
}

func TestClientLimit(t *testing.T) {
	t.Parallel()
	for _, b := range limitBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			tg := newTestGateway(t, b.with(t, Limits{PerSecond: slowRate, Burst: slowBurst}), time.Now)
			for i := range slowBurst {
				rec := must(t, tg.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), http.StatusOK)
				if got, want := rec.Header().Get(headerRateLimitPolicy), `"ip";q=3;w=3600`; got != want {
					t.Errorf("RateLimit-Policy = %q, want %q", got, want)
				}
				// i+1 tokens taken, one back every 1200 s: full again after
				// at most (i+1)·1200 s, a little less as time passes.
				it := items(t, rec.Header().Get(headerRateLimit))["ip"]
				if it["r"] != slowBurst-1-i || it["t"] <= i*1200 || it["t"] > (i+1)*1200 {
					t.Errorf("request %d: RateLimit = %q, want r=%d, t in (%d, %d]", i+1, rec.Header().Get(headerRateLimit), slowBurst-1-i, i*1200, (i+1)*1200)
				}
			}
			checkRefused(t, tg.request("GET", "/.well-known/jwks.json", "203.0.113.7:6000", "", ""), "ip")
			// Every route counts, unknown ones too.
			checkRefused(t, tg.request("GET", "/nowhere", "203.0.113.7:6001", "", ""), "ip")
			must(t, tg.request("GET", "/.well-known/jwks.json", "203.0.113.8:5000", "", ""), http.StatusOK)

			// One IPv6 subscriber holds a /64: its addresses share a bucket.
			for range slowBurst {
				must(t, tg.request("GET", "/.well-known/jwks.json", "[2001:db8:0:1::1]:5000", "", ""), http.StatusOK)
			}
			checkRefused(t, tg.request("GET", "/.well-known/jwks.json", "[2001:db8:0:1::2]:5000", "", ""), "ip")
			must(t, tg.request("GET", "/.well-known/jwks.json", "[2001:db8:0:2::1]:5000", "", ""), http.StatusOK)

			if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["ip"] != 3 || len(got) != 1 {
				t.Errorf("blueprint.gateway.rate_limited = %v, want ip: 3", got)
			}
		})
	}
}

func TestUserLimit(t *testing.T) {
	t.Parallel()
	for _, b := range limitBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			tg := newTestGateway(t, b.with(t, Limits{PerSecond: slowRate, Burst: slowBurst}), time.Now)
			token, _, err := tg.tokens.Issue(testUserID)
			if err != nil {
				t.Fatal(err)
			}
			// Three requests the user already made, from other addresses: a
			// request that passes would go on to the users service.
			for range slowBurst {
				tg.perUser.allow(t.Context(), testUserID)
			}
			rec := tg.request("GET", "/users/me", "203.0.113.7:5000", token, "")
			checkRefused(t, rec, "user")
			if got, want := rec.Header().Get(headerRateLimitPolicy), `"ip";q=3;w=3600, "user";q=3;w=3600`; got != want {
				t.Errorf("RateLimit-Policy = %q, want %q", got, want)
			}
			if ip := items(t, rec.Header().Get(headerRateLimit))["ip"]; ip["r"] != 2 {
				t.Errorf("RateLimit = %q, want the address's own item with r=2", rec.Header().Get(headerRateLimit))
			}
			// Without a valid token there is no user to count.
			rec = must(t, tg.request("GET", "/users/me", "203.0.113.7:5000", "", ""), http.StatusUnauthorized)
			if it := items(t, rec.Header().Get(headerRateLimit)); it["user"] != nil || it["ip"]["r"] != 1 {
				t.Errorf("RateLimit of a 401 = %q, want the address's item alone", rec.Header().Get(headerRateLimit))
			}
			if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["user"] != 1 || got["ip"] != 0 {
				t.Errorf("blueprint.gateway.rate_limited = %v, want user: 1", got)
			}
		})
	}
}

func TestLoginLimits(t *testing.T) {
	t.Parallel()
	for _, b := range limitBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			tg := newTestGateway(t, b.with(t, Limits{LoginPerMinute: 2, LoginFailures: 2}), time.Now)
			// What two logins from this address, and two failures for this
			// account from another, would have left; a login that passes goes
			// on to users.
			for range 2 {
				tg.loginPerIP.allow(t.Context(), "203.0.113.7")
				tg.loginFailures.allow(t.Context(), failureKey("ada@example.com")+":203.0.113.8")
			}
			rec := tg.request("POST", "/auth/login", "203.0.113.7:5000", "", `{"email":"x@example.com","password":"password1"}`)
			checkRefused(t, rec, "login")
			if got, want := rec.Header().Get(headerRateLimitPolicy), `"login";q=2;w=60`; got != want {
				t.Errorf("RateLimit-Policy = %q, want %q", got, want)
			}

			// The failures refuse every login to the account from their
			// address, in any case; the headers say nothing about them.
			rec = must(t, tg.request("POST", "/auth/login", "203.0.113.8:5000", "", `{"email":"Ada@Example.com","password":"right-password"}`),
				http.StatusTooManyRequests)
			if code, retry := problemCode(rec), rec.Header().Get("Retry-After"); code != "rate_limited" || retry == "" {
				t.Errorf("login for a locked account = %s with Retry-After %q, want rate_limited with one", code, retry)
			}
			if got := rec.Header().Get(headerRateLimit); got != `"login";r=1;t=30` {
				t.Errorf("RateLimit = %q, want the address's login item alone", got)
			}
			if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["login"] != 1 || got["login_failures"] != 1 {
				t.Errorf("blueprint.gateway.rate_limited = %v, want login: 1, login_failures: 1", got)
			}
		})
	}
}

// TestReplicasShareRedisLimits: two gateways on one Redis with the same key
// prefix enforce one limit between them; in memory, each counts alone.
func TestReplicasShareRedisLimits(t *testing.T) {
	t.Parallel()
	limits := Limits{PerSecond: slowRate, Burst: slowBurst}
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		rdb, prefix := newTestRedis(t)
		shared := limits
		shared.Redis, shared.RedisPrefix = rdb, prefix
		// Each replica its own client, as separate processes have.
		other := shared
		other.Redis = redis.NewClient(rdb.Options())
		t.Cleanup(func() { other.Redis.Close() })
		a, b := newTestGateway(t, shared, time.Now), newTestGateway(t, other, time.Now)

		for i, g := range []*testGateway{a, b, a} {
			rec := must(t, g.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), http.StatusOK)
			if it := items(t, rec.Header().Get(headerRateLimit))["ip"]; it["r"] != slowBurst-1-i {
				t.Errorf("request %d: RateLimit = %q, want r=%d counted across both replicas", i+1, rec.Header().Get(headerRateLimit), slowBurst-1-i)
			}
		}
		checkRefused(t, b.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), "ip")
		checkRefused(t, a.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), "ip")

		// Another prefix is another deployment: buckets of its own.
		elsewhere := shared
		elsewhere.RedisPrefix = prefix + "elsewhere:"
		must(t, newTestGateway(t, elsewhere, time.Now).request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), http.StatusOK)
	})
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		a, b := newTestGateway(t, limits, time.Now), newTestGateway(t, limits, time.Now)
		for range slowBurst {
			must(t, a.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), http.StatusOK)
		}
		must(t, b.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), http.StatusOK)
	})
}

// TestRedisDownFallsBackToLocalLimits: with Redis away, requests are
// served and still limited, by this replica's own buckets; one warning
// says so, and the fallbacks are counted.
func TestRedisDownFallsBackToLocalLimits(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	tg := newTestGateway(t, Limits{PerSecond: slowRate, Burst: slowBurst, Redis: closedRedis(t), RedisPrefix: "down:"}, clock.now)
	for i := range slowBurst {
		rec := must(t, tg.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), http.StatusOK)
		if it := items(t, rec.Header().Get(headerRateLimit))["ip"]; it["r"] != slowBurst-1-i {
			t.Errorf("request %d: RateLimit = %q, want r=%d from the local bucket", i+1, rec.Header().Get(headerRateLimit), slowBurst-1-i)
		}
	}
	checkRefused(t, tg.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), "ip")
	clock.t = clock.t.Add(storeRetry) // Redis is tried again, and fails again
	checkRefused(t, tg.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), "ip")

	if n := len(tg.logs.Records(t, "rate limit store unreachable; limiting with this replica's own buckets")); n != 1 {
		t.Errorf("warnings = %d, want 1 for the whole outage", n)
	}
	if got := tg.counter(t, "blueprint.gateway.rate_limit_fallbacks"); got["ip"] != slowBurst+2 {
		t.Errorf("blueprint.gateway.rate_limit_fallbacks = %v, want ip: %d", got, slowBurst+2)
	}
}

// TestRedisComesBack: after an outage, the gateway waits storeRetry, then
// uses the shared buckets again and says so.
func TestRedisComesBack(t *testing.T) {
	t.Parallel()
	rdb, prefix := newTestRedis(t)
	// The network between gateway and Redis, cut at first.
	var down atomic.Bool
	down.Store(true)
	opts := rdb.Options()
	addr := opts.Addr
	opts.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
		if down.Load() {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errNetworkDown}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	flaky := redis.NewClient(opts)
	t.Cleanup(func() { flaky.Close() })
	clock := newFakeClock()
	tg := newTestGateway(t, Limits{PerSecond: slowRate, Burst: slowBurst, Redis: flaky, RedisPrefix: prefix}, clock.now)
	get := func() int {
		rec := must(t, tg.request("GET", "/.well-known/jwks.json", "203.0.113.7:5000", "", ""), http.StatusOK)
		return items(t, rec.Header().Get(headerRateLimit))["ip"]["r"]
	}

	get()
	get()
	down.Store(false)
	if r := get(); r != 0 {
		t.Errorf("remaining before storeRetry passed = %d, want 0 from the local bucket", r)
	}
	clock.t = clock.t.Add(storeRetry)
	if r := get(); r != slowBurst-1 {
		t.Errorf("remaining once Redis is back = %d, want %d from the shared bucket", r, slowBurst-1)
	}
	if got := tg.counter(t, "blueprint.gateway.rate_limit_fallbacks"); got["ip"] != 3 {
		t.Errorf("blueprint.gateway.rate_limit_fallbacks = %v, want ip: 3", got)
	}
	if n := len(tg.logs.Records(t, "rate limit store reachable again")); n != 1 {
		t.Errorf("recovery lines = %d, want 1", n)
	}
}

var errNetworkDown = errors.New("network cut by the test")

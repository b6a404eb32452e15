package gateway

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ds-blueprint/blueprint/internal/gateway/gatewaytest"
)

// fakeClock is the injected clock of the limiter tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

// backend makes the limiters of one policy; every limiter test runs against
// each backend.
type backend struct {
	name string
	new  func(t *testing.T, p policy) limiter
}

func backends() []backend {
	return []backend{
		{"memory", func(t *testing.T, p policy) limiter { return newKeyedLimiter(p, newFakeClock().now) }},
		{"redis", func(t *testing.T, p policy) limiter {
			rdb, prefix := newTestRedis(t)
			return newRedisLimiter(newTestStore(t, rdb, prefix, time.Now), p)
		}},
	}
}

// newTestRedis returns a client of the tests' Redis and a key prefix of the
// test's own, or skips the test without one.
func newTestRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	url := gatewaytest.RedisURL(t)
	opts, err := RedisOptions(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb, gatewaytest.KeyPrefix(t, url)
}

// hourly refills one token every 20 minutes: none comes back while a test
// runs, whatever the clock, so Redis (on its own clock) is as exact as a
// limiter on a fake one.
var hourly = policy{name: "test", quota: 3, window: time.Hour}

func TestLimiterContract(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			t.Run("burst then refuse", func(t *testing.T) {
				t.Parallel()
				l := b.new(t, hourly)
				for i := range hourly.quota {
					d := l.allow(t.Context(), "ip-a")
					if !d.allowed || hourly.remaining(d) != hourly.quota-1-i {
						t.Fatalf("allow #%d = %+v (remaining %d), want allowed with %d left", i+1, d, hourly.remaining(d), hourly.quota-1-i)
					}
				}
				d := l.allow(t.Context(), "ip-a")
				if wait := hourly.untilNext(d); d.allowed || hourly.remaining(d) != 0 || wait <= 0 || wait > 20*time.Minute {
					t.Fatalf("allow after the burst = %+v, next token in %v; want refused, none left, the next within 20m", d, wait)
				}
				if full := hourly.untilFull(d); full <= 40*time.Minute || full > time.Hour {
					t.Errorf("untilFull after the burst = %v, want between 40m and 1h", full)
				}
			})
			t.Run("keys are separate", func(t *testing.T) {
				t.Parallel()
				l := b.new(t, hourly)
				for range hourly.quota + 1 {
					l.allow(t.Context(), "ip-a")
				}
				if d := l.allow(t.Context(), "ip-b"); !d.allowed || hourly.remaining(d) != hourly.quota-1 {
					t.Errorf("allow for another key = %+v, want allowed from a bucket of its own", d)
				}
			})
			t.Run("peek does not take", func(t *testing.T) {
				t.Parallel()
				l := b.new(t, hourly)
				for range 10 {
					if d := l.peek(t.Context(), "ada"); !d.allowed || hourly.remaining(d) != hourly.quota {
						t.Fatalf("peek of a fresh bucket = %+v, want allowed and full", d)
					}
				}
				for range hourly.quota {
					l.allow(t.Context(), "ada")
				}
				d := l.peek(t.Context(), "ada")
				if wait := hourly.untilNext(d); d.allowed || wait <= 0 || wait > 20*time.Minute {
					t.Errorf("peek of an empty bucket = %+v, next token in %v; want refused, the next within 20m", d, wait)
				}
			})
		})
	}
}

func TestKeyedLimiterRefills(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	p := perSecond("ip", 2, 3) // 2/s, burst 3
	l := newKeyedLimiter(p, clock.now)
	for range 3 {
		l.allow(t.Context(), "ip-a")
	}
	d := l.allow(t.Context(), "ip-a")
	wait := p.untilNext(d)
	if d.allowed || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("allow after burst = %+v, wait %v; want refused and a wait of at most 500ms", d, wait)
	}
	clock.t = clock.t.Add(wait)
	if d := l.allow(t.Context(), "ip-a"); !d.allowed {
		t.Fatalf("allow after waiting %v = %+v, want allowed", wait, d)
	}
}

func TestKeyedLimiterForgetsIdleKeys(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := newKeyedLimiter(perSecond("ip", 10, 10), clock.now) // refills in 1 s
	for i := range 1000 {
		l.allow(t.Context(), fmt.Sprintf("ip-%d", i))
	}
	clock.t = clock.t.Add(2 * time.Second)
	l.allow(t.Context(), "fresh")
	if n := len(l.buckets); n != 1 {
		t.Errorf("buckets after every key went idle = %d, want 1 (memory bounded by active keys)", n)
	}
}

func TestPolicyHeaders(t *testing.T) {
	t.Parallel()
	p := perSecond("ip", 100, 200) // window 2 s, a token every 10 ms
	for _, tc := range []struct {
		name       string
		decisions  []decision
		wantPolicy string
		wantLimit  string
	}{
		{"full bucket", []decision{{allowed: true, tokens: 199}},
			`"ip";q=200;w=2`, `"ip";r=199;t=1`},
		{"last token taken", []decision{{allowed: true, tokens: 0.5}},
			`"ip";q=200;w=2`, `"ip";r=0;t=2`},
		{"refused: t is when the next token comes", []decision{{allowed: false, tokens: 0.5}},
			`"ip";q=200;w=2`, `"ip";r=0;t=1`},
		{"two policies share one line", []decision{{allowed: true, tokens: 10}, {allowed: true, tokens: 200}},
			`"ip";q=200;w=2, "ip";q=200;w=2`, `"ip";r=10;t=2, "ip";r=200;t=0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for _, d := range tc.decisions {
				p.setHeaders(h, d)
			}
			if got := h.Values(headerRateLimitPolicy); len(got) != 1 || got[0] != tc.wantPolicy {
				t.Errorf("RateLimit-Policy = %q, want [%s]", got, tc.wantPolicy)
			}
			if got := h.Values(headerRateLimit); len(got) != 1 || got[0] != tc.wantLimit {
				t.Errorf("RateLimit = %q, want [%s]", got, tc.wantLimit)
			}
		})
	}
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ remote, want string }{
		{"203.0.113.7:51234", "203.0.113.7"},
		{"[::ffff:203.0.113.7]:51234", "203.0.113.7"},
		{"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::9]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:443", "2001:db8:1:3::/64"},
		{"pipe", "pipe"},
	} {
		r := &http.Request{RemoteAddr: tc.remote}
		if got := clientKey(r); got != tc.want {
			t.Errorf("clientKey(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}

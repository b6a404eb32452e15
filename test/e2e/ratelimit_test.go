package e2e

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/gateway/gatewaytest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// limitEnv limits every client IP and every user to a burst of `burst`
// requests with a token back every 1000 s: none comes back while a test
// runs, so the counts below are exact.
func limitEnv(burst int, more ...string) map[string]string {
	env := map[string]string{"RATE_LIMIT_RPS": "0.001", "RATE_LIMIT_BURST": strconv.Itoa(burst)}
	for i := 0; i+1 < len(more); i += 2 {
		env[more[i]] = more[i+1]
	}
	return env
}

// clientFrom is a client whose connections come from ip, one of the
// loopback addresses (Linux routes all of 127.0.0.0/8 to lo), so one test
// can be several clients to the gateway's per-IP limits.
func clientFrom(t *testing.T, base, ip string) *client {
	t.Helper()
	c := newClient(t, base)
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c.http.Transport = tr
	return c
}

// requireLoopbackAddresses skips the test where only 127.0.0.1 is
// loopback (macOS without aliases).
func requireLoopbackAddresses(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("clients from several loopback addresses are not possible here: %v", err)
	}
	ln.Close()
}

// rateLimitItem returns the r and t of a policy in a RateLimit header, and
// whether it is there.
func rateLimitItem(h http.Header, policy string) (r, reset int, ok bool) {
	for item := range strings.SplitSeq(h.Get("RateLimit"), ", ") {
		name, params, _ := strings.Cut(item, ";")
		if name != strconv.Quote(policy) {
			continue
		}
		_, err := fmt.Sscanf(params, "r=%d;t=%d", &r, &reset)
		return r, reset, err == nil
	}
	return 0, 0, false
}

// expectRemaining fails the test unless the response is a 200 whose
// RateLimit item of policy has r = want.
func (r response) expectRemaining(t *testing.T, policy string, want int) {
	t.Helper()
	r.expect(t, http.StatusOK)
	if got, _, ok := rateLimitItem(r.header, policy); !ok || got != want {
		t.Errorf("RateLimit = %q, want %q with r=%d", r.header.Get("RateLimit"), policy, want)
	}
}

// expectRefused fails the test unless the response is a 429 problem from
// policy, with a Retry-After equal to the item's reset.
func (r response) expectRefused(t *testing.T, policy string) {
	t.Helper()
	r.expect(t, http.StatusTooManyRequests)
	if p := r.problem(t); p.Type != "urn:blueprint:problem:rate_limited" {
		t.Errorf("problem type = %q, want rate_limited", p.Type)
	}
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	if remaining, reset, ok := rateLimitItem(r.header, policy); err != nil || !ok || remaining != 0 || reset != retry {
		t.Errorf("Retry-After = %q, RateLimit = %q; want %q with r=0 and t equal to Retry-After",
			r.header.Get("Retry-After"), r.header.Get("RateLimit"), policy)
	}
}

// checkLimits drives the per-IP and per-user limits (a burst of 5) through
// two gateways, a and b, which may be the same one: the counts only hold
// if both draw from the same buckets.
func checkLimits(t *testing.T, a, b string) {
	t.Run("per IP", func(t *testing.T) {
		for i, gw := range []string{a, a, a, b, b} {
			clientFrom(t, gw, "127.0.0.11").do("GET", "/.well-known/jwks.json", nil).expectRemaining(t, "ip", 4-i)
		}
		clientFrom(t, a, "127.0.0.11").do("GET", "/.well-known/jwks.json", nil).expectRefused(t, "ip")
		clientFrom(t, b, "127.0.0.11").do("GET", "/orders", nil).expectRefused(t, "ip")
		clientFrom(t, b, "127.0.0.12").do("GET", "/.well-known/jwks.json", nil).expectRemaining(t, "ip", 4)
	})
	t.Run("per user", func(t *testing.T) {
		setup := clientFrom(t, a, "127.0.0.13")
		setup.signUp(uniqueEmail("limited"), "limited-password")
		onA, onB := clientFrom(t, a, "127.0.0.14"), clientFrom(t, b, "127.0.0.15")
		onA.token, onB.token = setup.token, setup.token
		for i := range 3 {
			r := onA.do("GET", "/users/me", nil)
			r.expectRemaining(t, "user", 4-i)
			if got, want := r.header.Get("RateLimit-Policy"), `"ip";q=5;w=5000, "user";q=5;w=5000`; got != want {
				t.Errorf("RateLimit-Policy = %q, want %q", got, want)
			}
		}
		onB.do("GET", "/users/me", nil).expectRemaining(t, "user", 1)
		onB.do("GET", "/orders", nil).expectRemaining(t, "user", 0)
		r := onB.do("GET", "/notifications", nil)
		r.expectRefused(t, "user")
		if remaining, _, _ := rateLimitItem(r.header, "ip"); remaining != 2 {
			t.Errorf("RateLimit = %q, want the address's own item with r=2", r.header.Get("RateLimit"))
		}
		onA.do("GET", "/users/me", nil).expectRefused(t, "user")
		// Another user from the same addresses is not held back.
		other := clientFrom(t, b, "127.0.0.16")
		other.signUp(uniqueEmail("free"), "free-password")
		onB.token = other.token
		onB.do("GET", "/users/me", nil).expectRemaining(t, "user", 4)
	})
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	requireLoopbackAddresses(t)
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		sys := startInProcess(t, t.TempDir(), limitEnv(5))
		checkLimits(t, sys.url("gateway"), sys.url("gateway"))
		ops := sys.url("gateway_ops")
		if ip, user := harness.MetricSum(t, ops, "blueprint_gateway_rate_limited_total", `scope="ip"`),
			harness.MetricSum(t, ops, "blueprint_gateway_rate_limited_total", `scope="user"`); ip != 2 || user != 2 {
			t.Errorf("blueprint_gateway_rate_limited_total = ip %d, user %d; want 2 and 2", ip, user)
		}
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		url := gatewaytest.RedisURL(t)
		sys := startInProcess(t, t.TempDir(), limitEnv(5, "REDIS_URL", url, "REDIS_KEY_PREFIX", gatewaytest.KeyPrefix(t, url)))
		if len(sys.logs.records("rate limits shared through redis")) != 1 {
			t.Errorf("no start line saying the limits are in Redis; log:\n%s", sys.logs.text())
		}
		checkLimits(t, sys.url("gateway"), sys.url("gateway"))
		if n := harness.MetricSum(t, sys.url("gateway_ops"), "blueprint_gateway_rate_limit_fallbacks_total", "scope"); n != 0 {
			t.Errorf("blueprint_gateway_rate_limit_fallbacks_total = %d, want 0 with Redis up", n)
		}
	})
}

// TestRateLimitsSharedByTwoGateways runs the production shape of the limits:
// two gateway replicas in front of the same services, sharing one Redis.
// A client or a user spread over both gets the one limit, not one per
// replica.
func TestRateLimitsSharedByTwoGateways(t *testing.T) {
	t.Parallel()
	requireLoopbackAddresses(t)
	url := gatewaytest.RedisURL(t)
	keysDir, _ := keysOnDisk(t)
	env := limitEnv(5, "REDIS_URL", url, "REDIS_KEY_PREFIX", gatewaytest.KeyPrefix(t, url), "BLUEPRINT_KEYS_DIR", keysDir)
	sys := startInProcess(t, t.TempDir(), env)
	replicaEnv := map[string]string{}
	for k, v := range env {
		replicaEnv[k] = v
	}
	for _, s := range []string{"users", "orders", "notifications"} {
		replicaEnv[strings.ToUpper(s)+"_URL"] = sys.url(s)
	}
	replica := startInProcess(t, filepath.Join(t.TempDir(), "replica"), replicaEnv, "--target=gateway")

	checkLimits(t, sys.url("gateway"), replica.url("gateway"))
	refused := 0
	for _, p := range []*inProcess{sys, replica} {
		refused += harness.MetricSum(t, p.url("gateway_ops"), "blueprint_gateway_rate_limited_total", "scope")
	}
	if refused != 4 {
		t.Errorf("blueprint_gateway_rate_limited_total over both gateways = %d, want 4", refused)
	}
}

// TestRateLimitsWithRedisDown: a gateway whose Redis is not there starts,
// serves, and still limits, with its own buckets; it says so once.
func TestRateLimitsWithRedisDown(t *testing.T) {
	t.Parallel()
	requireLoopbackAddresses(t)
	sys := startInProcess(t, t.TempDir(), limitEnv(3, "REDIS_URL", fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t))))
	if len(sys.logs.records("rate limit store unreachable at start; limiting with this replica's own buckets until it answers")) != 1 {
		t.Errorf("no start line saying Redis does not answer; log:\n%s", sys.logs.text())
	}
	gw := sys.url("gateway")
	for i := range 3 {
		clientFrom(t, gw, "127.0.0.21").do("GET", "/.well-known/jwks.json", nil).expectRemaining(t, "ip", 2-i)
	}
	clientFrom(t, gw, "127.0.0.21").do("GET", "/.well-known/jwks.json", nil).expectRefused(t, "ip")
	if n := len(sys.logs.records("rate limit store unreachable; limiting with this replica's own buckets")); n != 1 {
		t.Errorf("warnings while Redis is down = %d, want 1", n)
	}
	if n := harness.MetricSum(t, sys.url("gateway_ops"), "blueprint_gateway_rate_limit_fallbacks_total", `scope="ip"`); n != 4 {
		t.Errorf("blueprint_gateway_rate_limit_fallbacks_total = %d, want 4", n)
	}
}

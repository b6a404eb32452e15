package gateway

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// login sends a login for ada@example.com with password from remote.
func (tg *testGateway) login(remote, password string) *httptest.ResponseRecorder {
	return tg.request("POST", "/auth/login", remote, "", `{"email":"ada@example.com","password":"`+password+`"}`)
}

// TestAttackerDoesNotLockOutTheOwner: one address guesses an account's
// password until it is refused, even with the right password; the owner,
// from another address, logs in all along.
func TestAttackerDoesNotLockOutTheOwner(t *testing.T) {
	t.Parallel()
	for _, b := range limitBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			const attacker, owner = "203.0.113.66:5000", "[2001:db8:0:7::1]:5000"
			tg := newTestGateway(t, b.with(t, Limits{LoginPerMinute: 100, LoginFailures: 3, LoginAccountFailures: 50}), time.Now)
			calls := tg.withFakeUsers(t)

			for range 3 {
				must(t, tg.login(attacker, "a-guess"), http.StatusUnauthorized)
			}
			for _, password := range []string{"another-guess", rightPassword} {
				rec := must(t, tg.login(attacker, password), http.StatusTooManyRequests)
				if code, retry := problemCode(rec), rec.Header().Get("Retry-After"); code != "rate_limited" || retry == "" {
					t.Errorf("attacker's login = %s with Retry-After %q, want rate_limited with one", code, retry)
				}
				if it := items(t, rec.Header().Get(headerRateLimit)); len(it) != 1 || it["login"] == nil {
					t.Errorf("RateLimit = %q, want the address's login item alone", rec.Header().Get(headerRateLimit))
				}
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("logins that reached users = %d, want the attacker's 3 failures only", n)
			}

			// The owner, from elsewhere, however the email is written.
			for _, email := range []string{"ada@example.com", "Ada@Example.com"} {
				rec := must(t, tg.request("POST", "/auth/login", owner, "", `{"email":"`+email+`","password":"`+rightPassword+`"}`), http.StatusOK)
				if rec.Header().Get("Cache-Control") != "no-store" {
					t.Errorf("owner's login answered without its token: %s", rec.Body)
				}
			}
			// And the owner's typo is one failure of its own address's.
			must(t, tg.login(owner, "a-typo"), http.StatusUnauthorized)
			must(t, tg.login(owner, rightPassword), http.StatusOK)

			if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["login_failures"] != 2 || len(got) != 1 {
				t.Errorf("blueprint.gateway.rate_limited = %v, want login_failures: 2", got)
			}
		})
	}
}

// TestAccountLockoutGrows: failures spread over many addresses, each within
// its own limit, past LoginAccountFailures, lock the account: for a second,
// then two, doubling with each further failure. Locked, every login to the
// account is refused, the owner's too, with the Retry-After of the lock;
// unlocked, the owner logs in.
func TestAccountLockoutGrows(t *testing.T) {
	t.Parallel()
	const quota = 4
	clock := newFakeClock()
	tg := newTestGateway(t, Limits{LoginFailures: 2, LoginAccountFailures: quota}, clock.now)
	tg.withFakeUsers(t)
	guesses := 0
	guess := func() {
		t.Helper()
		guesses++
		must(t, tg.login(fmt.Sprintf("203.0.113.%d:5000", guesses), "a-guess"), http.StatusUnauthorized)
	}
	const owner = "198.51.100.7:5000"
	ownerRefused := func(retryAfter int) {
		t.Helper()
		rec := must(t, tg.login(owner, rightPassword), http.StatusTooManyRequests)
		if code, retry := problemCode(rec), rec.Header().Get("Retry-After"); code != "rate_limited" || retry != strconv.Itoa(retryAfter) {
			t.Errorf("owner's login to a locked account = %s with Retry-After %q, want rate_limited with %d", code, retry, retryAfter)
		}
		if got := rec.Header().Get(headerRateLimit); got != "" {
			t.Errorf("RateLimit = %q, want nothing about the account", got)
		}
	}

	for range quota {
		guess()
	}
	must(t, tg.login(owner, rightPassword), http.StatusOK)

	guess() // one too many: a second
	ownerRefused(1)
	clock.t = clock.t.Add(time.Second)
	must(t, tg.login(owner, rightPassword), http.StatusOK)

	guess() // two seconds
	clock.t = clock.t.Add(time.Second)
	ownerRefused(1)
	clock.t = clock.t.Add(time.Second)
	must(t, tg.login(owner, rightPassword), http.StatusOK)

	guess() // four
	ownerRefused(4)

	if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["login_account"] != 3 || len(got) != 1 {
		t.Errorf("blueprint.gateway.rate_limited = %v, want login_account: 3", got)
	}
	if n := len(tg.logs.Records(t, "account locked after failed logins")); n != 3 {
		t.Errorf("account locked lines = %d, want one per lock, 3", n)
	}
}

func TestLockFor(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]time.Duration{
		1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		10: 512 * time.Second, 11: 15 * time.Minute, 1 << 20: 15 * time.Minute,
	} {
		if got := accountLockout.lockFor(n); got != want {
			t.Errorf("lockFor(%d) = %v, want %v", n, got, want)
		}
	}
}

// TestLockoutsContract runs one contract against the lockouts in memory, in
// Redis, and with a Redis that is not there (this replica's own).
func TestLockoutsContract(t *testing.T) {
	t.Parallel()
	// Locks of minutes: none ends while the test runs, so Redis, on its own
	// clock, gives the answers memory gives on a fake one.
	p := lockoutPolicy{name: "test", window: time.Hour, base: time.Minute, max: 4 * time.Minute}
	for _, b := range []struct {
		name string
		new  func(t *testing.T) lockouts
	}{
		{"memory", func(*testing.T) lockouts { return newLocalLockouts(p, newFakeClock().now) }},
		{"redis", func(t *testing.T) lockouts {
			rdb, prefix := newTestRedis(t)
			return newRedisLockouts(newTestStore(t, rdb, prefix, time.Now), p)
		}},
		{"redis away", func(t *testing.T) lockouts {
			return newRedisLockouts(newTestStore(t, closedRedis(t), "away:", time.Now), p)
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			l := b.new(t)
			ctx := t.Context()
			if d := l.lockedFor(ctx, "ada"); d != 0 {
				t.Fatalf("lockedFor of an account never locked = %v, want 0", d)
			}
			for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 4 * time.Minute} {
				if got := l.lock(ctx, "ada"); got != want {
					t.Fatalf("lock %d = %v, want %v", i+1, got, want)
				}
				if d := l.lockedFor(ctx, "ada"); d > want || d < want-10*time.Second {
					t.Fatalf("after lock %d: locked for %v, want %v (less the time the test took)", i+1, d, want)
				}
			}
			if d := l.lockedFor(ctx, "bob"); d != 0 {
				t.Errorf("lockedFor of another account = %v, want 0", d)
			}
		})
	}
}

// TestLocalLockoutsForget: locks end, and an account's count starts again,
// and it is forgotten, a window after its last lock.
func TestLocalLockoutsForget(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	p := lockoutPolicy{name: "test", window: time.Hour, base: time.Minute, max: time.Hour}
	l := newLocalLockouts(p, clock.now)
	for i := range 1000 {
		l.lock(t.Context(), fmt.Sprintf("account-%d", i))
	}
	l.lock(t.Context(), "ada")
	clock.t = clock.t.Add(time.Minute)
	if d := l.lockedFor(t.Context(), "ada"); d != 0 {
		t.Errorf("locked for %v after its minute, want 0", d)
	}
	clock.t = clock.t.Add(58 * time.Minute)
	if d := l.lock(t.Context(), "ada"); d != 2*time.Minute {
		t.Errorf("second lock within the window = %v, want 2m", d)
	}
	clock.t = clock.t.Add(time.Hour)
	if d := l.lock(t.Context(), "ada"); d != time.Minute {
		t.Errorf("lock a window after the last = %v, want 1m: the count starts again", d)
	}
	if n := len(l.accounts); n != 1 {
		t.Errorf("accounts remembered = %d, want 1 (memory bounded by the accounts locked now)", n)
	}
}

// TestPatientAttackerNeverLocksTheAccount: one address guesses as fast as
// its own limit lets it, for hours. Its failures never add up to the
// account's limit, which refills over the same 15 minutes faster than the
// address's does, so the owner is never locked out.
func TestPatientAttackerNeverLocksTheAccount(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	limits := Limits{LoginFailures: 5, LoginAccountFailures: 6}
	tg := newTestGateway(t, limits, clock.now)
	tg.withFakeUsers(t)
	failures := 0
	for range 8 * 20 { // eight hours, a token back every 3 minutes
		for tg.login("203.0.113.66:5000", "a-guess").Code == http.StatusUnauthorized {
			failures++
		}
		must(t, tg.login("198.51.100.7:5000", rightPassword), http.StatusOK)
		clock.t = clock.t.Add(loginFailureWindow / time.Duration(limits.LoginFailures))
	}
	if failures < 8*20 {
		t.Errorf("the attacker failed %d times, want at least one every 3 minutes", failures)
	}
}

// TestOneAddressMustNotReachTheAccountLimit: an account limit no higher than
// the per-address one would let one address lock the account.
func TestOneAddressMustNotReachTheAccountLimit(t *testing.T) {
	t.Parallel()
	_, err := New(nil, Upstreams{}, Limits{LoginFailures: 5, LoginAccountFailures: 5}, slog.New(slog.DiscardHandler),
		metricnoop.NewMeterProvider(), tracenoop.NewTracerProvider(), time.Now)
	if err == nil {
		t.Error("New with LoginAccountFailures = LoginFailures = nil, want an error")
	}
}

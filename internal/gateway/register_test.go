package gateway

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

const registration = `{"email":"new@example.com","password":"a-password","name":"New"}`

// TestRegisterLimitPerIP: a burst of registrations from one address, all
// at once. Exactly its quota reaches users; the rest are refused at once.
// Another address has a quota of its own.
func TestRegisterLimitPerIP(t *testing.T) {
	t.Parallel()
	for _, b := range limitBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			const quota, burst = 3, 20
			tg := newTestGateway(t, b.with(t, Limits{RegisterPerHour: quota}), time.Now)
			calls := tg.withFakeUsers(t)

			var wg sync.WaitGroup
			answers := make(chan *httptest.ResponseRecorder, burst)
			for range burst {
				wg.Go(func() { answers <- tg.request("POST", "/auth/register", "203.0.113.7:5000", "", registration) })
			}
			wg.Wait()
			close(answers)
			count := map[int]int{}
			for rec := range answers {
				if count[rec.Code]++; rec.Code == http.StatusTooManyRequests {
					checkRefused(t, rec, "register")
				}
			}
			if count[http.StatusCreated] != quota || count[http.StatusTooManyRequests] != burst-quota {
				t.Errorf("statuses of %d registrations at once = %v, want %d × 201 and the rest 429", burst, count, quota)
			}
			if n := calls.Load(); n != quota {
				t.Errorf("registrations that reached users = %d, want %d", n, quota)
			}

			rec := must(t, tg.request("POST", "/auth/register", "203.0.113.8:5000", "", registration), http.StatusCreated)
			if got, want := rec.Header().Get(headerRateLimitPolicy), `"register";q=3;w=3600`; got != want {
				t.Errorf("RateLimit-Policy = %q, want %q", got, want)
			}
			if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["register"] != burst-quota || len(got) != 1 {
				t.Errorf("blueprint.gateway.rate_limited = %v, want register: %d", got, burst-quota)
			}
		})
	}
}

// TestRegisterLimitGlobal: every address together may register
// RegisterPerSecond times a second, in bursts of registerBurst seconds'
// worth. The refusal says when to come back but, in the RateLimit headers,
// only the address's own limit.
func TestRegisterLimitGlobal(t *testing.T) {
	t.Parallel()
	for _, b := range limitBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			tg := newTestGateway(t, b.with(t, Limits{RegisterPerHour: 3, RegisterPerSecond: 1}), time.Now)
			calls := tg.withFakeUsers(t)

			for i := range registerBurst {
				must(t, tg.request("POST", "/auth/register", fmt.Sprintf("203.0.113.%d:5000", i+1), "", registration), http.StatusCreated)
			}
			// Within the second, from elsewhere.
			rec := must(t, tg.request("POST", "/auth/register", "198.51.100.7:5000", "", registration), http.StatusTooManyRequests)
			if code, retry := problemCode(rec), rec.Header().Get("Retry-After"); code != "rate_limited" || retry != "1" {
				t.Errorf("refusal = %s with Retry-After %q, want rate_limited with 1", code, retry)
			}
			if it := items(t, rec.Header().Get(headerRateLimit)); len(it) != 1 || it["register"]["r"] != 2 {
				t.Errorf("RateLimit = %q, want the address's register item alone, r=2", rec.Header().Get(headerRateLimit))
			}
			if n := calls.Load(); n != registerBurst {
				t.Errorf("registrations that reached users = %d, want %d", n, registerBurst)
			}
			if got := tg.counter(t, "blueprint.gateway.rate_limited"); got["register_global"] != 1 || len(got) != 1 {
				t.Errorf("blueprint.gateway.rate_limited = %v, want register_global: 1", got)
			}
		})
	}
}

// TestRegisterRelaysUsersRefusal: users refuses a registration it has no
// room to hash; the client gets that 429 with its Retry-After.
func TestRegisterRelaysUsersRefusal(t *testing.T) {
	t.Parallel()
	tg := newTestGateway(t, Limits{}, time.Now)
	tg.withUsers(t, httpx.Handle(slog.New(slog.DiscardHandler), func(http.ResponseWriter, *http.Request) error {
		return &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited", Detail: "too many registrations at the moment; try again shortly", RetryAfter: 1}
	}))
	rec := must(t, tg.request("POST", "/auth/register", "203.0.113.7:5000", "", registration), http.StatusTooManyRequests)
	if code, retry := problemCode(rec), rec.Header().Get("Retry-After"); code != "rate_limited" || retry != "1" {
		t.Errorf("refusal = %s with Retry-After %q, want rate_limited with 1", code, retry)
	}
}

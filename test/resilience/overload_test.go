//go:build resilience

package resilience

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// loginSample is one login's outcome in a flood.
type loginSample struct {
	status     int
	code       string // the problem's code, for an error
	retryAfter string
	took       time.Duration
}

// A flood of logins from 50 clients at once, each logging in again as soon
// as it has its answer, against one users replica, while other users read
// their profiles. Password checks are the users service's scarcest
// resource; the logins it cannot check before the gateway's deadline are
// refused at once, 503 with Retry-After, and none waits into a 504. A
// refusal is not a failure of the replica, so the gateway's circuit breaker
// for it stays closed and GET /users/me keeps succeeding.
//
// Everything runs on its defaults: the gateway gives each call 2 s
// (UPSTREAM_ATTEMPT_TIMEOUT), users lets a login wait and be checked for
// at most half of that and never more than a second, so 50 clients keep
// far more logins coming than it can check in time. The readers run a full
// breaker window (10 s) before the flood, so the breaker judges the flood
// against a window of successes, as in production.
func TestOverloadedLoginsAreShedNotTimedOut(t *testing.T) {
	const (
		deadline     = 2 * time.Second // the gateway's attempt, UPSTREAM_ATTEMPT_TIMEOUT's default
		warmUp       = 10 * time.Second
		floodFor     = 15 * time.Second
		loginClients = 50
		readers      = 4
		readRate     = 12.5 // per reader per second: 50 profile reads a second in all
		creds        = `{"email":"flood@example.com","password":"flood password"}`
	)
	c, client := start(t, localcluster.Config{})
	gw := client.Gateways[0]
	if status, body := client.Post(gw+"/auth/register", "", "", `{"email":"flood@example.com","password":"flood password","name":"Flood"}`); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	tokens := make([]string, readers)
	for i := range tokens {
		tokens[i] = client.SignUp(t, i)
	}

	stop := make(chan struct{})
	reads := make([][]sample, readers)
	var wg sync.WaitGroup
	for i, token := range tokens {
		wg.Go(func() { reads[i] = hammer(client, gw+"/users/me", token, readRate, 4, stop) })
	}
	time.Sleep(warmUp)
	floodStart := time.Now()
	logins := floodLogins(harness.NewClient(loginClients, gw), creds, loginClients, floodFor)
	floodEnd := time.Now()
	close(stop)
	wg.Wait()

	loginStatuses, shedCodes := map[int]int{}, map[string]int{}
	var servedTook, shedTook []time.Duration
	for _, l := range logins {
		loginStatuses[l.status]++
		switch l.status {
		case http.StatusOK:
			servedTook = append(servedTook, l.took)
		case http.StatusServiceUnavailable:
			shedTook = append(shedTook, l.took)
			shedCodes[l.code]++
			if l.retryAfter == "" {
				t.Errorf("a login refused with 503 %s carries no Retry-After", l.code)
			}
		}
	}
	if n := loginStatuses[http.StatusGatewayTimeout]; n > 0 {
		t.Errorf("%d of %d logins answered 504 (statuses %v); want those users cannot check in time refused with 503 before the deadline",
			n, len(logins), loginStatuses)
	}
	if loginStatuses[http.StatusOK] == 0 {
		t.Errorf("no login succeeded during the flood (statuses %v); want users to keep checking at its capacity", loginStatuses)
	}
	if p := p99(shedTook); p >= deadline {
		t.Errorf("p99 of the 503s = %s, want them well within the %s deadline", p, deadline)
	}

	var during []sample
	for _, r := range reads {
		for _, s := range r {
			if !s.at.Before(floodStart) && s.at.Before(floodEnd) {
				during = append(during, s)
			}
		}
	}
	if len(during) == 0 {
		t.Fatal("no GET /users/me during the flood")
	}
	ok := 0
	var readTook []time.Duration
	for _, s := range during {
		readTook = append(readTook, s.took)
		if s.status == http.StatusOK {
			ok++
		}
	}
	rate := float64(ok) / float64(len(during))
	if rate < 0.99 {
		t.Errorf("GET /users/me during the login flood: %.2f%% succeeded (%v), want at least 99%%", 100*rate, statuses(during))
	}

	opened := 0
	for _, rec := range logRecords(t, c.Dir(), "gateway-1", "circuit breaker opened", "") {
		if logTime(rec).After(floodStart) {
			opened++
		}
	}
	atUsers := map[any]int{}
	for _, rec := range logRecords(t, c.Dir(), "users-1", "request", "POST /users/authenticate") {
		atUsers[rec["status"]]++
	}
	users := c.Get("users-1").OpsURL
	t.Logf("login flood, %d clients for %s: %d logins, statuses %v (503 codes %v); 200 p99 %s, slowest %s; 503 p50 %s, p99 %s, slowest %s",
		loginClients, floodFor, len(logins), loginStatuses, shedCodes, p99(servedTook), slowest(servedTook),
		percentile(shedTook, 50), p99(shedTook), slowest(shedTook))
	t.Logf("users answered POST /users/authenticate %v (the readers' sign-up logins included); it shed %d on arrival, %d after waiting",
		atUsers, harness.MetricSum(t, users, "blueprint_users_login_shed_total", `reason="queue"`),
		harness.MetricSum(t, users, "blueprint_users_login_shed_total", `reason="wait"`))
	t.Logf("GET /users/me meanwhile: %d requests, %.2f%% succeeded (%v), p99 %s; gateway breaker openings during the flood: %d",
		len(during), 100*rate, statuses(during), p99(readTook), opened)
}

// floodLogins logs in with creds from clients at once, each again as soon
// as it has its answer, for the duration, and returns every outcome.
func floodLogins(c *harness.Client, creds string, clients int, d time.Duration) []loginSample {
	var mu sync.Mutex
	var out []loginSample
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(end) {
				l := login(c, creds)
				mu.Lock()
				out = append(out, l)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// login posts creds to the gateway's login; status 0 means no answer came.
func login(c *harness.Client, creds string) loginSample {
	start := time.Now()
	resp, err := c.HTTP.Post(c.Gateways[0]+"/auth/login", "application/json", strings.NewReader(creds))
	if err != nil {
		return loginSample{took: time.Since(start)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	l := loginSample{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), took: time.Since(start)}
	var p struct{ Type string }
	if resp.StatusCode != http.StatusOK && json.Unmarshal(body, &p) == nil {
		l.code = strings.TrimPrefix(p.Type, "urn:blueprint:problem:")
	}
	return l
}

func slowest(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

//go:build resilience

package resilience

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// breakerDelay is how long an open breaker waits before its half-open
// probes, shortened for the test (UPSTREAM_BREAKER_DELAY).
const breakerDelay = 2 * time.Second

// Users failing every lookup mid-load (503s that shed nothing: no
// Retry-After): its breaker opens, and while it is open the gateway answers
// 503 at once instead of trying; once users answers again, success resumes
// within the breaker's delay; no request waits past its deadline. (A users
// that dies is ejected at once instead, whatever its breaker's window
// holds: failover_test.go.)
func TestUsersFailing(t *testing.T) {
	c, client := start(t, localcluster.Config{}, "UPSTREAM_BREAKER_DELAY="+breakerDelay.String())
	token := client.SignUp(t, 0)
	users := c.Get("users-1")
	stop := make(chan struct{})
	stopLoad := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(stopLoad) // also when a step below fails the test
	done := make(chan []sample, 1)
	go func() { done <- hammer(client, client.Gateways[0]+"/users/me", token, 100, 8, stop) }()
	time.Sleep(2 * time.Second)
	failing := time.Now()
	setFault(t, users.OpsURL, map[string]any{"route": "GET /users/{id}", "errorRate": 1})
	time.Sleep(4 * time.Second)
	clearFaults(t, users.OpsURL)
	back := time.Now()
	time.Sleep(breakerDelay + 3*time.Second)
	stopLoad()
	samples := <-done

	// The breaker's open spell, from the gateway's log: from "opened" to
	// the first "half-open" after it.
	var opened, halfOpen time.Time
	for _, rec := range logRecords(t, c.Dir(), "gateway-1", "circuit breaker opened", "") {
		if at := logTime(rec); at.After(failing) && opened.IsZero() {
			opened = at
		}
	}
	for _, rec := range logRecords(t, c.Dir(), "gateway-1", "circuit breaker half-open", "") {
		if at := logTime(rec); at.After(opened) && halfOpen.IsZero() {
			halfOpen = at
		}
	}
	if opened.IsZero() {
		t.Fatalf("the gateway never logged its users breaker opening; statuses: %v", statuses(samples))
	}
	if halfOpen.IsZero() {
		halfOpen = back
	}
	var fast []time.Duration // answers while the breaker was open
	var slowest time.Duration
	resumed := time.Time{}
	for _, s := range samples {
		slowest = max(slowest, s.took)
		switch {
		case s.at.After(opened) && s.at.Add(s.took).Before(halfOpen):
			if s.status != http.StatusServiceUnavailable {
				t.Errorf("answer %d while the breaker was open, want 503", s.status)
			}
			fast = append(fast, s.took)
		case s.at.After(back) && s.status == http.StatusOK && resumed.IsZero():
			resumed = s.at
		}
	}
	if len(fast) == 0 {
		t.Fatalf("no request while the breaker was open; statuses: %v", statuses(samples))
	}
	// How fast the gateway answered, from its own access log: what the
	// client measures also holds this test's scheduling on a busy machine.
	var served []time.Duration
	for _, rec := range logRecords(t, c.Dir(), "gateway-1", "request", "GET /users/me") {
		if at := logTime(rec); at.After(opened) && at.Before(halfOpen) {
			ms, _ := rec["duration_ms"].(float64)
			served = append(served, time.Duration(ms*float64(time.Millisecond)))
		}
	}
	if p := p99(served); len(served) == 0 || p > 10*time.Millisecond {
		t.Errorf("gateway p99 while the breaker was open = %s over %d requests, want under 10 ms (it fails fast)", p, len(served))
	}
	if resumed.IsZero() || resumed.Sub(back) > breakerDelay+time.Second {
		t.Errorf("success resumed %s after users answered again, want within the breaker delay (%s)", resumed.Sub(back), breakerDelay)
	}
	if slowest > 6*time.Second {
		t.Errorf("slowest request %s, want none past the 5 s deadline", slowest)
	}
	t.Logf("%d requests: %v; breaker open %s after users began failing; %d answers while open, all 503, p99 %s at the gateway (%s at the client); success resumed %s after users answered again; slowest %s",
		len(samples), statuses(samples), opened.Sub(failing).Round(time.Millisecond), len(fast), p99(served), p99(fast),
		resumed.Sub(back).Round(time.Millisecond), slowest.Round(time.Millisecond))
}

// Latency of 2 s injected into users with a 1 s gateway deadline: every
// request ends in 504 at about 1 s, and users, told the deadline in
// Request-Timeout, stops its work then too. The requests go at once: once
// they have failed, users' breaker opens and later ones get a fast 503,
// which TestUsersKilled covers.
func TestDeadlinePropagated(t *testing.T) {
	c, client := start(t, localcluster.Config{}, "UPSTREAM_TIMEOUT=1s")
	token := client.SignUp(t, 0)
	users := c.Get("users-1")
	setFault(t, users.OpsURL, map[string]any{"route": "GET /users/{id}", "latencyMs": 2000})
	var mu sync.Mutex
	var tooks []time.Duration
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			start := time.Now()
			status, body := client.Get(client.Gateways[0]+"/users/me", token)
			took := time.Since(start)
			mu.Lock()
			tooks = append(tooks, took)
			mu.Unlock()
			if status != http.StatusGatewayTimeout {
				t.Errorf("GET /users/me with users 2 s slow: %d %s, want 504", status, body)
			}
			if took < 900*time.Millisecond || took > 1500*time.Millisecond {
				t.Errorf("GET /users/me took %s, want about the 1 s deadline", took)
			}
		})
	}
	wg.Wait()
	// The callee's access log: its requests ended at the deadline, not
	// after the 2 s of injected work.
	time.Sleep(200 * time.Millisecond)
	logs := logRecords(t, c.Dir(), "users-1", "request", "GET /users/{id}")
	if len(logs) == 0 {
		t.Fatal("users logged no GET /users/{id}")
	}
	var calleeMs []float64
	var calleeStatus []any
	for _, rec := range logs {
		ms, _ := rec["duration_ms"].(float64)
		calleeMs = append(calleeMs, ms)
		if ms > 1500 {
			t.Errorf("users worked %.0f ms on a request whose deadline was 1 s", ms)
		}
		// Its status is 504, or 503 when the gateway hung up first: by
		// then nobody reads it.
		calleeStatus = append(calleeStatus, rec["status"])
	}
	t.Logf("gateway answers (all 504): %v; users stopped after (ms): %v with statuses %v", tooks, calleeMs, calleeStatus)
}

// Errors injected at 50 % on one of two users replicas: its breaker opens,
// the balancer skips it, and safe requests keep succeeding, with retries
// within the budget. The breaker's threshold is set below the injected
// rate: at the default 50 % the replica's measured failure rate sits on the
// threshold and the breaker may take hundreds of calls to open, while the
// retry budget runs out.
func TestFailingReplicaEjected(t *testing.T) {
	c, client := start(t, localcluster.Config{Users: 2}, "UPSTREAM_BREAKER_FAILURE_RATE=0.3")
	token := client.SignUp(t, 0)
	setFault(t, c.Get("users-2").OpsURL, map[string]any{"route": "GET /users/{id}", "errorRate": 0.5})
	stop := make(chan struct{})
	time.AfterFunc(10*time.Second, func() { close(stop) })
	samples := hammer(client, client.Gateways[0]+"/users/me", token, 100, 8, stop)
	ok := 0
	for _, s := range samples {
		if s.status == http.StatusOK {
			ok++
		}
	}
	gw := c.Get("gateway-1").OpsURL
	retries := float64(harness.MetricSum(t, gw, "blueprint_upstream_retries_total"))
	rate := float64(ok) / float64(len(samples))
	if rate < 0.99 {
		t.Errorf("success %.2f%% (%v), want above 99%%", 100*rate, statuses(samples))
	}
	// Retries are at most a fifth of the calls, plus the budget's minimum
	// of 10 per 10 s window.
	if limit := 0.2*float64(len(samples)) + 20; retries > limit {
		t.Errorf("%v retries for %d requests, want at most %v", retries, len(samples), limit)
	}
	t.Logf("%d requests, %.2f%% succeeded; %v retries (%.1f%% of requests); statuses %v",
		len(samples), 100*rate, retries, 100*retries/float64(len(samples)), statuses(samples))
}

// A burst far beyond the gateway's in-flight limit: the excess is shed at
// once with 503 and Retry-After, the in-flight count never passes the
// limit, and the gateway's memory stays flat.
func TestBurstShed(t *testing.T) {
	const limit = 20
	c, client := start(t, localcluster.Config{}, fmt.Sprintf("GATEWAY_MAX_IN_FLIGHT=%d", limit))
	token := client.SignUp(t, 0)
	setFault(t, c.Get("users-1").OpsURL, map[string]any{"route": "GET /users/{id}", "latencyMs": 300})
	gw := c.Get("gateway-1")
	var peak int
	var rss []float64 // after each burst
	counts := map[int]int{}
	for range 5 {
		var mu sync.Mutex
		var wg, sampler sync.WaitGroup
		done := make(chan struct{})
		sampler.Go(func() { // samples the in-flight gauge during the burst
			for {
				select {
				case <-done:
					return
				default:
				}
				v := harness.MetricSum(t, gw.OpsURL, "blueprint_gateway_in_flight")
				mu.Lock()
				peak = max(peak, v)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
		for range 400 {
			wg.Go(func() {
				status, _ := client.Get(client.Gateways[0]+"/users/me", token)
				mu.Lock()
				counts[status]++
				mu.Unlock()
			})
		}
		wg.Wait()
		close(done)
		sampler.Wait()
		rss = append(rss, rssMiB(t, gw.Pid()))
	}
	if counts[http.StatusServiceUnavailable] == 0 || counts[http.StatusOK] == 0 {
		t.Errorf("statuses %v, want some served and the excess shed with 503", counts)
	}
	if peak > limit {
		t.Errorf("in flight peaked at %v, want at most %d", peak, limit)
	}
	// The first bursts size the runtime for 400 connections; three more
	// must not add to it (what a leak of the shed requests would: ~1,100
	// goroutines and buffers a burst).
	if growth := rss[4] - rss[1]; growth > 10 {
		t.Errorf("gateway RSS after each burst %.1f MiB: grew %.1f MiB over the last three, want flat", rss, growth)
	}
	t.Logf("5 bursts of 400: statuses %v; in flight peaked at %v (limit %d); gateway RSS after each burst %.1f MiB", counts, peak, limit, rss)
}

// A POST /orders whose answer is lost — orders dies right after committing
// it — is retried by the gateway on the other replica with the same key, and
// the client gets the one order that exists.
func TestLostResponseRetriedOnce(t *testing.T) {
	c, client := start(t, localcluster.Config{Orders: 2})
	token := client.SignUp(t, 0)
	crashing := c.Get("orders-1")
	setFault(t, crashing.OpsURL, map[string]any{"route": "orders.after_commit", "crash": true, "errorRate": 1})
	ids := map[string]bool{}
	for i := 0; crashing.Running() || i < 4; i++ {
		if i > 20 {
			t.Fatal("orders-1 never received an order")
		}
		// No Idempotency-Key from the client: the gateway adds its own.
		status, body := client.Post(client.Gateways[0]+"/orders", token, "", `{"sku":"LOST","qty":1}`)
		if status != http.StatusCreated {
			t.Fatalf("POST /orders #%d: %d %s, want 201", i+1, status, body)
		}
		ids[string(body)] = true
		time.Sleep(50 * time.Millisecond)
	}
	db := harness.OpenDB(t, c.Databases["orders"])
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM orders`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(ids) {
		t.Errorf("%d orders stored for %d accepted POSTs, want one each", n, len(ids))
	}
	retries := harness.MetricSum(t, c.Get("gateway-1").OpsURL, "blueprint_upstream_retries_total")
	if retries == 0 {
		t.Errorf("the gateway retried nothing although orders-1 died holding a request")
	}
	t.Logf("%d POSTs, all 201; %d orders stored; orders-1 crashed after a commit; gateway retries %v", len(ids), n, retries)
}

func statuses(samples []sample) map[int]int {
	m := map[int]int{}
	for _, s := range samples {
		m[s.status]++
	}
	return m
}

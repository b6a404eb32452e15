//go:build resilience

package resilience

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// steadyWarmUp is a full breaker window of successes before the fault: the
// steady state of production, in which a failure-rate breaker judges a dead
// replica against ten seconds of successes and opens late.
const steadyWarmUp = 10 * time.Second

// deadFor is how long the killed replica stays down: longer than the retry
// budget lasts when every call to it is retried.
const deadFor = 5 * time.Second

// failFastWithin is the goal: from this long after a replica dies, no call
// waits on it.
const failFastWithin = time.Second

// One users replica, the only one, SIGKILLed under a steady 100 GET
// /users/me a second: the gateway ejects it on the first refused
// connection, so from within a second of the kill every request is
// answered 503 with Retry-After at once, without trying it; once users is
// started again, a probe finds it and requests succeed again.
func TestSoleReplicaKilled(t *testing.T) {
	c, client := start(t, localcluster.Config{})
	token := client.SignUp(t, 0)
	users := c.Get("users-1")
	gw := client.Gateways[0]
	run := steadyRun(t, client.HTTP, token, 100, func(int) request {
		return request{method: http.MethodGet, url: gw + "/users/me"}
	})
	ev := killAndRestart(t, users)
	shots := run.stop()

	failing := inWindow(shots, ev.killed, ev.restarted)
	fastFrom := ev.killed // the start of the last run of fast 503s before the restart
	for _, s := range failing {
		if !fast503(s) {
			fastFrom = s.at.Add(s.took)
		}
	}
	if d := fastFrom.Sub(ev.killed); d > failFastWithin {
		t.Errorf("answers became fast 503s with Retry-After %s after the kill, want within %s; after the kill: %s",
			d.Round(time.Millisecond), failFastWithin, tally(failing))
	}
	last, n := lastContact(t, c.Dir(), "gateway-1", addrOf(users), ev.killed, ev.restarted)
	if d := last.Sub(ev.killed); d > failFastWithin {
		t.Errorf("the dead replica was reached (or refused a connection) until %s after the kill, want none after %s",
			d.Round(time.Millisecond), failFastWithin)
	}
	// How fast the gateway answered them, from its own access log: what
	// the client measures also holds this test's scheduling.
	var served []time.Duration
	for _, rec := range logRecords(t, c.Dir(), "gateway-1", "request", "GET /users/me") {
		if at := logTime(rec); at.After(ev.killed.Add(failFastWithin)) && at.Before(ev.restarted) {
			ms, _ := rec["duration_ms"].(float64)
			served = append(served, time.Duration(ms*float64(time.Millisecond)))
		}
	}
	if p := p99(served); len(served) == 0 || p > 10*time.Millisecond {
		t.Errorf("gateway p99 from %s after the kill to the restart = %s over %d requests, want under 10 ms (it fails fast)",
			failFastWithin, p, len(served))
	}
	firstOK := firstSuccess(shots, ev.killed)
	if firstOK.IsZero() || firstOK.Sub(ev.back) > maxEjection()+time.Second {
		t.Errorf("first success %s after users was ready again, want within the longest ejection (%s) and a second",
			firstOK.Sub(ev.back).Round(time.Millisecond), maxEjection())
	}
	// Before the kill: requests answered before it. One in flight when
	// users died died with it, and with no other replica it fails.
	var warm []shot
	for _, s := range shots {
		if s.at.Add(s.took).Before(ev.killed) {
			warm = append(warm, s)
		}
	}
	if bad := failures(warm); len(bad) > 0 {
		t.Errorf("%d failures before the kill, want none: %s", len(bad), tally(warm))
	}
	slowest := slices.MaxFunc(shots, func(a, b shot) int { return int(a.took - b.took) }).took
	if slowest > 6*time.Second {
		t.Errorf("slowest request %s, want none past the 5 s deadline", slowest)
	}
	t.Logf("FIGURES sole users replica SIGKILLed after %s at 100 req/s: %d requests; last request to reach the dead replica "+
		"(or get a connection error) %s after the kill (%d log records name it); fast 503 + Retry-After from %s after the kill, "+
		"gateway p99 %s while failing fast; client-visible errors from the kill to the first success: %s; "+
		"users started again %s after the kill, first success %s after it was ready (%s after it was started); slowest request %s",
		steadyWarmUp, len(shots), last.Sub(ev.killed).Round(time.Millisecond), n,
		fastFrom.Sub(ev.killed).Round(time.Millisecond), p99(served),
		tally(failures(inWindow(shots, ev.killed, firstOK))), ev.restarted.Sub(ev.killed).Round(time.Millisecond),
		firstOK.Sub(ev.back).Round(time.Millisecond), firstOK.Sub(ev.restarted).Round(time.Millisecond),
		slowest.Round(time.Millisecond))
}

// One of two orders replicas SIGKILLed under a steady 100 requests a
// second through the gateway, four GET /orders to one POST /orders without
// an Idempotency-Key: the first calls to reach the dead replica fail over
// to the other, it is ejected, and no client sees an error. Once it is
// started again, a probe finds it and it takes its share again.
func TestReplicaKilledUnderLoad(t *testing.T) {
	c, client := start(t, localcluster.Config{Orders: 2})
	token := client.SignUp(t, 0)
	victim := c.Get("orders-2")
	gw := client.Gateways[0]
	run := steadyRun(t, client.HTTP, token, 100, func(i int) request {
		if i%5 == 4 {
			return request{method: http.MethodPost, url: gw + "/orders", body: `{"sku":"FAILOVER","qty":1}`}
		}
		return request{method: http.MethodGet, url: gw + "/orders?limit=5"}
	})
	ev := killAndRestart(t, victim)
	shots := run.stop()

	if bad := failures(shots); len(bad) > 0 {
		t.Errorf("%d client-visible errors, want none: %s; first: %s %d %s", len(bad), tally(shots), bad[0].method, bad[0].status, bad[0].body)
	}
	last, n := lastContact(t, c.Dir(), "gateway-1", addrOf(victim), ev.killed, ev.restarted)
	ejected := ev.killed
	if recs := since(logRecords(t, c.Dir(), "gateway-1", "replica ejected", ""), ev.killed); len(recs) > 0 {
		ejected = logTime(recs[0])
	}
	// The goal: the first calls after the death may reach it; none after
	// its ejection, for the ejection time.
	if last.Sub(ejected) >= upstream.DefaultPolicy().EjectionTime {
		t.Errorf("the dead replica was reached (or refused a connection) %s after the kill, %s after its ejection, want none in its ejection time",
			last.Sub(ev.killed).Round(time.Millisecond), last.Sub(ejected).Round(time.Millisecond))
	}
	// Its own access log: the first request it served in its new life.
	var back time.Time
	for _, rec := range logRecords(t, c.Dir(), victim.Name, "request", "") {
		status, _ := rec["status"].(float64)
		if at := logTime(rec); at.After(ev.restarted) && status < 400 {
			back = at
			break
		}
	}
	if back.IsZero() || back.Sub(ev.back) > maxEjection()+time.Second {
		t.Errorf("the restarted replica's first success came %s after it was ready, want within the longest ejection (%s) and a second",
			back.Sub(ev.back).Round(time.Millisecond), maxEjection())
	}
	gwOps := c.Get("gateway-1").OpsURL
	t.Logf("FIGURES one of two orders replicas SIGKILLed after %s at 100 req/s (4 GET /orders : 1 keyless POST /orders): %d requests, "+
		"client-visible errors: %d (%s); last request to reach the dead replica (or get a connection error) %s after the kill "+
		"(%d log records name it); replica started again %s after the kill, its first success %s after it was ready "+
		"(%s after it was started); gateway failovers %d, retries %d",
		steadyWarmUp, len(shots), len(failures(shots)), tally(shots), last.Sub(ev.killed).Round(time.Millisecond), n,
		ev.restarted.Sub(ev.killed).Round(time.Millisecond), back.Sub(ev.back).Round(time.Millisecond),
		back.Sub(ev.restarted).Round(time.Millisecond),
		harness.MetricSum(t, gwOps, "blueprint_upstream_failovers_total"), harness.MetricSum(t, gwOps, "blueprint_upstream_retries_total"))
}

// maxEjection is the longest a replica stays ejected before a probe.
func maxEjection() time.Duration { return upstream.DefaultPolicy().MaxEjectionTime }

// shot is one request of a steady load, as the client saw it.
type shot struct {
	at         time.Time
	took       time.Duration
	method     string
	status     int // 0: no answer
	retryAfter string
	body       string // the answer, kept for failures
}

// load is a steady load running until stop.
type load struct {
	stopCh chan struct{}
	done   chan struct{}
	shots  []shot
}

// request is one request of a load, sent with the load's token.
type request struct{ method, url, body string }

// steadyRun sends next(0), next(1)… at rate per second, from enough
// workers that none is skipped while the system keeps up, until stop.
func steadyRun(t *testing.T, hc *http.Client, token string, rate float64, next func(i int) request) *load {
	t.Helper()
	l := &load{stopCh: make(chan struct{}), done: make(chan struct{})}
	jobs := make(chan request)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for req := range jobs {
				s := send(hc, token, req)
				mu.Lock()
				l.shots = append(l.shots, s)
				mu.Unlock()
			}
		})
	}
	go func() { // ends at stop, once every request sent has its answer
		defer close(l.done)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stopCh:
				close(jobs)
				wg.Wait()
				return
			case <-tick.C:
			}
			select {
			case jobs <- next(i):
			default: // every worker busy: the load is what the system can take
			}
		}
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the load and returns its requests in the order they were sent.
func (l *load) stop() []shot {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	<-l.done
	slices.SortFunc(l.shots, func(a, b shot) int { return a.at.Compare(b.at) })
	return l.shots
}

// events are the moments of a kill and restart.
type events struct {
	killed    time.Time // SIGKILL sent
	restarted time.Time // the process started again
	back      time.Time // ready again (its /readyz answered 200)
}

// killAndRestart waits out the warm-up, SIGKILLs p, leaves it dead for
// deadFor, starts it again and gives the system the longest ejection and a
// second to find it back.
func killAndRestart(t *testing.T, p *localcluster.Process) events {
	t.Helper()
	var ev events
	time.Sleep(steadyWarmUp)
	ev.killed = time.Now()
	if err := p.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.Name, err)
	}
	time.Sleep(deadFor)
	ev.restarted = time.Now()
	if err := p.Restart(context.Background()); err != nil {
		t.Fatalf("restart %s: %v", p.Name, err)
	}
	ev.back = time.Now()
	time.Sleep(maxEjection() + time.Second)
	return ev
}

// send makes one request; a request it could not make or send is a shot
// without an answer.
func send(hc *http.Client, token string, r request) shot {
	s := shot{at: time.Now(), method: r.method}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, r.url, body)
	if err != nil {
		s.body = err.Error()
		return s
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		s.took, s.body = time.Since(s.at), err.Error()
		return s
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s.took, s.status, s.retryAfter = time.Since(s.at), resp.StatusCode, resp.Header.Get("Retry-After")
	if resp.StatusCode >= 300 {
		s.body = string(b)
	}
	return s
}

// fast503 is the answer of a call refused at once: 503 with Retry-After,
// well before any timeout could have passed.
func fast503(s shot) bool {
	return s.status == http.StatusServiceUnavailable && s.retryAfter != "" && s.took < 250*time.Millisecond
}

// inWindow returns the requests sent from from (zero: the start) until to.
func inWindow(shots []shot, from, to time.Time) []shot {
	var out []shot
	for _, s := range shots {
		if !s.at.Before(from) && s.at.Before(to) {
			out = append(out, s)
		}
	}
	return out
}

// failures are the requests a client saw fail: no answer, or not 2xx.
func failures(shots []shot) []shot {
	var out []shot
	for _, s := range shots {
		if s.status < 200 || s.status > 299 {
			out = append(out, s)
		}
	}
	return out
}

// firstSuccess is when the first 2xx sent after from arrived; zero if none.
func firstSuccess(shots []shot, from time.Time) time.Time {
	var first time.Time
	for _, s := range shots {
		if end := s.at.Add(s.took); s.at.After(from) && s.status < 300 && s.status >= 200 && (first.IsZero() || end.Before(first)) {
			first = end
		}
	}
	return first
}

// tally counts requests by method and status.
func tally(shots []shot) string {
	counts := map[string]int{}
	for _, s := range shots {
		counts[fmt.Sprintf("%s %d", s.method, s.status)]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s ×%d", k, counts[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// addrOf is the host:port a service process listens on, as the gateway's
// logs name its replica.
func addrOf(p *localcluster.Process) string { return strings.TrimPrefix(p.URL, "http://") }

// lastContact is the time of the last record of a caller's log, from from
// until to, saying that a call reached the replica at addr or failed to
// connect to it — a retry or failover from it, its ejection, a breaker
// move, an error naming it — and how many such records there are. The
// probes' own lines, which are no call, are left out.
func lastContact(t *testing.T, dir, process, addr string, from, to time.Time) (time.Time, int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, process+".log"))
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	var last time.Time
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		at := logTime(rec)
		if at.Before(from) || !at.Before(to) || rec["msg"] == "replica still unreachable" || rec["msg"] == "replica returned" {
			continue
		}
		errText, _ := rec["error"].(string)
		if rec["replica"] == addr || strings.Contains(errText, addr) {
			n++
			last = at
		}
	}
	if n == 0 {
		return from, 0
	}
	return last, n
}

// since keeps the log records written after at.
func since(recs []map[string]any, at time.Time) []map[string]any {
	var out []map[string]any
	for _, rec := range recs {
		if logTime(rec).After(at) {
			out = append(out, rec)
		}
	}
	return out
}

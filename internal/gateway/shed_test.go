package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestShedLoad fills every slot of a gateway on a real listener with
// requests held in a slow upstream, then sends a burst far beyond the
// limit. The burst can only complete if every excess request is answered
// at once, 503 with Retry-After, since the held ones are not let go until
// it has; the upstream never sees more than the limit at once; and the
// burst leaves nothing behind.
//
// Not parallel: it counts the process's goroutines, which other tests
// running alongside would change.
func TestShedLoad(t *testing.T) {
	const limit, workers = 8, 16
	// A clock that stands still: the log of an overload is one line per
	// shedLogEvery, however long the test takes.
	tg := newTestGateway(t, Limits{MaxInFlight: limit}, newFakeClock().now)

	var current, peak atomic.Int64
	entered := make(chan struct{}, limit)
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := current.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case entered <- struct{}{}:
		default: // more than the limit got in; peak tells
		}
		<-release
		current.Add(-1)
	})
	srv := httptest.NewServer(tg.shedLoad(slow))
	t.Cleanup(srv.Close)
	t.Cleanup(letGo) // before srv.Close, which waits for the handlers
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	held := make(chan int, limit)
	for range limit {
		go func() { held <- get(client, srv.URL) }() // returns once release is closed
	}
	for range limit {
		<-entered
	}

	burst := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		var bad atomic.Int64
		for range workers {
			wg.Go(func() {
				for range n / workers {
					if !shedAnswer(t, client, srv.URL) {
						bad.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if bad.Load() > 0 {
			t.Fatalf("%d of %d requests over the limit were not shed at once with 503 overloaded and Retry-After: 1", bad.Load(), n)
		}
	}
	burst(workers * 20) // connections made, and reused from here on
	before := runtime.NumGoroutine()
	burst(workers * 300)
	after := runtime.NumGoroutine()
	// A request held in a queue would hold its goroutine (and memory) until
	// a slot freed; the burst would then not have finished at all. What is
	// measured here is that the ones shed leave nothing behind either: the
	// count may move by the burst's connections (three goroutines each, if
	// some were replaced), not by its requests.
	if after > before+3*workers {
		t.Errorf("goroutines = %d after a burst of %d shed requests, %d before; want no growth", after, workers*300, before)
	}
	if got := tg.gauge(t, "blueprint.gateway.in_flight"); got != limit {
		t.Errorf("blueprint.gateway.in_flight while full = %d, want %d", got, limit)
	}
	if got := tg.counter(t, "blueprint.gateway.shed")[""]; got != workers*320 {
		t.Errorf("blueprint.gateway.shed = %d, want %d", got, workers*320)
	}
	if n := len(tg.logs.Records(t, "shedding load")); n != 1 {
		t.Errorf("shedding log lines = %d, want 1 per %v of overload", n, shedLogEvery)
	}

	letGo()
	for range limit {
		if status := <-held; status != http.StatusOK {
			t.Errorf("held request = %d, want 200 once the upstream answers", status)
		}
	}
	if p := peak.Load(); p != limit {
		t.Errorf("most requests in the upstream at once = %d, want the limit, %d", p, limit)
	}
	if got := tg.gauge(t, "blueprint.gateway.in_flight"); got != 0 {
		t.Errorf("blueprint.gateway.in_flight after = %d, want 0", got)
	}
}

// get returns the status of a GET, 0 when it fails.
func get(client *http.Client, url string) int {
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// shedAnswer sends a GET and reports whether it was shed as designed.
func shedAnswer(t *testing.T, client *http.Client, url string) bool {
	resp, err := client.Get(url)
	if err != nil {
		t.Errorf("GET: %v", err)
		return false
	}
	defer resp.Body.Close()
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	err = json.NewDecoder(resp.Body).Decode(&p)
	_, _ = io.Copy(io.Discard, resp.Body)
	return err == nil && resp.StatusCode == http.StatusServiceUnavailable && p.Status == http.StatusServiceUnavailable &&
		p.Type == "urn:blueprint:problem:overloaded" && resp.Header.Get("Retry-After") == "1" &&
		resp.Header.Get("Content-Type") == "application/problem+json"
}

// TestShedLoadOff: with MaxInFlight 0 every request is served, however
// many run at once.
func TestShedLoadOff(t *testing.T) {
	t.Parallel()
	const n = 64
	tg := newTestGateway(t, Limits{}, time.Now)
	in := make(chan struct{}, n)
	block := make(chan struct{})
	h := tg.shedLoad(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		<-block
	}))
	codes := make(chan int, n)
	for range n {
		go func() { // returns once block is closed, or at once if shed
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			codes <- rec.Code
		}()
	}
	for i := range n {
		select {
		case <-in:
		case code := <-codes:
			close(block)
			t.Fatalf("request answered %d with %d of %d in the handler; want all %d served at once", code, i, n, n)
		}
	}
	close(block)
	for range n {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("status = %d, want 200", code)
		}
	}
}

package upstream_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

var (
	get         = upstream.Request{Method: http.MethodGet, Path: "/users/u-1"}
	postKeyless = upstream.Request{Method: http.MethodPost, Path: "/orders", Body: []byte(`{"sku":"A-1","qty":1}`)}
	postWithKey = upstream.Request{Method: http.MethodPost, Path: "/orders", Body: []byte(`{"sku":"A-1","qty":1}`),
		Header: http.Header{"Idempotency-Key": {"key-1"}}}
)

// TestRetries sends one request to two replicas, the first (in the
// balancer's turn) failing some way and the second healthy. A request that
// provably never reached the first fails over to the second whatever its
// method; one that may have reached it is retried on the second if it is
// safe to repeat, and never otherwise.
func TestRetries(t *testing.T) {
	t.Parallel()
	hang := func(t *testing.T) string {
		release := make(chan struct{})
		srv := newServer(t, func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
		t.Cleanup(func() { close(release) })
		return srv.URL
	}
	// hangUp reads the request, then closes the connection: it may have
	// done the work, and no answer says so.
	hangUp := func(t *testing.T) string {
		return newServer(t, func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("Hijack() error = %v", err)
				return
			}
			conn.Close()
		}).URL
	}
	status := func(code int) func(*testing.T) string {
		return func(t *testing.T) string { return newReplicaServer(t, code).URL }
	}
	shedding := func(t *testing.T) string { return newSheddingServer(t).URL }
	const (
		retry    = "retry"    // sent again, as a retry
		failover = "failover" // sent again, as a failover
	)
	tests := []struct {
		name   string
		first  func(*testing.T) string // the failing replica's URL
		req    upstream.Request
		via    string      // how the request reached the second replica; "" if it did not
		reason string      // why, in its log line, metric and span event
		want   int         // status of the answer, when there is one
		kind   apperr.Kind // kind of the error, when there is none
	}{
		{name: "GET after a 503", first: status(503), req: get, via: retry, reason: "status_503", want: 200},
		{name: "GET after a 502", first: status(502), req: get, via: retry, reason: "status_502", want: 200},
		{name: "GET after a 504", first: status(504), req: get, via: retry, reason: "status_504", want: 200},
		{name: "GET after a 503 with Retry-After", first: shedding, req: get, via: retry, reason: "shed", want: 200},
		{name: "GET after a refused connection", first: closedURL, req: get, via: failover, reason: "connect", want: 200},
		{name: "GET after a hung attempt", first: hang, req: get, via: retry, reason: "timeout", want: 200},
		{name: "GET after a hang-up", first: hangUp, req: get, via: retry, reason: "broken_response", want: 200},
		{name: "HEAD after a 503", first: status(503), req: upstream.Request{Method: http.MethodHead, Path: "/x"}, via: retry, reason: "status_503", want: 200},
		{name: "keyed POST after a 503", first: status(503), req: postWithKey, via: retry, reason: "status_503", want: 200},
		{name: "keyed POST after a refused connection", first: closedURL, req: postWithKey, via: failover, reason: "connect", want: 200},
		{name: "keyless POST after a refused connection", first: closedURL, req: postKeyless, via: failover, reason: "connect", want: 200},
		{name: "keyless POST after a 503", first: status(503), req: postKeyless, want: 503},
		{name: "keyless POST after a 503 with Retry-After", first: shedding, req: postKeyless, want: 503},
		{name: "keyless POST after a hung attempt", first: hang, req: postKeyless, kind: apperr.Timeout},
		{name: "keyless POST after a hang-up", first: hangUp, req: postKeyless, kind: apperr.BadGateway},
		{name: "keyless DELETE after a 503", first: status(503), req: upstream.Request{Method: http.MethodDelete, Path: "/x"}, want: 503},
		{name: "GET after a 500: a bug, not retried", first: status(500), req: get, want: 500},
		{name: "GET after a 404: an answer", first: status(404), req: get, want: 404},
		{name: "GET after a 429: an answer", first: status(429), req: get, want: 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			healthy := newReplicaServer(t, http.StatusOK)
			cl := c.observedClient(t, upstream.Config{
				URLs: []string{tt.first(t), healthy.URL}, AttemptTimeout: 300 * time.Millisecond,
			})
			ctx, span := c.tel.Tracer.Tracer("test").Start(context.Background(), "GET /users/me")
			resp, err := do(t, ctx, cl.Client, tt.req)
			span.End()

			if tt.kind != 0 {
				wantKind(t, "Do()", resp, err, tt.kind)
			} else if err != nil || resp.Status != tt.want {
				t.Fatalf("Do() = %v, %v, want status %d", resp, err, tt.want)
			}
			if got, want := healthy.hits.Load(), map[bool]int64{true: 1}[tt.via != ""]; got != want {
				t.Errorf("second replica got %d attempts, want %d", got, want)
			}
			kinds := map[string]struct{ metric, log, event string }{
				retry:    {"blueprint.upstream.retries", "retrying upstream call", "upstream.retry"},
				failover: {"blueprint.upstream.failovers", "failing over upstream call", "upstream.failover"},
			}
			for via, k := range kinds {
				lines := cl.logs.Records(t, k.log)
				if via != tt.via {
					if len(lines) != 0 {
						t.Errorf("log has %d %q lines, want none: %v", len(lines), k.log, lines)
					}
					continue
				}
				if n := cl.counter(t, k.metric, attribute.String("upstream", "users"), attribute.String("reason", tt.reason)); n != 1 {
					t.Errorf("%s{reason=%s} = %d, want 1", k.metric, tt.reason, n)
				}
				if len(lines) != 1 || lines[0]["attempt"] != 2.0 || lines[0]["reason"] != tt.reason ||
					lines[0]["upstream"] != "users" || lines[0]["level"] != "INFO" ||
					lines[0]["trace_id"] != span.SpanContext().TraceID().String() {
					t.Errorf("%q log lines = %v, want one at INFO with attempt 2, reason %s and the caller's trace id", k.log, lines, tt.reason)
				}
			}
			if tt.via == "" {
				return
			}
			if tt.req.Header.Get("Idempotency-Key") != "" && !slices.Equal(healthy.keys, []string{"key-1"}) {
				t.Errorf("second replica saw Idempotency-Key %q, want the caller's key-1", healthy.keys)
			}
			// The second attempt is its own client span: attempt 2, resent
			// once, and an event saying what failed before.
			second := clientSpans(c, span.SpanContext().TraceID(), 2)
			if second == nil {
				t.Fatalf("no client span of attempt 2 in the trace")
			}
			if !hasAttr(second.Attributes(), attribute.Int("http.request.resend_count", 1)) ||
				!hasAttr(second.Attributes(), attribute.String("blueprint.upstream.replica", healthy.addr())) {
				t.Errorf("attempt 2 span attributes = %v, want resend_count 1 and replica %s", second.Attributes(), healthy.addr())
			}
			if event := kinds[tt.via].event; !hasEvent(second, event, attribute.String("reason", tt.reason)) {
				t.Errorf("attempt 2 span events = %v, want %s with reason %s", second.Events(), event, tt.reason)
			}
		})
	}
}

// clientSpans returns the ended client span of attempt n in the trace.
func clientSpans(c *caller, id trace.TraceID, n int) sdktrace.ReadOnlySpan {
	for _, s := range c.spans.Ended() {
		if s.SpanKind() == trace.SpanKindClient && s.SpanContext().TraceID() == id &&
			hasAttr(s.Attributes(), attribute.Int("blueprint.upstream.attempt", n)) {
			return s
		}
	}
	return nil
}

func hasAttr(attrs []attribute.KeyValue, want attribute.KeyValue) bool {
	return slices.ContainsFunc(attrs, func(a attribute.KeyValue) bool { return a == want })
}

func hasEvent(s sdktrace.ReadOnlySpan, name string, attr attribute.KeyValue) bool {
	return slices.ContainsFunc(s.Events(), func(e sdktrace.Event) bool {
		return e.Name == name && hasAttr(e.Attributes, attr)
	})
}

func TestRetriesStopAtMaxRetries(t *testing.T) {
	t.Parallel()
	for _, retries := range []int{0, 1, 2, 4} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			srv := newReplicaServer(t, http.StatusServiceUnavailable)
			p := fastPolicy()
			p.MaxRetries = retries
			cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
			resp := mustDo(t, context.Background(), cl.Client, get)
			if resp.Status != http.StatusServiceUnavailable {
				t.Errorf("Do() status = %d, want the last answer, 503", resp.Status)
			}
			if got, want := srv.hits.Load(), int64(retries+1); got != want {
				t.Errorf("MaxRetries %d: replica got %d attempts, want %d", retries, got, want)
			}
		})
	}
}

// TestRetryBudgetCapsRetries: against an upstream failing every call, each
// call wants two retries; the budget lets retries be at most a fifth of the
// calls, plus its small floor.
func TestRetryBudgetCapsRetries(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	srv := newReplicaServer(t, http.StatusServiceUnavailable)
	p := fastPolicy()
	p.BreakerMinCalls = 1 << 30 // never opens: the budget alone limits retries here
	cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})

	const calls = 200
	for range calls {
		mustDo(t, context.Background(), cl.Client, get)
	}
	retries := srv.hits.Load() - calls
	bound := int64(p.RetryBudget*calls) + int64(p.RetryBudgetMin)
	if retries > bound || retries < int64(p.RetryBudgetMin) {
		t.Errorf("%d calls made %d retries, want from %d to %d (%.0f%% of calls plus %d)",
			calls, retries, p.RetryBudgetMin, bound, 100*p.RetryBudget, p.RetryBudgetMin)
	}
	users := attribute.String("upstream", "users")
	if got := cl.counter(t, "blueprint.upstream.retries", users, attribute.String("reason", "status_503")); got != retries {
		t.Errorf("blueprint.upstream.retries = %d, want %d, the retries the replica saw", got, retries)
	}
	if got := cl.counter(t, "blueprint.upstream.rejections", users, attribute.String("reason", "budget_exhausted")); got == 0 {
		t.Errorf("blueprint.upstream.rejections{reason=budget_exhausted} = 0, want the retries refused")
	}
}

// TestBreakerOpensFailsFastAndRecovers drives one replica's breaker round:
// failures open it, calls then fail at once without reaching the replica,
// after the delay a probe goes through, and successful probes close it.
func TestBreakerOpensFailsFastAndRecovers(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	srv := newReplicaServer(t, http.StatusInternalServerError)
	p := fastPolicy()
	p.MaxRetries = 0
	// The delay is long enough for the calls made while open, short enough to wait out.
	p.BreakerMinCalls, p.BreakerProbes, p.BreakerDelay = 4, 2, 2*time.Second
	cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
	ctx, span := c.tel.Tracer.Tracer("test").Start(context.Background(), "GET /users/me")
	defer span.End()
	state := func() int64 {
		v, ok := cl.breakerState(t, "users", srv.addr())
		if !ok {
			t.Fatalf("blueprint.upstream.breaker.state has no value for %s; replicas %v", srv.addr(), cl.breakerReplicas(t))
		}
		return v
	}
	if s := state(); s != 0 {
		t.Fatalf("breaker state before any call = %d, want 0 (closed)", s)
	}

	for range p.BreakerMinCalls {
		if resp := mustDo(t, ctx, cl.Client, get); resp.Status != http.StatusInternalServerError {
			t.Fatalf("Do() while failing = %d, want 500", resp.Status)
		}
	}
	if s := state(); s != 2 {
		t.Fatalf("breaker state after %d failures = %d, want 2 (open)", p.BreakerMinCalls, s)
	}
	opened := cl.logs.Records(t, "circuit breaker opened")
	if len(opened) != 1 || opened[0]["level"] != "WARN" || opened[0]["upstream"] != "users" ||
		opened[0]["replica"] != srv.addr() || opened[0]["trace_id"] != span.SpanContext().TraceID().String() {
		t.Errorf("open log lines = %v, want one WARN naming users, %s and the trace", opened, srv.addr())
	}

	// Open: calls fail at once, and the replica never sees them.
	hits := srv.hits.Load()
	openCtx, openSpan := c.tel.Tracer.Tracer("test").Start(ctx, "GET /users/me while open")
	for range 3 {
		resp, err := do(t, openCtx, cl.Client, get)
		ae := wantKind(t, "Do() while open", resp, err, apperr.Unavailable)
		if ae.RetryAfter < 1 {
			t.Errorf("Do() while open RetryAfter = %d, want at least 1", ae.RetryAfter)
		}
	}
	openSpan.End()
	if got := srv.hits.Load(); got != hits {
		t.Errorf("replica got %d attempts while its breaker was open, want 0", got-hits)
	}
	rejected := 0
	for _, e := range endedSpan(t, c, openSpan).Events() {
		if e.Name == "upstream.rejected" && hasAttr(e.Attributes, attribute.String("reason", "breaker_open")) {
			rejected++
		}
	}
	if rejected != 3 {
		t.Errorf("calling span has %d upstream.rejected events with reason breaker_open, want 3", rejected)
	}
	if got := cl.counter(t, "blueprint.upstream.rejections", attribute.String("upstream", "users"),
		attribute.String("reason", "breaker_open")); got != 3 {
		t.Errorf("blueprint.upstream.rejections{reason=breaker_open} = %d, want 3", got)
	}

	// Once the delay is over the gauge reads half-open before any call
	// comes: the next one will be a probe.
	testwait.For(t, callWait, "the breaker gauge to read 1 (half-open) after the delay, with no call", func() bool {
		return state() == 1
	})

	// The replica recovers; a probe finds out.
	srv.status.Store(http.StatusOK)
	testwait.For(t, callWait, "a probe to go through", func() bool {
		resp, err := do(t, ctx, cl.Client, get)
		return err == nil && resp.Status == http.StatusOK
	})
	if s := state(); s != 1 {
		t.Errorf("breaker state after 1 of %d probes succeeded = %d, want 1 (half-open)", p.BreakerProbes, s)
	}
	mustDo(t, ctx, cl.Client, get)
	if s := state(); s != 0 {
		t.Errorf("breaker state after %d probes succeeded = %d, want 0 (closed)", p.BreakerProbes, s)
	}
	for _, msg := range []string{"circuit breaker half-open", "circuit breaker closed"} {
		lines := cl.logs.Records(t, msg)
		if len(lines) != 1 || lines[0]["level"] != "INFO" || lines[0]["replica"] != srv.addr() ||
			lines[0]["trace_id"] != span.SpanContext().TraceID().String() {
			t.Errorf("%q log lines = %v, want one INFO naming %s and the trace", msg, lines, srv.addr())
		}
	}
}

// TestBreakerCountsOnlyTheReplicasFaults: answers below 500 are answers, a
// 503 with Retry-After is load shed by a live replica, and the caller's own
// short deadline, its giving up and its bulkhead's refusals are not the
// replica's doing. None of them opens the breaker or ejects the replica.
func TestBreakerCountsOnlyTheReplicasFaults(t *testing.T) {
	t.Parallel()
	// judged fails the test if the replica at addr has been counted
	// against: its breaker open or it ejected.
	judged := func(t *testing.T, cl *observed, addr, after string) {
		t.Helper()
		if s, _ := cl.breakerState(t, "users", addr); s != 0 {
			t.Errorf("breaker state after %s = %d, want 0 (closed)", after, s)
		}
		if e, _ := cl.ejected(t, "users", addr); e != 0 {
			t.Errorf("replica ejected after %s, want it in", after)
		}
	}
	t.Run("503 with Retry-After", func(t *testing.T) {
		t.Parallel()
		c := newTestCaller(t)
		srv := newSheddingServer(t)
		p := fastPolicy()
		p.BreakerMinCalls = 2
		cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
		for range 10 {
			if resp := mustDo(t, context.Background(), cl.Client, get); resp.Status != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("Do() = %d Retry-After %q, want the replica's 503 and its Retry-After", resp.Status, resp.Header.Get("Retry-After"))
			}
		}
		judged(t, cl, srv.addr(), "ten 503s with Retry-After")
		if got := srv.hits.Load(); got != 10 {
			t.Errorf("replica got %d attempts for 10 calls, want 10: a replica that asked for time is not retried at once", got)
		}
	})
	t.Run("caller gives up", func(t *testing.T) {
		t.Parallel()
		c := newTestCaller(t)
		arrived := make(chan struct{}, 1)
		srv := newServer(t, func(_ http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-r.Context().Done()
		})
		p := fastPolicy()
		p.BreakerMinCalls = 2
		cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
		for range 4 {
			ctx, cancel := context.WithCancel(context.Background())
			go func() { // ends once the request reached the replica
				<-arrived
				cancel()
			}()
			resp, err := do(t, ctx, cl.Client, get)
			wantKind(t, "Do() the caller gave up on", resp, err, apperr.Unavailable)
		}
		judged(t, cl, srv.Listener.Addr().String(), "four calls their caller gave up on")
	})
	t.Run("bulkhead full", func(t *testing.T) {
		t.Parallel()
		c := newTestCaller(t)
		release := make(chan struct{})
		arrived := make(chan struct{}, 1)
		srv := newServer(t, func(_ http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		p := fastPolicy()
		p.MaxInFlight, p.BreakerMinCalls = 1, 2
		cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
		done := make(chan struct{})
		go func() { // ends once released
			defer close(done)
			mustDo(t, context.Background(), cl.Client, get)
		}()
		<-arrived
		for range 4 {
			resp, err := do(t, context.Background(), cl.Client, get)
			wantKind(t, "Do() past the bulkhead", resp, err, apperr.Unavailable)
		}
		close(release)
		<-done
		judged(t, cl, srv.Listener.Addr().String(), "four calls refused by the bulkhead")
	})
	t.Run("4xx", func(t *testing.T) {
		t.Parallel()
		c := newTestCaller(t)
		srv := newReplicaServer(t, http.StatusNotFound)
		p := fastPolicy()
		p.BreakerMinCalls = 2
		cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
		for range 10 {
			mustDo(t, context.Background(), cl.Client, get)
		}
		if s, _ := cl.breakerState(t, "users", srv.addr()); s != 0 {
			t.Errorf("breaker state after ten 404s = %d, want 0 (closed)", s)
		}
	})
	t.Run("caller's deadline", func(t *testing.T) {
		t.Parallel()
		c := newTestCaller(t)
		release := make(chan struct{})
		srv := newServer(t, func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
		t.Cleanup(func() { close(release) })
		p := fastPolicy()
		p.BreakerMinCalls = 2
		cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
		for range 4 {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			resp, err := do(t, ctx, cl.Client, get)
			cancel()
			wantKind(t, "Do() with a short caller deadline", resp, err, apperr.Timeout)
		}
		addr := srv.Listener.Addr().String()
		if s, _ := cl.breakerState(t, "users", addr); s != 0 {
			t.Errorf("breaker state after four caller deadlines = %d, want 0 (closed)", s)
		}
	})
	t.Run("504 within the caller's deadline", func(t *testing.T) {
		t.Parallel()
		c := newTestCaller(t)
		srv := newReplicaServer(t, http.StatusGatewayTimeout)
		p := fastPolicy()
		p.BreakerMinCalls = 2
		cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
		for range 4 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second) // sooner than the client's 5 s
			resp := mustDo(t, ctx, cl.Client, get)
			cancel()
			if resp.Status != http.StatusGatewayTimeout {
				t.Fatalf("Do() = %d, want the replica's 504", resp.Status)
			}
		}
		if s, _ := cl.breakerState(t, "users", srv.addr()); s != 0 {
			t.Errorf("breaker state after four 504s within the caller's deadline = %d, want 0 (closed)", s)
		}
		if got := srv.hits.Load(); got != 4 {
			t.Errorf("replica got %d attempts, want 4: the caller's deadline is no reason to retry", got)
		}
	})
}

// TestOpenReplicaIsSkipped: once a replica's breaker opens, the balancer
// sends everything to the others.
func TestOpenReplicaIsSkipped(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	bad := newReplicaServer(t, http.StatusServiceUnavailable)
	good := newReplicaServer(t, http.StatusOK)
	p := fastPolicy()
	p.MaxRetries = 0 // every call shows the replica it went to
	p.BreakerMinCalls = 2
	cl := c.observedClient(t, upstream.Config{URLs: []string{bad.URL, good.URL}, Policy: p})

	for range 4 { // taking turns: two each
		mustDo(t, context.Background(), cl.Client, get)
	}
	if got := bad.hits.Load(); got != 2 {
		t.Fatalf("failing replica got %d of 4 calls, want 2", got)
	}
	for i := range 20 {
		if resp := mustDo(t, context.Background(), cl.Client, get); resp.Status != http.StatusOK {
			t.Fatalf("call %d after the breaker opened = %d, want 200 from the healthy replica", i, resp.Status)
		}
	}
	if got := bad.hits.Load(); got != 2 {
		t.Errorf("failing replica got %d more calls with its breaker open, want 0", got-2)
	}
	if s, _ := cl.breakerState(t, "users", bad.addr()); s != 2 {
		t.Errorf("failing replica's breaker state = %d, want 2 (open)", s)
	}
	if s, _ := cl.breakerState(t, "users", good.addr()); s != 0 {
		t.Errorf("healthy replica's breaker state = %d, want 0 (closed)", s)
	}
}

// TestClientDurationNamesTheUpstream: http.client.request.duration tells
// the upstream apart by name, whatever its replicas' addresses, so the
// Gateway dashboard shows "users", not 127.0.0.1:3002.
func TestClientDurationNamesTheUpstream(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	srv := newReplicaServer(t, http.StatusOK)
	cl := c.observedClient(t, upstream.Config{Service: "orders", URLs: []string{srv.URL}})
	mustDo(t, context.Background(), cl.Client, get)

	m, ok := cl.metric(t, "http.client.request.duration")
	if !ok {
		t.Fatal("no http.client.request.duration recorded")
	}
	var names []string
	for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
		v, _ := dp.Attributes.Value("upstream")
		names = append(names, v.AsString())
	}
	if !slices.Equal(names, []string{"orders"}) {
		t.Errorf("upstream attribute of the client duration's points = %q, want [orders]", names)
	}
}

// TestBulkheadRejectsAtOnce: with MaxInFlight calls waiting on the
// upstream, one more is refused without waiting for a place.
func TestBulkheadRejectsAtOnce(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	p := fastPolicy()
	p.MaxInFlight = 2
	cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})

	var wg sync.WaitGroup
	for range p.MaxInFlight {
		wg.Go(func() { mustDo(t, context.Background(), cl.Client, get) })
	}
	for range p.MaxInFlight {
		<-arrived
	}
	// The two are held by the upstream until release: a call that queued
	// behind them would never return, and do would fail the test.
	resp, err := do(t, context.Background(), cl.Client, get)
	ae := wantKind(t, "Do() past the bulkhead", resp, err, apperr.Unavailable)
	if ae.Code != "upstream_busy" || ae.RetryAfter < 1 {
		t.Errorf("Do() past the bulkhead = %q, Retry-After %d, want upstream_busy with Retry-After", ae.Code, ae.RetryAfter)
	}
	close(release)
	wg.Wait()
	if got := cl.counter(t, "blueprint.upstream.rejections", attribute.String("upstream", "users"),
		attribute.String("reason", "bulkhead_full")); got != 1 {
		t.Errorf("blueprint.upstream.rejections{reason=bulkhead_full} = %d, want 1", got)
	}
	// The places are back.
	mustDo(t, context.Background(), cl.Client, get)
}

// TestEveryReplicaDownIsUnavailable: a refused connection on every replica
// is a 503 with Retry-After, even after the retries.
func TestEveryReplicaDownIsUnavailable(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	cl := c.observedClient(t, upstream.Config{URLs: []string{closedURL(t), closedURL(t)}})
	for range 10 { // enough to open both breakers on the way
		resp, err := do(t, context.Background(), cl.Client, get)
		ae := wantKind(t, "Do() with every replica down", resp, err, apperr.Unavailable)
		if ae.Code != "upstream_unavailable" || ae.RetryAfter < 1 {
			t.Errorf("Do() with every replica down = %q, Retry-After %d, want upstream_unavailable with Retry-After", ae.Code, ae.RetryAfter)
		}
	}
}

func TestNewValidatesThePolicy(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	tests := []struct {
		name   string
		change func(*upstream.Policy)
	}{
		{"no in-flight calls", func(p *upstream.Policy) { p.MaxInFlight = 0 }},
		{"negative retries", func(p *upstream.Policy) { p.MaxRetries = -1 }},
		{"no backoff", func(p *upstream.Policy) { p.RetryBackoff = 0 }},
		{"max backoff below backoff", func(p *upstream.Policy) { p.RetryMaxBackoff = p.RetryBackoff / 2 }},
		{"budget over 1", func(p *upstream.Policy) { p.RetryBudget = 1.5 }},
		{"failure rate 0", func(p *upstream.Policy) { p.BreakerFailureRate = 0 }},
		{"failure rate over 1", func(p *upstream.Policy) { p.BreakerFailureRate = 2 }},
		{"no probes", func(p *upstream.Policy) { p.BreakerProbes = 0 }},
		{"no breaker delay", func(p *upstream.Policy) { p.BreakerDelay = 0 }},
		{"no ejection time", func(p *upstream.Policy) { p.EjectionTime = 0 }},
		{"max ejection below ejection time", func(p *upstream.Policy) { p.MaxEjectionTime = p.EjectionTime / 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := upstream.DefaultPolicy()
			tt.change(&p)
			_, err := upstream.New(upstream.Config{Service: "users", URLs: []string{"http://users:3002"},
				Timeout: time.Second, Policy: p, Minter: c.minter, Telemetry: c.tel})
			if err == nil || !strings.HasPrefix(err.Error(), "users upstream: ") {
				t.Errorf("New(policy %+v) error = %v, want one naming the users upstream", p, err)
			}
		})
	}
}

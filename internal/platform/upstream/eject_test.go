package upstream_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// TestDeadReplicaEjectedAtOnce: the only replica dies after a window full
// of successes, which its failure-rate breaker would take many failures to
// tip. The first refused connection ejects it; until a probe connects to it
// again, calls fail at once with 503 and Retry-After without an attempt;
// probes that find it still dead keep it out longer; once it is back, a
// probe lets it in and calls succeed.
func TestDeadReplicaEjectedAtOnce(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	srv := newReplicaServer(t, http.StatusOK)
	addr := srv.addr()
	p := fastPolicy()
	p.EjectionTime, p.MaxEjectionTime = 100*time.Millisecond, 300*time.Millisecond
	cl := c.observedClient(t, upstream.Config{URLs: []string{srv.URL}, Policy: p})
	users := attribute.String("upstream", "users")
	for range 50 {
		mustDo(t, context.Background(), cl.Client, get)
	}
	srv.Close()

	ctx, span := c.tel.Tracer.Tracer("test").Start(context.Background(), "GET /users/me")
	resp, err := do(t, ctx, cl.Client, get)
	span.End()
	if ae := wantKind(t, "Do() on a dead replica", resp, err, apperr.Unavailable); ae.Code != "upstream_unavailable" || ae.RetryAfter < 1 {
		t.Errorf("Do() on a dead replica = %q, Retry-After %d, want upstream_unavailable with Retry-After", ae.Code, ae.RetryAfter)
	}
	lines := cl.logs.Records(t, "replica ejected")
	if len(lines) != 1 || lines[0]["level"] != "WARN" || lines[0]["upstream"] != "users" || lines[0]["replica"] != addr ||
		lines[0]["reason"] != "connect" || lines[0]["probe_in_ms"] != 100.0 || lines[0]["trace_id"] != span.SpanContext().TraceID().String() {
		t.Errorf("ejection log lines = %v, want one WARN naming users, %s, reason connect, the probe in 100 ms and the trace", lines, addr)
	}
	if n := cl.counter(t, "blueprint.upstream.ejections", users, attribute.String("reason", "connect")); n != 1 {
		t.Errorf("blueprint.upstream.ejections{reason=connect} = %d, want 1", n)
	}
	if !hasEvent(endedSpan(t, c, span), "upstream.ejected", attribute.String("replica", addr)) {
		t.Errorf("calling span has no upstream.ejected event naming %s", addr)
	}
	if s, _ := cl.breakerState(t, "users", addr); s != 0 {
		t.Errorf("breaker state = %d, want 0 (closed): one failure among 50 successes; ejection, not the breaker, keeps the replica out", s)
	}

	// Out: calls fail at once and make no attempt (an attempt is a client
	// span), however long it stays dead.
	ctx, span = c.tel.Tracer.Tracer("test").Start(context.Background(), "GET /users/me while ejected")
	for range 5 {
		resp, err := do(t, ctx, cl.Client, get)
		if ae := wantKind(t, "Do() while ejected", resp, err, apperr.Unavailable); ae.RetryAfter < 1 {
			t.Errorf("Do() while ejected Retry-After = %d, want at least 1", ae.RetryAfter)
		}
	}
	span.End()
	if spans := clientSpansOf(c, span.SpanContext().TraceID()); len(spans) != 0 {
		t.Errorf("calls while ejected made %d attempts, want none", len(spans))
	}
	if n := cl.counter(t, "blueprint.upstream.rejections", users, attribute.String("reason", "ejected")); n != 5 {
		t.Errorf("blueprint.upstream.rejections{reason=ejected} = %d, want 5", n)
	}
	if v, _ := cl.ejected(t, "users", addr); v != 1 {
		t.Errorf("blueprint.upstream.ejected = %d while the replica is dead, want 1", v)
	}

	// Probes find it dead: each keeps it out longer, up to the longest
	// ejection.
	var waits []float64
	testwait.For(t, callWait, "three probes to find the replica dead", func() bool {
		waits = waits[:0]
		for _, l := range cl.logs.Records(t, "replica still unreachable") {
			waits = append(waits, l["probe_in_ms"].(float64))
		}
		return len(waits) >= 3
	})
	if want := []float64{200, 300, 300}; !slices.Equal(waits[:3], want) {
		t.Errorf("probe_in_ms of the failed probes = %v, want %v: 100 ms more each time, at most 300", waits, want)
	}

	// Back where it was: the next probe lets it in.
	back := newReplicaServerAt(t, addr, http.StatusOK)
	testwait.For(t, callWait, "a probe to find the replica back", func() bool {
		return len(cl.logs.Records(t, "replica returned")) > 0
	})
	returned := cl.logs.Records(t, "replica returned")[0]
	if returned["level"] != "INFO" || returned["upstream"] != "users" || returned["replica"] != addr || returned["ejected_ms"].(float64) < 600 {
		t.Errorf("return log line = %v, want INFO naming users, %s, and at least the 600 ms it was out", returned, addr)
	}
	if v, _ := cl.ejected(t, "users", addr); v != 0 {
		t.Errorf("blueprint.upstream.ejected = %d once the replica is back, want 0", v)
	}
	probed := slices.ContainsFunc(c.spans.Ended(), func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "probe users" && hasEvent(s, "upstream.returned", attribute.String("replica", addr))
	})
	if !probed {
		t.Errorf("no probe span with an upstream.returned event naming %s", addr)
	}
	if resp := mustDo(t, context.Background(), cl.Client, get); resp.Status != http.StatusOK || back.hits.Load() != 1 {
		t.Errorf("Do() once the replica is back = %d, the replica got %d calls; want 200 from it", resp.Status, back.hits.Load())
	}
}

// TestFailoverSpendsNoRetry: with retries off and no budget, a request
// that found its replica dead still goes to the other, whatever its method;
// the dead one is then skipped, so only the first call ever reached it.
func TestFailoverSpendsNoRetry(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	dead := closedURL(t)
	healthy := newReplicaServer(t, http.StatusOK)
	p := fastPolicy()
	p.MaxRetries, p.RetryBudget, p.RetryBudgetMin = 0, 0, 0
	cl := c.observedClient(t, upstream.Config{URLs: []string{dead, healthy.URL}, Policy: p})
	for i := range 10 {
		if resp, err := do(t, context.Background(), cl.Client, postKeyless); err != nil || resp.Status != http.StatusOK {
			t.Fatalf("keyless POST %d with one replica dead = %v, %v, want 200 from the other", i, resp, err)
		}
	}
	if got := healthy.hits.Load(); got != 10 {
		t.Errorf("live replica got %d of 10 POSTs, want all", got)
	}
	users := attribute.String("upstream", "users")
	if n := cl.counter(t, "blueprint.upstream.failovers", users, attribute.String("reason", "connect")); n != 1 {
		t.Errorf("blueprint.upstream.failovers{reason=connect} = %d, want 1: the dead replica skipped once ejected", n)
	}
	if n := cl.counter(t, "blueprint.upstream.rejections", users, attribute.String("reason", "budget_exhausted")); n != 0 {
		t.Errorf("blueprint.upstream.rejections{reason=budget_exhausted} = %d, want 0: a failover asks no budget", n)
	}
}

// endedSpan returns the recorded form of a span the test ended.
func endedSpan(t *testing.T, c *caller, span trace.Span) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range c.spans.Ended() {
		if s.SpanContext().SpanID() == span.SpanContext().SpanID() {
			return s
		}
	}
	t.Fatalf("span %s was not recorded", span.SpanContext().SpanID())
	return nil
}

// clientSpansOf returns the client spans of a trace: one per attempt.
func clientSpansOf(c *caller, id trace.TraceID) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range c.spans.Ended() {
		if s.SpanKind() == trace.SpanKindClient && s.SpanContext().TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

package upstream

import (
	"context"
	"net/http"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

const scope = "github.com/ds-blueprint/blueprint/internal/platform/upstream"

// Why a call was refused without an attempt, or a retry without a try: the
// reason attribute of blueprint.upstream.rejections.
const (
	reasonBreakerOpen     = "breaker_open"
	reasonEjected         = "ejected" // every replica out, some of them ejected
	reasonBulkheadFull    = "bulkhead_full"
	reasonBudgetExhausted = "budget_exhausted"
	reasonNoReplica       = "no_replica"
)

// Attribute keys shared by the metrics, span attributes and span events.
const (
	attrUpstream = attribute.Key("upstream")
	attrReplica  = attribute.Key("replica")
	attrReason   = attribute.Key("reason")
	// On client spans, where a bare key could clash with another library's.
	attrAttempt     = attribute.Key("blueprint.upstream.attempt")
	attrSpanReplica = attribute.Key("blueprint.upstream.replica")
)

// observer makes the policies visible: logs, metrics and span events.
type observer struct {
	c          *Client
	upstream   attribute.KeyValue
	retries    metric.Int64Counter
	failovers  metric.Int64Counter
	rejections metric.Int64Counter
	ejections  metric.Int64Counter
}

func newObserver(c *Client) (*observer, error) {
	o := &observer{c: c, upstream: attrUpstream.String(c.cfg.Service)}
	m := c.cfg.Telemetry.Meter.Meter(scope)
	var err error
	if o.retries, err = m.Int64Counter("blueprint.upstream.retries",
		metric.WithDescription("Attempts retried after a failure, by upstream and reason of the failure.")); err != nil {
		return nil, err
	}
	if o.failovers, err = m.Int64Counter("blueprint.upstream.failovers",
		metric.WithDescription("Attempts sent to another replica because the request never reached the first, by upstream and reason (connect, reset_before_write); no retry, whatever the method.")); err != nil {
		return nil, err
	}
	if o.rejections, err = m.Int64Counter("blueprint.upstream.rejections",
		metric.WithDescription("Calls refused without trying (breaker_open, ejected, bulkhead_full, no_replica) and retries not made (budget_exhausted).")); err != nil {
		return nil, err
	}
	if o.ejections, err = m.Int64Counter("blueprint.upstream.ejections",
		metric.WithDescription("Replicas ejected because a request could not be sent to them, by upstream and reason (connect, reset_before_write).")); err != nil {
		return nil, err
	}
	state, err := m.Int64ObservableGauge("blueprint.upstream.breaker.state",
		metric.WithDescription("Circuit breaker of each upstream replica: 0 closed, 1 half-open (or open with its delay over: the next call probes), 2 open."))
	if err != nil {
		return nil, err
	}
	ejected, err := m.Int64ObservableGauge("blueprint.upstream.ejected",
		metric.WithDescription("1 while an upstream replica is ejected (unreachable, until a probe connects to it), else 0."))
	if err != nil {
		return nil, err
	}
	_, err = m.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		for _, r := range *c.replicas.Load() {
			attrs := metric.WithAttributes(o.upstream, attrReplica.String(r.addr))
			obs.ObserveInt64(state, stateValue(r.breaker.State(), r.breaker.RemainingDelay()), attrs)
			obs.ObserveInt64(ejected, ejectedValue(r), attrs)
		}
		return nil
	}, state, ejected)
	return o, err
}

// stateValue orders the states by how much they refuse. An open breaker
// whose delay is over reads half-open: the breaker itself moves only when a
// call comes, but that call will be a probe, and an upstream nobody calls
// after a failure should not look open for ever.
func stateValue(s circuitbreaker.State, remainingDelay time.Duration) int64 {
	switch {
	case s == circuitbreaker.OpenState && remainingDelay > 0:
		return 2
	case s == circuitbreaker.OpenState, s == circuitbreaker.HalfOpenState:
		return 1
	}
	return 0
}

// ejectedValue is a replica's blueprint.upstream.ejected.
func ejectedValue(r *replica) int64 {
	if r.ejected() {
		return 1
	}
	return 0
}

// retryScheduled is the retry policy's listener: a retry is decided and
// about to wait its backoff. The retried attempt's client span carries the
// reason too (attemptTransport).
func (o *observer) retryScheduled(e failsafe.ExecutionScheduledEvent[*outcome]) {
	last := e.LastResult()
	ctx := e.Context()
	o.retries.Add(ctx, 1, metric.WithAttributes(o.upstream, attrReason.String(last.reason)))
	o.c.cfg.Logger.InfoContext(ctx, "retrying upstream call",
		"upstream", o.c.cfg.Service, "attempt", last.n+1, "reason", last.reason,
		"replica", last.replica, "backoff_ms", e.Delay.Milliseconds())
}

// failedOver notes a request that never reached its replica being sent to
// another at once. The next attempt's client span carries the reason too.
func (o *observer) failedOver(ctx context.Context, last *outcome) {
	o.failovers.Add(ctx, 1, metric.WithAttributes(o.upstream, attrReason.String(last.reason)))
	o.c.cfg.Logger.InfoContext(ctx, "failing over upstream call",
		"upstream", o.c.cfg.Service, "attempt", last.n+1, "reason", last.reason, "replica", last.replica)
}

// ejected reports a replica taken out by the call in ctx: a warning, since
// the replica is gone or not ready, and an event on the calling span.
func (o *observer) ejected(ctx context.Context, r *replica, last *outcome, d time.Duration) {
	reason := attrReason.String(last.reason)
	o.ejections.Add(ctx, 1, metric.WithAttributes(o.upstream, reason))
	trace.SpanFromContext(ctx).AddEvent("upstream.ejected",
		trace.WithAttributes(o.upstream, attrReplica.String(r.addr), reason))
	o.c.cfg.Logger.WarnContext(ctx, "replica ejected", "upstream", o.c.cfg.Service, "replica", r.addr,
		"reason", last.reason, "error", last.err.Error(), "probe_in_ms", d.Milliseconds())
}

// stillUnreachable reports a probe that found an ejected replica still
// refusing connections.
func (o *observer) stillUnreachable(ctx context.Context, r *replica, err error, d time.Duration) {
	o.c.cfg.Logger.InfoContext(ctx, "replica still unreachable", "upstream", o.c.cfg.Service,
		"replica", r.addr, "error", err.Error(), "probe_in_ms", d.Milliseconds())
}

// returned reports a probe that found an ejected replica back, on the
// probe's span and log line.
func (o *observer) returned(ctx context.Context, r *replica, out time.Duration) {
	trace.SpanFromContext(ctx).AddEvent("upstream.returned",
		trace.WithAttributes(o.upstream, attrReplica.String(r.addr)))
	o.c.cfg.Logger.InfoContext(ctx, "replica returned", "upstream", o.c.cfg.Service,
		"replica", r.addr, "ejected_ms", out.Milliseconds())
}

// rejected counts a refusal and marks it on the span of the calling request.
func (o *observer) rejected(ctx context.Context, reason string) {
	o.rejections.Add(ctx, 1, metric.WithAttributes(o.upstream, attrReason.String(reason)))
	trace.SpanFromContext(ctx).AddEvent("upstream.rejected",
		trace.WithAttributes(o.upstream, attrReason.String(reason)))
}

// breakerChanged logs a replica's breaker moving: a warning when it opens
// (calls to it now fail fast), information when it probes or recovers.
// ctx is the call whose attempt or result made it move; nil only if the
// breaker moved outside one.
func (o *observer) breakerChanged(ctx context.Context, r *replica, e circuitbreaker.StateChangedEvent) {
	if ctx == nil {
		ctx = context.Background()
	}
	attrs := []any{"upstream", o.c.cfg.Service, "replica", r.addr, "from", e.OldState.String()}
	switch e.NewState {
	case circuitbreaker.OpenState:
		m := e.Metrics()
		o.c.cfg.Logger.WarnContext(ctx, "circuit breaker opened", append(attrs,
			"failure_rate", m.FailureRate(), "calls", m.Executions(),
			"retry_in_ms", r.breaker.RemainingDelay().Milliseconds())...)
	case circuitbreaker.HalfOpenState:
		o.c.cfg.Logger.InfoContext(ctx, "circuit breaker half-open", attrs...)
	case circuitbreaker.ClosedState:
		o.c.cfg.Logger.InfoContext(ctx, "circuit breaker closed", attrs...)
	}
}

// attemptInfo describes the attempt a request is, for its client span.
type attemptInfo struct {
	n       int
	replica string
	prev    *outcome // the failed attempt this one retries; nil on the first
}

type attemptKey struct{}

func withAttempt(ctx context.Context, a attemptInfo) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

// attemptTransport runs inside otelhttp's transport, where the attempt's
// client span is in the request context, and marks the span with the
// attempt number and replica; on a retry or failover, with
// http.request.resend_count and an upstream.retry or upstream.failover
// event saying what failed before.
type attemptTransport struct{ next http.RoundTripper }

func (t attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	span := trace.SpanFromContext(req.Context())
	if a, ok := req.Context().Value(attemptKey{}).(attemptInfo); ok && span.IsRecording() {
		span.SetAttributes(attrAttempt.Int(a.n), attrSpanReplica.String(a.replica))
		if a.prev != nil {
			span.SetAttributes(semconv.HTTPRequestResendCount(a.n - 1))
			event := "upstream.retry"
			if a.prev.unsent {
				event = "upstream.failover"
			}
			span.AddEvent(event, trace.WithAttributes(
				attrReason.String(a.prev.reason), attribute.String("previous_replica", a.prev.replica)))
		}
	}
	return t.next.RoundTrip(req)
}

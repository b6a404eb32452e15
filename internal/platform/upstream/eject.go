package upstream

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Ejection is outlier detection in Envoy's manner, beside the circuit
// breaker. The breaker judges a replica that answers badly by its failure
// rate over a window: under steady traffic, a window full of successes
// takes seconds of failures to tip. A replica that cannot even be sent a
// request — its connection refused, the dial failed, or the connection
// broke before a byte of the request left — is gone or not ready, and one
// such failure proves it. So it is ejected at once: the balancer skips it
// for an ejection time, and when that is up a probe (a TCP connection, not
// a request: a dead replica costs no caller anything) finds whether it is
// back. While it is not, it stays out, each time longer: EjectionTime times
// the number of ejections and failed probes in a row, at most
// MaxEjectionTime. An ejection soon after the replica came back continues
// the row, so a flapping replica is kept out longer too.
type ejection struct {
	mu sync.Mutex
	// until is when the next probe is due; zero while the replica is in.
	until time.Time
	// since is when the replica went out: the first ejection of the row.
	since time.Time
	// inARow counts the ejections and failed probes of the current row.
	inARow int
	// returned is when a probe last found the replica back.
	returned time.Time
}

// ejected reports whether the replica is out.
func (r *replica) ejected() bool {
	r.ejection.mu.Lock()
	defer r.ejection.mu.Unlock()
	return !r.ejection.until.IsZero()
}

// ejectionLeft is the time until the replica's next probe; 0 when it is in
// or its probe is running.
func (r *replica) ejectionLeft() time.Duration {
	r.ejection.mu.Lock()
	defer r.ejection.mu.Unlock()
	if r.ejection.until.IsZero() {
		return 0
	}
	return max(0, time.Until(r.ejection.until))
}

// eject takes r out after an attempt begun at started proved it could not
// be sent a request (o.unsent). An attempt on a replica already out, or
// begun before a probe found it back, brings no news and changes nothing.
func (c *Client) eject(ctx context.Context, r *replica, o *outcome, started time.Time) {
	e := &r.ejection
	e.mu.Lock()
	if !e.until.IsZero() || started.Before(e.returned) {
		e.mu.Unlock()
		return
	}
	now := time.Now()
	if now.Sub(e.returned) > c.policy.MaxEjectionTime {
		e.inARow = 0 // it stayed in a while: a new row
	}
	e.inARow++
	d := c.policy.ejectionTime(e.inARow)
	e.until, e.since = now.Add(d), now
	e.mu.Unlock()

	// Its pooled connections lead to the process that is gone.
	r.transport.CloseIdleConnections()
	c.obs.ejected(ctx, r, o, d)
	select {
	case c.lookupNow <- struct{}{}:

	default: // one is due already
	}
	time.AfterFunc(d, func() { c.probe(r) })
}

// probe connects to an ejected replica: connected, it is back; refused or
// unreachable, it stays out longer, and the next probe is scheduled. A
// replica no longer in the set (its address gone from DNS) is forgotten.
func (c *Client) probe(r *replica) {
	if !slices.Contains(*c.replicas.Load(), r) {
		return
	}
	ctx, span := c.cfg.Telemetry.Tracer.Tracer(scope).Start(context.Background(), "probe "+c.cfg.Service,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(c.obs.upstream, attrSpanReplica.String(r.addr)))
	defer span.End()
	dialCtx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	conn, err := c.dialer.DialContext(dialCtx, "tcp", r.addr)
	cancel()

	e := &r.ejection
	e.mu.Lock()
	if err != nil {
		e.inARow++
		d := c.policy.ejectionTime(e.inARow)
		e.until = time.Now().Add(d)
		e.mu.Unlock()
		span.SetStatus(codes.Error, err.Error())
		c.obs.stillUnreachable(ctx, r, err, d)
		time.AfterFunc(d, func() { c.probe(r) })
		return
	}
	_ = conn.Close()
	out := time.Since(e.since)
	e.until, e.returned = time.Time{}, time.Now()
	e.mu.Unlock()
	c.obs.returned(ctx, r, out)
}

// ejectionTime is how long the n-th ejection in a row lasts.
func (p Policy) ejectionTime(n int) time.Duration {
	if n >= int(p.MaxEjectionTime/p.EjectionTime) {
		return p.MaxEjectionTime
	}
	return time.Duration(n) * p.EjectionTime
}

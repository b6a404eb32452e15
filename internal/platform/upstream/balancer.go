package upstream

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

// resolveTimeout bounds one lookup of a host name.
const resolveTimeout = 5 * time.Second

// resolveMissingEvery is how often Run looks again while a name has no
// address (every instance stopped, or not started yet), so that the first
// one to come back gets calls within a second, not a ResolveEvery later.
const resolveMissingEvery = time.Second

// replica is one address of an upstream: its own connections, its own
// breaker and ejection, its own count of attempts in flight.
type replica struct {
	target target
	// addr is the host:port dialled: an IP address once the target's name
	// is resolved, the name itself before. The URL keeps the name, so the
	// Host header and TLS server name are the configured ones.
	addr      string
	transport *http.Transport
	client    *http.Client
	breaker   circuitbreaker.CircuitBreaker[any]
	ejection  ejection
	inflight  atomic.Int64

	// mu serialises the breaker's permits and results, and with them its
	// transitions; ctx is the context of the call holding mu, so that the
	// transition listener, which failsafe calls synchronously from inside
	// TryAcquirePermit or RecordX, logs with that call's trace id.
	mu  sync.Mutex
	ctx context.Context
}

func (c *Client) newReplica(tg target, addr string) *replica {
	r := &replica{target: tg, addr: addr}
	r.transport = &http.Transport{
		// Always this replica's address, whatever the URL's host resolves
		// to: the pool of connections is this replica's alone. Counting
		// what is written tells a request that never left (call.go).
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			conn, err := c.dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: conn}, nil
		},
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	r.client = &http.Client{
		Transport: otelhttp.NewTransport(attemptTransport{next: r.transport},
			otelhttp.WithTracerProvider(c.cfg.Telemetry.Tracer),
			otelhttp.WithMeterProvider(c.cfg.Telemetry.Meter),
			otelhttp.WithPropagators(c.cfg.Telemetry.Propagator),
			otelhttp.WithSpanNameFormatter(func(_ string, req *http.Request) string {
				return req.Method + " " + c.cfg.Service
			}),
		),
		// Internal APIs never redirect; following one would resend the token.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	p := c.policy
	r.breaker = circuitbreaker.NewBuilder[any]().
		WithFailureRateThreshold(p.BreakerFailureRate, uint(p.BreakerMinCalls), p.BreakerWindow).
		WithDelay(p.BreakerDelay).
		// Replicas that failed together do not all probe at the same moment.
		WithJitterFactor(0.1).
		WithSuccessThreshold(uint(p.BreakerProbes)).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) { c.obs.breakerChanged(r.ctx, r, e) }).
		Build()
	return r
}

// ready reports whether the replica may be sent an attempt: it is not
// ejected, and its breaker is closed, half-open, or open with its delay over
// (the next attempt turns it half-open and is a probe).
func (r *replica) ready() bool { return !r.ejected() && r.breaker.RemainingDelay() == 0 }

// anyReady reports whether some replica may take an attempt, one the call
// has not tried yet when fresh: if none may, another attempt would only be
// refused.
func (c *Client) anyReady(tried []*replica, fresh bool) bool {
	return slices.ContainsFunc(*c.replicas.Load(), func(r *replica) bool {
		return r.ready() && !(fresh && slices.Contains(tried, r))
	})
}

// unavailableFor is how long the replica will refuse attempts: until its
// ejection's probe, or its breaker's delay, whichever is later.
func (r *replica) unavailableFor() time.Duration {
	return max(r.ejectionLeft(), r.breaker.RemainingDelay())
}

// acquire takes a permit from the breaker: always granted when closed, one
// of the few probes when half-open.
func (r *replica) acquire(ctx context.Context) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ctx = ctx
	defer func() { r.ctx = nil }()
	return r.breaker.TryAcquirePermit()
}

// record gives the breaker an attempt's result, releasing its permit.
func (r *replica) record(ctx context.Context, v verdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ctx = ctx
	defer func() { r.ctx = nil }()
	switch {
	case v == healthy:
		r.breaker.RecordSuccess()
	case v == failed:
		r.breaker.RecordFailure()
	case r.breaker.IsHalfOpen():
		// A probe that proved nothing still holds one of the few half-open
		// permits; counting it failed returns the permit and keeps the
		// replica out a while longer, the cautious choice.
		r.breaker.RecordFailure()
	}
}

// pick chooses the replica for an attempt. Replicas ejected or whose
// breaker is open are skipped; so are those tried earlier in the call,
// unless no other is left. Among the rest it takes turns, and of the next
// two in turn takes the one with fewer attempts in flight — round robin
// that steers around a slow replica, the "power of two choices" without the
// randomness.
func (c *Client) pick(ctx context.Context, tried []*replica) (*replica, error) {
	reps := *c.replicas.Load()
	if len(reps) == 0 {
		c.obs.rejected(ctx, reasonNoReplica)
		return nil, &apperr.Error{Kind: apperr.Unavailable, Code: "upstream_unavailable",
			Detail: c.cfg.Service + " has no replica", RetryAfter: 1}
	}
	start := int((c.next.Add(1) - 1) % uint64(len(reps)))
	for _, retrying := range [2]bool{false, true} {
		var first *replica
		for i := range len(reps) {
			r := reps[(start+i)%len(reps)]
			if (!retrying && slices.Contains(tried, r)) || !r.ready() {
				continue
			}
			if first == nil {
				first = r
				continue
			}
			a, b := first, r
			if b.inflight.Load() < a.inflight.Load() {
				a, b = b, a
			}
			if a.acquire(ctx) {
				return a, nil
			}
			if b.acquire(ctx) {
				return b, nil
			}
			first = nil // both half-open with every probe taken
		}
		if first != nil && first.acquire(ctx) {
			return first, nil
		}
	}
	// Every replica is out: fail now, and say when one may take calls.
	wait := time.Duration(math.MaxInt64)
	reason, detail := reasonBreakerOpen, " is unavailable: every replica's circuit breaker is open"
	for _, r := range reps {
		wait = min(wait, r.unavailableFor())
		if r.ejected() {
			reason, detail = reasonEjected, " is unavailable: every replica is ejected or its circuit breaker open"
		}
	}
	c.obs.rejected(ctx, reason)
	return nil, &apperr.Error{Kind: apperr.Unavailable, Code: "upstream_unavailable",
		Detail: c.cfg.Service + detail, RetryAfter: max(1, int(math.Ceil(wait.Seconds())))}
}

// Run looks up the host names of the upstream's URLs at once and then every
// ResolveEvery until ctx ends, making each address a replica: scaling a
// service behind one DNS name (`docker compose up --scale orders=3`, a
// headless Kubernetes service) spreads the calls over every instance, and
// an instance gone from DNS stops getting them. A replica ejected brings
// the next lookup forward: the instance that died is often gone from DNS
// already, and one that replaces it, or one scaled up since the last
// lookup, listed. A lookup that fails keeps the replicas found before; a
// name that no longer exists has none. Run returns at once when every URL
// has an IP address, as in `all` mode.
func (c *Client) Run(ctx context.Context) error {
	if !slices.ContainsFunc(c.targets, func(tg target) bool { return !tg.literal }) {
		return nil
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-c.lookupNow:
			timer.Stop()
		}
		wait := c.policy.ResolveEvery
		if c.resolve(ctx) {
			wait = min(wait, resolveMissingEvery)
		}
		timer.Reset(wait)
	}
}

// resolve replaces the replica set with one replica per address of every
// target, keeping the replicas (and their breakers and connections) of
// addresses that were already there. It reports whether a target has no
// address.
func (c *Client) resolve(ctx context.Context) (missing bool) {
	old := *c.replicas.Load()
	var next []*replica
	for _, tg := range c.targets {
		addrs, ok := c.lookup(ctx, tg)
		if !ok {
			for _, r := range old {
				if r.target == tg {
					next = append(next, r)
				}
			}
			continue
		}
		missing = missing || len(addrs) == 0
		for _, addr := range addrs {
			i := slices.IndexFunc(old, func(r *replica) bool { return r.target == tg && r.addr == addr })
			if i >= 0 {
				next = append(next, old[i])
			} else {
				next = append(next, c.newReplica(tg, addr))
			}
		}
	}
	if slices.Equal(old, next) {
		return missing
	}
	c.replicas.Store(&next)
	addrs := make([]string, len(next))
	for i, r := range next {
		addrs[i] = r.addr
	}
	if len(next) == 0 {
		c.cfg.Logger.WarnContext(ctx, "upstream has no replica; its calls fail until its name resolves",
			"upstream", c.cfg.Service)
	} else {
		c.cfg.Logger.InfoContext(ctx, "upstream replicas changed", "upstream", c.cfg.Service,
			"replicas", strings.Join(addrs, ","))
	}
	for _, r := range old {
		if !slices.Contains(next, r) {
			r.transport.CloseIdleConnections() // attempts still running finish on theirs
		}
	}
	return missing
}

// lookup returns the addresses of a target, sorted: none when DNS says the
// name does not exist. ok is false when the lookup failed otherwise (a
// timeout, a server failure), which says nothing about the replicas.
func (c *Client) lookup(ctx context.Context, tg target) ([]string, bool) {
	if tg.literal {
		return []string{tg.hostPort}, true
	}
	lookupCtx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := c.cfg.Resolver.LookupNetIP(lookupCtx, "ip", tg.host)
	if dnsErr, isDNS := errors.AsType[*net.DNSError](err); isDNS && dnsErr.IsNotFound {
		return nil, true
	}
	if err == nil && len(ips) == 0 {
		err = errors.New("no address")
	}
	if err != nil {
		if ctx.Err() == nil { // not merely Run stopping
			c.cfg.Logger.WarnContext(ctx, "upstream lookup failed; keeping the replicas known",
				"upstream", c.cfg.Service, "host", tg.host, "error", err.Error())
		}
		return nil, false
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip.Unmap().String(), tg.port))
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), true
}

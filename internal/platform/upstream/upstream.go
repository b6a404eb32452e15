// Package upstream is the HTTP client every Blueprint service uses to call
// another: the gateway calling users, orders and notifications, and the
// notifications worker calling users. In `all` mode those calls go over
// loopback exactly as they go over the network between processes, so
// everything below happens on a laptop too. Each call
//
//   - carries a fresh internal token for the callee's audience, on behalf
//     of the end user when there is one, the trace context and the request
//     id;
//   - has a deadline (Timeout, and the caller's own if sooner) that is sent
//     to the callee in Request-Timeout, so the callee stops working when the
//     caller stops waiting (httpx honours the header);
//   - takes a place in the upstream's bulkhead, or is refused at once when
//     MaxInFlight calls are already waiting on it;
//   - is sent to one replica of the upstream, chosen among those that are
//     neither ejected nor behind an open circuit breaker;
//   - fails over at once to another replica, whatever its method, when it
//     provably never reached the one it was sent to (the connection could
//     not be made, or broke before a byte of the request left), and that
//     replica is ejected: a request that was not sent was not processed;
//   - is retried, when it is safe to send twice (GET, HEAD, or a request with
//     an Idempotency-Key), after a timed-out attempt, a broken answer or a
//     502, 503 or 504, on another replica if there is one, with backoff, as
//     long as the deadline leaves room and the upstream's retry budget allows.
//
// The policies are failsafe-go's (docs/adr/0009-failsafe-go.md): a Bulkhead
// around a RetryPolicy around each attempt, and a CircuitBreaker per replica
// consulted by the balancer; ejection (eject.go) is ours. docs/resilience.md
// explains each, with the logs, metrics and span events that show it working.
//
// Failures come back as apperr values the caller can map: Timeout when the
// deadline passed, Unavailable when no connection could be made or the
// client refused to try (Retry-After set), BadGateway when the upstream
// answered with something unusable. An answer, whatever its status, is a
// Response: the caller decides what an upstream 404 or 503 means.
//
// Upstream URLs with host names are re-resolved by Run, each address a
// replica of its own, so replicas added behind one DNS name share the load.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// maxResponseBytes caps what a caller buffers from an upstream.
const maxResponseBytes = 1 << 20

// Config configures a Client.
type Config struct {
	// Service is the upstream's name, also the audience of its tokens.
	Service string
	// URLs are the base URLs of the upstream's replicas.
	URLs []string
	// Timeout bounds one call: every attempt, and the waits between them.
	Timeout time.Duration
	// AttemptTimeout bounds one attempt, from dial to the last body byte,
	// so that a hung replica leaves time to try another; zero means Timeout.
	AttemptTimeout time.Duration
	// ConnectTimeout bounds establishing a connection.
	ConnectTimeout time.Duration
	// Policy tunes the bulkhead, retries and breakers.
	Policy Policy
	// Minter makes the caller's internal tokens.
	Minter *auth.Minter
	// Telemetry of the calling service.
	Telemetry *telemetry.Providers
	// Logger receives breaker transitions, retries and replica changes; nil
	// discards them.
	Logger *slog.Logger
	// Resolver finds the addresses of the URLs' host names; nil is the
	// system's resolver.
	Resolver Resolver
}

// Resolver looks up the IP addresses of a host; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Policy holds the settings of the resilience policies. The zero Policy
// means DefaultPolicy().
type Policy struct {
	// MaxInFlight is the bulkhead: calls to the upstream (all its replicas
	// together) that may be waiting for an answer at once. One more is
	// refused at once, 503 upstream_busy, rather than queued behind a
	// dependency that is already slow.
	MaxInFlight int
	// MaxRetries is how many times one call may be retried; 0 never retries.
	MaxRetries int
	// RetryBackoff and RetryMaxBackoff shape the wait before a retry: a
	// random time up to RetryBackoff·2ⁿ⁻¹ before retry n, at most
	// RetryMaxBackoff ("full jitter", so callers that failed together do
	// not retry together).
	RetryBackoff, RetryMaxBackoff time.Duration
	// RetryBudget is the share of calls over the last 10 seconds that may
	// be retried, plus RetryBudgetMin retries in that window whatever the
	// traffic. When an upstream fails outright, retries then add a fifth to
	// its load instead of tripling it.
	RetryBudget    float64
	RetryBudgetMin int
	// A replica's breaker opens when at least BreakerFailureRate of its
	// attempts over BreakerWindow failed, once it has seen BreakerMinCalls
	// in that window. After BreakerDelay it lets BreakerProbes attempts
	// through; all succeeding closes it, one failing opens it again.
	BreakerFailureRate float64
	BreakerMinCalls    int
	BreakerWindow      time.Duration
	BreakerDelay       time.Duration
	BreakerProbes      int
	// A replica that could not be sent a request (its connection refused,
	// failed, or broken before a byte was written) is ejected at once,
	// whatever its breaker's window holds, for EjectionTime times the
	// number of ejections and failed probes in a row, at most
	// MaxEjectionTime; then a connection probe lets it back in.
	EjectionTime, MaxEjectionTime time.Duration
	// ResolveEvery is how often Run looks up the URLs' host names again.
	ResolveEvery time.Duration
}

// DefaultPolicy returns the settings Blueprint runs with.
func DefaultPolicy() Policy {
	return Policy{
		MaxInFlight:        512,
		MaxRetries:         2,
		RetryBackoff:       25 * time.Millisecond,
		RetryMaxBackoff:    250 * time.Millisecond,
		RetryBudget:        0.2,
		RetryBudgetMin:     10,
		BreakerFailureRate: 0.5,
		BreakerMinCalls:    5,
		BreakerWindow:      10 * time.Second,
		BreakerDelay:       5 * time.Second,
		BreakerProbes:      3,
		EjectionTime:       time.Second,
		MaxEjectionTime:    5 * time.Second,
		ResolveEvery:       30 * time.Second,
	}
}

// Validate reports the first setting out of range.
func (p Policy) Validate() error {
	switch {
	case p.MaxInFlight < 1:
		return errors.New("max in flight must be at least 1")
	case p.MaxRetries < 0:
		return errors.New("retries must not be negative")
	case p.RetryBackoff <= 0 || p.RetryMaxBackoff < p.RetryBackoff:
		return errors.New("retry backoff must be more than 0 and at most the max backoff")
	case p.RetryBudget < 0 || p.RetryBudget > 1 || p.RetryBudgetMin < 0:
		return errors.New("retry budget must be from 0 to 1, its minimum not negative")
	case p.BreakerFailureRate <= 0 || p.BreakerFailureRate > 1:
		return errors.New("breaker failure rate must be more than 0 and at most 1")
	case p.BreakerMinCalls < 1 || p.BreakerProbes < 1:
		return errors.New("breaker minimum calls and probes must be at least 1")
	case p.BreakerWindow <= 0 || p.BreakerDelay <= 0 || p.ResolveEvery <= 0:
		return errors.New("breaker window, breaker delay and resolve interval must be more than 0")
	case p.EjectionTime <= 0 || p.MaxEjectionTime < p.EjectionTime:
		return errors.New("ejection time must be more than 0 and at most the max ejection time")
	}
	return nil
}

// Client calls one upstream service. It is safe for concurrent use.
type Client struct {
	cfg            Config
	policy         Policy
	attemptTimeout time.Duration // AttemptTimeout, at most Timeout
	targets        []target
	replicas       atomic.Pointer[[]*replica]
	next           atomic.Uint64 // the balancer's turn
	// lookupNow asks Run for a lookup before its next turn: an ejected
	// replica is often one DNS no longer lists, its replacement one it does.
	lookupNow chan struct{}
	dialer    dialer
	budget    *retryBudget
	executor  failsafe.Executor[*outcome]
	obs       *observer
}

// New returns a client for the upstream. It validates the URLs and the
// policy, and does no I/O: host names are looked up by Run, and dialled by
// name until then.
func New(cfg Config) (*Client, error) {
	c := &Client{cfg: cfg, policy: cfg.Policy, attemptTimeout: cfg.Timeout, lookupNow: make(chan struct{}, 1)}
	if c.policy == (Policy{}) {
		c.policy = DefaultPolicy()
	}
	if err := c.policy.Validate(); err != nil {
		return nil, fmt.Errorf("%s upstream: %w", cfg.Service, err)
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("%s upstream: timeout must be more than 0", cfg.Service)
	}
	if cfg.AttemptTimeout > 0 && cfg.AttemptTimeout < cfg.Timeout {
		c.attemptTimeout = cfg.AttemptTimeout
	}
	for _, raw := range cfg.URLs {
		tg, err := parseTarget(raw)
		if err != nil {
			return nil, fmt.Errorf("%s upstream: %w", cfg.Service, err)
		}
		c.targets = append(c.targets, tg)
	}
	if len(c.targets) == 0 {
		return nil, fmt.Errorf("%s upstream: no URL", cfg.Service)
	}
	if c.cfg.Logger == nil {
		c.cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if c.cfg.Resolver == nil {
		c.cfg.Resolver = &net.Resolver{}
	}
	c.dialer = &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	c.budget = newRetryBudget(c.policy.RetryBudget, c.policy.RetryBudgetMin, time.Now)

	var initial []*replica
	for _, tg := range c.targets {
		initial = append(initial, c.newReplica(tg, tg.hostPort))
	}
	c.replicas.Store(&initial)
	var err error
	if c.obs, err = newObserver(c); err != nil {
		return nil, fmt.Errorf("%s upstream metrics: %w", cfg.Service, err)
	}

	retry := retrypolicy.NewBuilder[*outcome]().
		HandleIf(func(o *outcome, _ error) bool { return o != nil && o.retry }).
		WithMaxRetries(c.policy.MaxRetries).
		WithDelayFunc(func(exec failsafe.ExecutionAttempt[*outcome]) time.Duration {
			return fullJitter(c.backoff(exec.Attempts()))
		}).
		ReturnLastFailure().
		OnRetryScheduled(c.obs.retryScheduled).
		Build()
	// Zero wait: a full bulkhead refuses at once instead of queueing.
	bh := bulkhead.NewBuilder[*outcome](uint(c.policy.MaxInFlight)).WithMaxWaitTime(0).Build()
	c.executor = failsafe.With[*outcome](bh, retry)
	return c, nil
}

// dialer makes connections to replicas; *net.Dialer is one.
type dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Request is one call to the upstream.
type Request struct {
	Method string
	// Path is the path and query on the upstream, e.g. "/orders?limit=20".
	Path string
	Body []byte
	// Header holds extra headers to send (Idempotency-Key, Content-Type).
	Header http.Header
	// Subject is the end user the call is made for; "" when the calling
	// service acts for itself.
	Subject string
}

// safe reports whether sending the request twice does what sending it once
// does: GET and HEAD by definition, any other request when it carries an
// Idempotency-Key the upstream deduplicates on. A POST without one is never
// retried once it may have reached the upstream: the first attempt may have
// done its work. (One that provably did not is failed over, not retried.)
func (r Request) safe() bool {
	return r.Method == http.MethodGet || r.Method == http.MethodHead || r.Header.Get("Idempotency-Key") != ""
}

// Response is an upstream's answer, body fully read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do makes the call. A non-2xx status is not an error here: the caller
// decides what an upstream 404 or 409 means. A 502, 503 or 504 that is still
// the answer after the retries is returned the same way.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	token, err := c.cfg.Minter.Token(c.cfg.Service, req.Subject)
	if err != nil {
		return nil, err
	}
	callerDeadline, _ := ctx.Deadline()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	cl := &call{client: c, req: req, token: token, safe: req.safe(), callerDeadline: callerDeadline}
	o, err := c.executor.WithContext(ctx).GetWithExecution(cl.attempt)
	if o != nil && err == o.err {
		return o.resp, o.err
	}
	// The call ended outside an attempt: the bulkhead refused it, or its
	// context ended while it waited to retry.
	return nil, c.failure(ctx, err)
}

// failure turns an error that did not come from an attempt into an apperr.
func (c *Client) failure(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, bulkhead.ErrFull):
		c.obs.rejected(ctx, reasonBulkheadFull)
		return &apperr.Error{Kind: apperr.Unavailable, Code: "upstream_busy",
			Detail: c.cfg.Service + " has too many calls in flight", RetryAfter: 1, Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return apperr.Wrap(apperr.Timeout, "upstream_timeout", c.cfg.Service+" did not answer in time", err)
	case errors.Is(err, context.Canceled):
		return apperr.Wrap(apperr.Unavailable, "canceled", "the request was canceled", err)
	}
	return apperr.Wrap(apperr.BadGateway, "upstream_error", c.cfg.Service+" failed to answer", err)
}

// backoff is the longest wait before the retry that follows attempt n.
func (c *Client) backoff(n int) time.Duration {
	d := float64(c.policy.RetryBackoff) * math.Pow(2, float64(n-1))
	return time.Duration(min(d, float64(c.policy.RetryMaxBackoff)))
}

// DecodeJSON decodes a 2xx JSON body into v.
func (r *Response) DecodeJSON(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return apperr.Wrap(apperr.BadGateway, "upstream_error", "an upstream answered with invalid JSON", err)
	}
	return nil
}

// Problem parses a problem+json body; ok is false if the body is not one.
func (r *Response) Problem() (httpx.Problem, bool) {
	var p httpx.Problem
	if !strings.HasPrefix(r.Header.Get("Content-Type"), httpx.ContentTypeProblem) {
		return p, false
	}
	if err := json.Unmarshal(r.Body, &p); err != nil || p.Status == 0 {
		return p, false
	}
	return p, true
}

// target is one configured URL.
type target struct {
	base     string // the URL without its trailing slash; paths are appended
	hostPort string // the host as configured, with the scheme's port if none
	host     string
	port     string
	literal  bool // the host is an IP address: nothing to resolve
}

func parseTarget(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return target{}, fmt.Errorf("%q is not an http(s) URL", raw)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	_, ipErr := netip.ParseAddr(u.Hostname())
	return target{
		base:     strings.TrimSuffix(u.String(), "/"),
		hostPort: net.JoinHostPort(u.Hostname(), port),
		host:     u.Hostname(),
		port:     port,
		literal:  ipErr == nil,
	}, nil
}

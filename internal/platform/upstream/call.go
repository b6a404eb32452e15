package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// minAttemptTime is the least time left worth a retry: an attempt with less
// would almost surely time out, adding load and no answer.
const minAttemptTime = 50 * time.Millisecond

// verdict is what an attempt says about the replica that served it.
type verdict int

const (
	// healthy: the replica answered, below 500 (a 404 is an answer), or
	// shed the request with a 503 and Retry-After (it is alive, and
	// protecting itself).
	healthy verdict = iota
	// failed: it could not be reached, answered 5xx or garbage, or used up
	// the attempt's own timeout.
	failed
	// unjudged: the caller gave up, or the caller's own deadline (shorter
	// than ours) passed, here or at the replica (its 504). That says
	// nothing about the replica, and a caller sending short deadlines must
	// not be able to open breakers for everyone else.
	unjudged
)

// outcome is one attempt as the retry policy sees it.
type outcome struct {
	resp    *Response // the answer, if any
	err     error     // an apperr when there was no answer
	replica string    // the address it went to; "" when none was tried
	n       int       // which attempt of the call it was, failovers included
	// reason names a failure for logs and metrics: connect,
	// reset_before_write, timeout, broken_response, shed or status_5xx; ""
	// when the replica answered well.
	reason  string
	verdict verdict
	// retryable: this kind of failure is worth another attempt.
	retryable bool
	// unsent: the request provably never reached the replica, through no
	// doing of the caller's: the connection could not be made, or broke
	// before a byte of the request was written. The replica is ejected,
	// and the request may go to another whatever its method.
	unsent bool
	// elsewhere: another attempt is worth making only on a replica the
	// call has not tried.
	elsewhere bool
	// retry: another attempt will be made (the request is safe, attempts,
	// time and budget remain).
	retry bool
}

// call is one Do: what every attempt needs, and the replicas tried so far.
type call struct {
	client         *Client
	req            Request
	token          string
	safe           bool
	callerDeadline time.Time // zero when the caller set none
	tried          []*replica
	sent           int // attempts made, failovers included
}

// attempt is run by the retry policy, once per attempt, never concurrently.
// A request that never reached its replica is failed over to another within
// the attempt, at once and whatever its method: it was not processed, so
// sending it elsewhere is no retry, and spends neither one of MaxRetries
// nor the retry budget, which are for requests that may have been.
func (cl *call) attempt(exec failsafe.Execution[*outcome]) (*outcome, error) {
	c := cl.client
	ctx := exec.Context()
	n := exec.Attempts()
	if n == 1 {
		c.budget.call()
	}
	o := cl.try(ctx, exec.LastResult())
	for o.unsent && cl.room(ctx, 0) && c.anyReady(cl.tried, true) {
		c.obs.failedOver(ctx, o)
		o = cl.try(ctx, o)
	}
	if o.retryable && cl.safe && n <= c.policy.MaxRetries && cl.room(ctx, c.backoff(n)) && c.anyReady(cl.tried, o.elsewhere) {
		if c.budget.retry() {
			o.retry = true
		} else {
			c.obs.rejected(ctx, reasonBudgetExhausted)
		}
	}
	return o, o.err
}

// try sends the request to the replica the balancer picks, and lets the
// replica's breaker and ejection judge the outcome.
func (cl *call) try(ctx context.Context, prev *outcome) *outcome {
	c := cl.client
	r, err := c.pick(ctx, cl.tried)
	if err != nil {
		return &outcome{err: err}
	}
	cl.tried = append(cl.tried, r)
	cl.sent++
	started := time.Now()
	o := cl.send(ctx, r, prev)
	r.record(ctx, o.verdict)
	if o.unsent {
		c.eject(ctx, r, o, started)
	}
	return o
}

// room reports whether the call's deadline leaves time, after waiting wait,
// for one more attempt worth making.
func (cl *call) room(ctx context.Context, wait time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) >= wait+minAttemptTime
}

// send makes one attempt on r.
func (cl *call) send(ctx context.Context, r *replica, prev *outcome) *outcome {
	c := cl.client
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	// Our deadline (Timeout, AttemptTimeout) running out is the replica's
	// slowness; the caller's running out first is not.
	own := cl.callerDeadline.IsZero() || deadline.Before(cl.callerDeadline)

	var body io.Reader
	if cl.req.Body != nil {
		body = bytes.NewReader(cl.req.Body)
	}
	ctx = withAttempt(ctx, attemptInfo{n: cl.sent, replica: r.addr, prev: prev})
	var w writes
	ctx = httptrace.WithClientTrace(ctx, w.trace())
	// otelhttp's client duration histogram then names the upstream, not
	// only the replica's address (127.0.0.1:3002 in `all` mode).
	labeler := &otelhttp.Labeler{}
	labeler.Add(attrUpstream.String(c.cfg.Service))
	ctx = otelhttp.ContextWithClientLabeler(ctx, labeler)
	hr, err := http.NewRequestWithContext(ctx, cl.req.Method, r.target.base+cl.req.Path, body)
	if err != nil {
		return &outcome{err: fmt.Errorf("%s request: %w", c.cfg.Service, err), verdict: unjudged}
	}
	for k, v := range cl.req.Header {
		hr.Header[k] = v
	}
	hr.Header.Set("Authorization", "Bearer "+cl.token)
	if id := telemetry.RequestID(ctx); id != "" {
		hr.Header.Set(httpx.HeaderRequestID, id)
	}
	hr.Header.Set(httpx.HeaderRequestTimeout, httpx.FormatRequestTimeout(time.Until(deadline)))

	r.inflight.Add(1)
	defer r.inflight.Add(-1)
	resp, err := r.client.Do(hr)
	if err != nil {
		return cl.transportFailure(ctx, r, err, own, w.none())
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		// An answer came: the request reached the replica, even if the
		// transport is still writing the end of it.
		return cl.transportFailure(ctx, r, err, own, false)
	}
	o := &outcome{resp: &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, replica: r.addr, n: cl.sent}
	switch {
	case resp.StatusCode == http.StatusGatewayTimeout && !own:
		// The replica ran out of the caller's time, not of ours.
		o.reason, o.verdict = "status_504", unjudged
	case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		// The replica is alive and shedding load: it refused the request
		// before working on it, and said when to come back. That is no
		// fault of its own — counted, one overloaded route (logins) would
		// open the breaker for every other. A safe request may try another
		// replica, which may have room, never this one again so soon; the
		// budget pays for it, as retries into an overloaded service must be
		// bounded. A keyless POST is not sent again: a Retry-After is the
		// callee's word, not proof, that nothing was done.
		o.reason, o.retryable, o.elsewhere = "shed", true, true
	case resp.StatusCode >= 500:
		o.reason, o.verdict = "status_"+strconv.Itoa(resp.StatusCode), failed
		// A 500 is the replica's bug, likely the same on the next try; 502,
		// 503 and 504 say it could not serve this one now.
		o.retryable = resp.StatusCode == http.StatusBadGateway ||
			resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout
	}
	return o
}

// transportFailure classifies a failure to get an answer, or the whole of
// one.
// Only failures that prove the request never left are unsent: a refused or
// failed dial, or a connection that broke before a byte was written
// (nothingWritten). A timeout, or a reset once the request was written,
// proves nothing — the replica may have done the work.
func (cl *call) transportFailure(ctx context.Context, r *replica, err error, own, nothingWritten bool) *outcome {
	service := cl.client.cfg.Service
	o := &outcome{replica: r.addr, n: cl.sent}
	unavailable := &apperr.Error{Kind: apperr.Unavailable, Code: "upstream_unavailable",
		Detail: service + " is unavailable", RetryAfter: 1, Err: err}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		o.err = apperr.Wrap(apperr.Timeout, "upstream_timeout", service+" did not answer in time", err)
		o.reason, o.verdict, o.retryable = "timeout", failed, true
		if !own {
			o.verdict, o.retryable = unjudged, false
		}
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		o.err = apperr.Wrap(apperr.Unavailable, "canceled", "the request was canceled", err)
		o.verdict = unjudged
	case isDialError(err):
		// Refused, unreachable, or not connected within ConnectTimeout.
		o.err = unavailable
		o.reason, o.verdict, o.retryable, o.unsent, o.elsewhere = "connect", failed, true, true, true
	case nothingWritten:
		o.err = unavailable
		o.reason, o.verdict, o.retryable, o.unsent, o.elsewhere = "reset_before_write", failed, true, true, true
	default:
		// Reset, closed mid-answer, not HTTP: the replica's failure. A safe
		// request may be sent again; the others never are.
		o.err = apperr.Wrap(apperr.BadGateway, "upstream_error", service+" failed to answer", err)
		o.reason, o.verdict, o.retryable = "broken_response", failed, true
	}
	return o
}

func isDialError(err error) bool {
	opErr, ok := errors.AsType[*net.OpError](err)
	return ok && opErr.Op == "dial"
}

// countingConn counts the bytes written on a connection, so that a failed
// attempt can tell whether any of its request left.
type countingConn struct {
	net.Conn
	written atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// writes follows the connection one attempt is sent on. The transport may
// hand it a pooled connection that has carried other requests: what counts
// is what was written since the attempt got it.
type writes struct {
	conn  *countingConn // nil until the attempt has a connection
	start int64         // conn's count then
}

// trace notes the connection the transport gives the attempt (again, if
// the transport itself sends the request anew on a fresh connection).
func (w *writes) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		conn := info.Conn
		if tc, ok := conn.(*tls.Conn); ok {
			conn = tc.NetConn()
		}
		if w.conn, _ = conn.(*countingConn); w.conn != nil {
			w.start = w.conn.written.Load()
		}
	}}
}

// none reports whether the attempt had a connection and wrote nothing on
// it: the request never left. It is exact once the transport is done
// writing, as it is when it returns an error without an answer: it waits
// for its writer first.
func (w *writes) none() bool { return w.conn != nil && w.conn.written.Load() == w.start }

// fullJitter returns a random duration in [0, d].
func fullJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

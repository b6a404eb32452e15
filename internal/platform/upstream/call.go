package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
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
	// healthy: the replica answered, below 500 (a 404 is an answer).
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
	// reason names a failure for logs and metrics: connect, timeout,
	// broken_response or status_5xx; "" when the replica answered well.
	reason  string
	verdict verdict
	// retryable: this kind of failure is worth another attempt.
	retryable bool
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
}

// attempt is run by the retry policy, once per attempt, never concurrently.
func (cl *call) attempt(exec failsafe.Execution[*outcome]) (*outcome, error) {
	c := cl.client
	ctx := exec.Context()
	n := exec.Attempts()
	if n == 1 {
		c.budget.call()
	}
	r, err := c.pick(ctx, cl.tried)
	if err != nil {
		return &outcome{err: err}, err
	}
	cl.tried = append(cl.tried, r)
	o := cl.send(ctx, r, n, exec.LastResult())
	r.record(ctx, o.verdict)

	if o.retryable && cl.safe && n <= c.policy.MaxRetries && cl.room(ctx, n) && c.anyReady() {
		if c.budget.retry() {
			o.retry = true
		} else {
			c.obs.rejected(ctx, reasonBudgetExhausted)
		}
	}
	return o, o.err
}

// room reports whether the call's deadline leaves time, after the longest
// backoff, for one more attempt worth making.
func (cl *call) room(ctx context.Context, n int) bool {
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) >= cl.client.backoff(n)+minAttemptTime
}

// send makes one attempt on r.
func (cl *call) send(ctx context.Context, r *replica, n int, prev *outcome) *outcome {
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
	ctx = withAttempt(ctx, attemptInfo{n: n, replica: r.addr, prev: prev})
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
		return cl.transportFailure(ctx, r, err, own)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return cl.transportFailure(ctx, r, err, own)
	}
	o := &outcome{resp: &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, replica: r.addr}
	switch {
	case resp.StatusCode == http.StatusGatewayTimeout && !own:
		// The replica ran out of the caller's time, not of ours.
		o.reason, o.verdict = "status_504", unjudged
	case resp.StatusCode >= 500:
		o.reason, o.verdict = "status_"+strconv.Itoa(resp.StatusCode), failed
		// A 500 is the replica's bug, likely the same on the next try; 502,
		// 503 and 504 say it could not serve this one now.
		o.retryable = resp.StatusCode == http.StatusBadGateway ||
			resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout
	}
	return o
}

// transportFailure classifies a failure to get an answer at all.
func (cl *call) transportFailure(ctx context.Context, r *replica, err error, own bool) *outcome {
	service := cl.client.cfg.Service
	o := &outcome{replica: r.addr}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		o.err = apperr.Wrap(apperr.Timeout, "upstream_timeout", service+" did not answer in time", err)
		o.reason, o.verdict, o.retryable = "timeout", failed, true
		if !own {
			o.verdict, o.retryable = unjudged, false
		}
	case errors.Is(err, context.Canceled):
		o.err = apperr.Wrap(apperr.Unavailable, "canceled", "the request was canceled", err)
		o.verdict = unjudged
	case isDialError(err):
		o.err = &apperr.Error{Kind: apperr.Unavailable, Code: "upstream_unavailable",
			Detail: service + " is unavailable", RetryAfter: 1, Err: err}
		o.reason, o.verdict, o.retryable = "connect", failed, true
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

// fullJitter returns a random duration in [0, d].
func fullJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

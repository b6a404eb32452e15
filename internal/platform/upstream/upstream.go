// Package upstream is the HTTP client every Blueprint service uses to call
// another: the gateway calling users, orders and notifications, and the
// notifications worker calling users. Each call
//
//   - carries a fresh internal token for the callee's audience, on behalf
//     of the end user when there is one;
//   - carries the trace context (a client span is a child of the caller's
//     span) and the request id;
//   - has a connect timeout and a request deadline, so an upstream that
//     hangs costs the caller a bounded wait, never a stuck request;
//   - is spread over every address of the upstream.
//
// Failures come back as apperr values the caller can map: Timeout when the
// deadline passed, Unavailable when no connection could be made, BadGateway
// when the upstream answered with something unusable.
package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

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
	// Timeout bounds one call, from dial to the last body byte.
	Timeout time.Duration
	// ConnectTimeout bounds establishing a connection.
	ConnectTimeout time.Duration
	// Minter makes the caller's internal tokens.
	Minter *auth.Minter
	// Telemetry of the calling service.
	Telemetry *telemetry.Providers
}

// Client calls one upstream service.
type Client struct {
	cfg  Config
	urls []*url.URL
	http *http.Client
	next atomic.Uint64
}

// New returns a client for the upstream. It validates the URLs.
func New(cfg Config) (*Client, error) {
	c := &Client{cfg: cfg}
	for _, raw := range cfg.URLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s upstream: %q is not an http(s) URL", cfg.Service, raw)
		}
		c.urls = append(c.urls, u)
	}
	if len(c.urls) == 0 {
		return nil, fmt.Errorf("%s upstream: no URL", cfg.Service)
	}
	transport := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		ForceAttemptHTTP2:     false,
	}
	c.http = &http.Client{
		Transport: otelhttp.NewTransport(transport,
			otelhttp.WithTracerProvider(cfg.Telemetry.Tracer),
			otelhttp.WithMeterProvider(cfg.Telemetry.Meter),
			otelhttp.WithPropagators(cfg.Telemetry.Propagator),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
				return r.Method + " " + cfg.Service
			}),
		),
		// Internal APIs never redirect; following one would resend the token.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
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

// Response is an upstream's answer, body fully read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do makes the call. A non-2xx status is not an error here: the caller
// decides what an upstream 404 or 409 means.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	token, err := c.cfg.Minter.Token(c.cfg.Service, req.Subject)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	base := c.urls[c.next.Add(1)%uint64(len(c.urls))]
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, strings.TrimSuffix(base.String(), "/")+req.Path, body)
	if err != nil {
		return nil, fmt.Errorf("%s request: %w", c.cfg.Service, err)
	}
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	hr.Header.Set("Authorization", "Bearer "+token)
	if id := telemetry.RequestID(ctx); id != "" {
		hr.Header.Set(httpx.HeaderRequestID, id)
	}

	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// transportError classifies a failure to get an answer at all.
func (c *Client) transportError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return apperr.Wrap(apperr.Timeout, "upstream_timeout",
			c.cfg.Service+" did not answer in time", err)
	case errors.Is(err, context.Canceled):
		return apperr.Wrap(apperr.Unavailable, "canceled", "the request was canceled", err)
	}
	if opErr, ok := errors.AsType[*net.OpError](err); ok && opErr.Op == "dial" {
		return &apperr.Error{Kind: apperr.Unavailable, Code: "upstream_unavailable",
			Detail: c.cfg.Service + " is unavailable", RetryAfter: 1, Err: err}
	}
	return apperr.Wrap(apperr.BadGateway, "upstream_error", c.cfg.Service+" failed to answer", err)
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

package upstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// testServices are the identities of a full deployment.
var testServices = []string{"gateway", "users", "orders", "notifications"}

// callWait bounds how long a test waits for one Do. It is far above every
// configured timeout: tests check that a call returns, never how fast.
const callWait = 30 * time.Second

// caller is the gateway's side of a call: its keys, its telemetry (with a
// recorder on its tracer) and its token minter.
type caller struct {
	kr     *auth.Keyring
	tel    *telemetry.Providers
	spans  *tracetest.SpanRecorder
	minter *auth.Minter
}

// recordingSpans is an environment that records spans with no exporter, so
// that the tests' span recorders see them.
func recordingSpans(name string) string {
	if name == "OTEL_TRACES_SAMPLER" {
		return "parentbased_always_on"
	}
	return ""
}

func newTestCaller(t testing.TB) *caller {
	t.Helper()
	kr, err := auth.GenerateKeyring(testServices)
	if err != nil {
		t.Fatalf("GenerateKeyring(%v) error = %v", testServices, err)
	}
	tel, err := telemetry.New(context.Background(), "gateway", "test", recordingSpans)
	if err != nil {
		t.Fatalf("telemetry.New() error = %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	tp, ok := tel.Tracer.(*sdktrace.TracerProvider)
	if !ok {
		t.Fatalf("Tracer is %T, want *sdktrace.TracerProvider", tel.Tracer)
	}
	rec := tracetest.NewSpanRecorder()
	tp.RegisterSpanProcessor(rec)
	return &caller{kr: kr, tel: tel, spans: rec, minter: auth.NewMinter("gateway", kr.Identities["gateway"], time.Now)}
}

// client returns a client for the named upstream at urls.
func (c *caller) client(t testing.TB, service string, timeout time.Duration, urls ...string) *upstream.Client {
	t.Helper()
	cl, err := upstream.New(upstream.Config{
		Service:        service,
		URLs:           urls,
		Timeout:        timeout,
		ConnectTimeout: 2 * time.Second,
		Minter:         c.minter,
		Telemetry:      c.tel,
	})
	if err != nil {
		t.Fatalf("New(%v) error = %v, want nil", urls, err)
	}
	return cl
}

// verifier is how the upstream service checks the caller's tokens.
func (c *caller) verifier(t *testing.T, service string) *auth.ServiceVerifier {
	t.Helper()
	v, err := auth.NewServiceVerifier(service, []string{"gateway"}, c.kr.Bundle, time.Now)
	if err != nil {
		t.Fatalf("NewServiceVerifier(%s) error = %v", service, err)
	}
	return v
}

// newServer starts an upstream for the test.
func newServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// seen is what an upstream saw of one request.
type seen struct {
	method, uri string
	header      http.Header
	body        []byte
	// parent is the span context the request's trace headers carried.
	parent trace.SpanContext
}

// recordingServer answers 200 "ok" and hands each request to the test.
func recordingServer(t *testing.T) (*httptest.Server, <-chan seen) {
	t.Helper()
	ch := make(chan seen, 100)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ch <- seen{method: r.Method, uri: r.RequestURI, header: r.Header.Clone(), body: body,
			parent: trace.SpanContextFromContext(ctx)}
		_, _ = io.WriteString(w, "ok")
	})
	return srv, ch
}

// do runs cl.Do and fails the test if it has not returned after callWait.
func do(t *testing.T, ctx context.Context, cl *upstream.Client, req upstream.Request) (*upstream.Response, error) {
	t.Helper()
	type result struct {
		resp *upstream.Response
		err  error
	}
	done := make(chan result, 1)
	go func() { // ends when Do returns
		resp, err := cl.Do(ctx, req)
		done <- result{resp, err}
	}()
	timer := time.NewTimer(callWait)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.resp, r.err
	case <-timer.C:
		t.Errorf("Do(%s %s) still running after %s, want it to return", req.Method, req.Path, callWait)
		r := <-done // do not leak it: wait however long it takes
		return r.resp, r.err
	}
}

// mustDo is do for calls that must succeed.
func mustDo(t *testing.T, ctx context.Context, cl *upstream.Client, req upstream.Request) *upstream.Response {
	t.Helper()
	resp, err := do(t, ctx, cl, req)
	if err != nil {
		t.Fatalf("Do(%s %s) error = %v, want nil", req.Method, req.Path, err)
	}
	return resp
}

// wantKind fails the test unless err is an apperr of the given kind.
func wantKind(t *testing.T, call string, resp *upstream.Response, err error, kind apperr.Kind) *apperr.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s = status %d, nil error, want an error of kind %v", call, resp.Status, kind)
	}
	ae, ok := errors.AsType[*apperr.Error](err)
	if !ok {
		t.Fatalf("%s error = %v (%T), want an *apperr.Error of kind %v", call, err, err, kind)
	}
	if ae.Kind != kind {
		t.Errorf("%s error kind = %v (%v), want %v", call, ae.Kind, err, kind)
	}
	return ae
}

// closedURL returns an http URL on a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return "http://" + addr
}

func TestDoSendsAnInternalTokenForTheUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		service string
		subject string
		want    auth.Caller
	}{
		{name: "on behalf of a user", service: "users", subject: "user-42", want: auth.Caller{Service: "gateway", Subject: "user-42"}},
		{name: "for the calling service itself", service: "orders", subject: "", want: auth.Caller{Service: "gateway", Subject: "gateway"}},
		{name: "to another audience", service: "notifications", subject: "user-7", want: auth.Caller{Service: "gateway", Subject: "user-7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			srv, reqs := recordingServer(t)
			cl := c.client(t, tt.service, 5*time.Second, srv.URL)

			// A header the caller passes cannot replace the minted token.
			mustDo(t, context.Background(), cl, upstream.Request{
				Method: http.MethodGet, Path: "/x", Subject: tt.subject,
				Header: http.Header{"Authorization": {"Bearer forged"}},
			})
			r := <-reqs
			authz := r.header.Values("Authorization")
			if len(authz) != 1 || !strings.HasPrefix(authz[0], "Bearer ") {
				t.Fatalf("Authorization headers = %q, want one \"Bearer <token>\"", authz)
			}
			token := strings.TrimPrefix(authz[0], "Bearer ")
			got, err := c.verifier(t, tt.service).Verify(token)
			if err != nil {
				t.Fatalf("%s verifier: Verify(token) error = %v, want nil", tt.service, err)
			}
			if got != tt.want {
				t.Errorf("%s verifier: Verify(token) = %+v, want %+v", tt.service, got, tt.want)
			}
			// The token is bound to this upstream: any other refuses it.
			for _, other := range testServices[1:] {
				if other == tt.service {
					continue
				}
				if _, err := c.verifier(t, other).Verify(token); err == nil {
					t.Errorf("%s verifier accepted a token minted for %s, want it refused", other, tt.service)
				}
			}
		})
	}
}

func TestDoSendsTheRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		base       func(srvURL string) string
		req        upstream.Request
		wantURI    string
		wantHeader map[string]string
	}{
		{
			name:    "GET with a query",
			base:    func(u string) string { return u },
			req:     upstream.Request{Method: http.MethodGet, Path: "/orders?limit=20&cursor=abc"},
			wantURI: "/orders?limit=20&cursor=abc",
		},
		{
			name: "POST with a body and extra headers",
			base: func(u string) string { return u },
			req: upstream.Request{
				Method: http.MethodPost, Path: "/orders", Body: []byte(`{"sku":"A-1","qty":2}`),
				Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"key-1"}},
			},
			wantURI:    "/orders",
			wantHeader: map[string]string{"Content-Type": "application/json", "Idempotency-Key": "key-1"},
		},
		{
			name:    "base URL with a trailing slash",
			base:    func(u string) string { return u + "/" },
			req:     upstream.Request{Method: http.MethodGet, Path: "/users/u-1"},
			wantURI: "/users/u-1",
		},
		{
			name:    "base URL with a path prefix",
			base:    func(u string) string { return u + "/internal/" },
			req:     upstream.Request{Method: http.MethodDelete, Path: "/users/u-1"},
			wantURI: "/internal/users/u-1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			srv, reqs := recordingServer(t)
			cl := c.client(t, "orders", 5*time.Second, tt.base(srv.URL))
			resp := mustDo(t, context.Background(), cl, tt.req)
			if resp.Status != http.StatusOK || string(resp.Body) != "ok" {
				t.Errorf("Do() = %d %q, want 200 \"ok\"", resp.Status, resp.Body)
			}
			r := <-reqs
			if r.method != tt.req.Method || r.uri != tt.wantURI {
				t.Errorf("upstream saw %s %s, want %s %s", r.method, r.uri, tt.req.Method, tt.wantURI)
			}
			if !bytes.Equal(r.body, tt.req.Body) {
				t.Errorf("upstream saw body %q, want %q", r.body, tt.req.Body)
			}
			for k, want := range tt.wantHeader {
				if got := r.header.Get(k); got != want {
					t.Errorf("upstream saw %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestDoForwardsTheRequestID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ctx  context.Context
		want []string
	}{
		{name: "request id in the context", ctx: telemetry.WithRequestID(context.Background(), "req-abc.1"), want: []string{"req-abc.1"}},
		{name: "no request id", ctx: context.Background(), want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			srv, reqs := recordingServer(t)
			cl := c.client(t, "users", 5*time.Second, srv.URL)
			mustDo(t, tt.ctx, cl, upstream.Request{Method: http.MethodGet, Path: "/x"})
			if got := (<-reqs).header.Values(httpx.HeaderRequestID); !slices.Equal(got, tt.want) {
				t.Errorf("upstream saw %s = %q, want %q", httpx.HeaderRequestID, got, tt.want)
			}
		})
	}
}

func TestDoPropagatesTheTrace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		inRequest bool // whether the caller is serving a traced request
	}{
		{name: "within the caller's span", inRequest: true},
		{name: "with no span in the context", inRequest: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			srv, reqs := recordingServer(t)
			cl := c.client(t, "users", 5*time.Second, srv.URL)

			ctx := context.Background()
			var parent trace.SpanContext
			if tt.inRequest {
				var span trace.Span
				ctx, span = c.tel.Tracer.Tracer("test").Start(ctx, "GET /users/me")
				parent = span.SpanContext()
				defer span.End()
			}
			mustDo(t, ctx, cl, upstream.Request{Method: http.MethodGet, Path: "/users/u-1"})
			r := <-reqs
			if r.header.Get("traceparent") == "" {
				t.Fatalf("upstream saw no traceparent header; headers %v", r.header)
			}

			// The upstream's parent is the client span, itself a child of
			// the caller's span: one trace across the hop.
			var client sdktrace.ReadOnlySpan
			for _, s := range c.spans.Ended() {
				if s.SpanKind() == trace.SpanKindClient {
					client = s
				}
			}
			if client == nil {
				t.Fatalf("no client span recorded; spans %v", c.spans.Ended())
			}
			if got, want := client.Name(), "GET users"; got != want {
				t.Errorf("client span name = %q, want %q", got, want)
			}
			if got, want := r.parent.SpanID(), client.SpanContext().SpanID(); got != want {
				t.Errorf("upstream's parent span = %s, want the client span %s", got, want)
			}
			if got, want := r.parent.TraceID(), client.SpanContext().TraceID(); got != want {
				t.Errorf("upstream's trace = %s, want the client span's %s", got, want)
			}
			if !tt.inRequest {
				return
			}
			if got, want := r.parent.TraceID(), parent.TraceID(); got != want {
				t.Errorf("upstream's trace = %s, want the caller's %s", got, want)
			}
			if got, want := client.Parent().SpanID(), parent.SpanID(); got != want {
				t.Errorf("client span's parent = %s, want the caller's span %s", got, want)
			}
		})
	}
}

func TestDoTimesOut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler func(release <-chan struct{}) http.HandlerFunc
	}{
		{
			name: "no answer at all",
			handler: func(release <-chan struct{}) http.HandlerFunc {
				return func(_ http.ResponseWriter, r *http.Request) {
					select {
					case <-r.Context().Done():
					case <-release:
					}
				}
			},
		},
		{
			name: "headers, then the body stalls",
			handler: func(release <-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", "100")
					w.WriteHeader(http.StatusOK)
					_, _ = io.WriteString(w, "partial")
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
					case <-release:
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			release := make(chan struct{})
			srv := newServer(t, tt.handler(release))
			t.Cleanup(func() { close(release) }) // runs before srv.Close, so no handler is left waiting
			cl := c.client(t, "users", 200*time.Millisecond, srv.URL)

			resp, err := do(t, context.Background(), cl, upstream.Request{Method: http.MethodGet, Path: "/slow"})
			ae := wantKind(t, "Do(GET /slow)", resp, err, apperr.Timeout)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Do(GET /slow) error = %v, want it to wrap context.DeadlineExceeded", err)
			}
			if ae.Code != "upstream_timeout" {
				t.Errorf("Do(GET /slow) code = %q, want %q", ae.Code, "upstream_timeout")
			}
		})
	}
}

func TestDoWhenTheCallerGivesUp(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	started := make(chan struct{})
	srv := newServer(t, func(_ http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})
	cl := c.client(t, "users", time.Minute, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // ends once the request reached the upstream, or when the test returns
		select {
		case <-started:
		case <-ctx.Done():
		}
		cancel()
	}()
	resp, err := do(t, ctx, cl, upstream.Request{Method: http.MethodGet, Path: "/x"})
	if err == nil {
		t.Fatalf("Do() with a canceled context = %d, nil, want an error", resp.Status)
	}
	// The upstream did nothing wrong: this must not count as its timeout.
	if !errors.Is(err, context.Canceled) || apperr.Is(err, apperr.Timeout) {
		t.Errorf("Do() with a canceled context error = %v (kind %v), want context.Canceled, not a Timeout", err, apperr.KindOf(err))
	}
}

func TestDoOnAClosedPortIsUnavailable(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	cl := c.client(t, "users", 5*time.Second, closedURL(t))
	resp, err := do(t, context.Background(), cl, upstream.Request{Method: http.MethodGet, Path: "/x"})
	ae := wantKind(t, "Do() to a closed port", resp, err, apperr.Unavailable)
	if ae.RetryAfter <= 0 {
		t.Errorf("Do() to a closed port RetryAfter = %d, want > 0", ae.RetryAfter)
	}
	if !strings.Contains(ae.Detail, "users") {
		t.Errorf("Do() to a closed port detail = %q, want it to name the upstream", ae.Detail)
	}
}

func TestDoOnABrokenResponseIsBadGateway(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		write string // raw bytes the upstream sends before closing the connection
	}{
		{name: "closed before any response", write: ""},
		{name: "closed mid-body", write: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":"},
		{name: "not HTTP", write: "SSH-2.0-OpenSSH_9.6\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
				conn, buf, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("Hijack() error = %v", err)
					return
				}
				defer conn.Close()
				_, _ = buf.WriteString(tt.write)
				_ = buf.Flush()
			})
			cl := c.client(t, "orders", 5*time.Second, srv.URL)
			resp, err := do(t, context.Background(), cl, upstream.Request{Method: http.MethodPost, Path: "/orders", Body: []byte("{}")})
			wantKind(t, "Do(POST /orders)", resp, err, apperr.BadGateway)
		})
	}
}

func TestDoReturnsEveryStatusAsAResponse(t *testing.T) {
	t.Parallel()
	// The caller decides what an upstream's 404 or 409 means: the original
	// turned every one of them into a 500.
	for _, status := range []int{200, 201, 204, 400, 401, 404, 409, 422, 429, 500, 502, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			body := ""
			if status != http.StatusNoContent {
				body = fmt.Sprintf(`{"status":%d}`, status)
			}
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(status)
				_, _ = io.WriteString(w, body)
			})
			cl := c.client(t, "users", 5*time.Second, srv.URL)
			resp := mustDo(t, context.Background(), cl, upstream.Request{Method: http.MethodGet, Path: "/x"})
			if resp.Status != status || string(resp.Body) != body {
				t.Errorf("Do() = %d %q, want %d %q", resp.Status, resp.Body, status, body)
			}
			if got := resp.Header.Get("Retry-After"); got != "7" {
				t.Errorf("Do() Retry-After = %q, want %q", got, "7")
			}
		})
	}
}

func TestDoDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	// Following a redirect would send the internal token wherever the
	// Location points.
	for _, status := range []int{301, 302, 303, 307, 308} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			var followed atomic.Int64
			elsewhere := newServer(t, func(http.ResponseWriter, *http.Request) { followed.Add(1) })
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, elsewhere.URL+"/steal", status)
			})
			cl := c.client(t, "users", 5*time.Second, srv.URL)
			resp := mustDo(t, context.Background(), cl, upstream.Request{Method: http.MethodGet, Path: "/x"})
			if resp.Status != status {
				t.Errorf("Do() status = %d, want %d (the redirect itself)", resp.Status, status)
			}
			if got, want := resp.Header.Get("Location"), elsewhere.URL+"/steal"; got != want {
				t.Errorf("Do() Location = %q, want %q", got, want)
			}
			if n := followed.Load(); n != 0 {
				t.Errorf("redirect target got %d requests, want 0", n)
			}
		})
	}
}

func TestDoCapsTheBodyAtOneMiB(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	tests := []struct {
		name string
		size int
		want int
	}{
		{name: "empty", size: 0, want: 0},
		{name: "small", size: 1024, want: 1024},
		{name: "exactly 1 MiB", size: mib, want: mib},
		{name: "1 MiB and a byte", size: mib + 1, want: mib},
		{name: "4 MiB", size: 4 * mib, want: mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t)
			body := bytes.Repeat([]byte("0123456789abcdef"), tt.size/16+1)[:tt.size]
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write(body) // fails once the client stops reading: expected
			})
			cl := c.client(t, "users", 10*time.Second, srv.URL)
			resp := mustDo(t, context.Background(), cl, upstream.Request{Method: http.MethodGet, Path: "/big"})
			if len(resp.Body) != tt.want {
				t.Errorf("Do() body is %d bytes, want %d", len(resp.Body), tt.want)
			}
			if !bytes.Equal(resp.Body, body[:len(resp.Body)]) {
				t.Errorf("Do() body is not the first %d bytes the upstream sent", len(resp.Body))
			}
		})
	}
}

func TestDoSpreadsCallsRoundRobin(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t)
	const replicas, calls = 3, 30
	var mu sync.Mutex
	hits := map[string]int{}
	var urls []string
	for i := range replicas {
		name := fmt.Sprintf("replica-%d", i)
		srv := newServer(t, func(http.ResponseWriter, *http.Request) {
			mu.Lock()
			hits[name]++
			mu.Unlock()
		})
		urls = append(urls, srv.URL)
	}
	cl := c.client(t, "orders", 5*time.Second, urls...)
	for range calls {
		mustDo(t, context.Background(), cl, upstream.Request{Method: http.MethodGet, Path: "/x"})
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range replicas {
		name := fmt.Sprintf("replica-%d", i)
		if got, want := hits[name], calls/replicas; got != want {
			t.Errorf("%s got %d of %d calls, want %d (hits %v)", name, got, calls, want, hits)
		}
	}
}

func TestNewValidatesURLs(t *testing.T) {
	t.Parallel()
	tel, err := telemetry.New(context.Background(), "gateway", "test", func(string) string { return "" })
	if err != nil {
		t.Fatalf("telemetry.New() error = %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	tests := []struct {
		name    string
		urls    []string
		wantErr string // a substring of the error; "" means no error
	}{
		{name: "one http URL", urls: []string{"http://users:3002"}},
		{name: "https and several replicas", urls: []string{"https://a.internal", "http://b:3002/"}},
		{name: "nil list", urls: nil, wantErr: "users upstream: no URL"},
		{name: "empty list", urls: []string{}, wantErr: "users upstream: no URL"},
		{name: "nats URL", urls: []string{"nats://users:4222"}, wantErr: `"nats://users:4222"`},
		{name: "ftp URL", urls: []string{"ftp://users"}, wantErr: `"ftp://users"`},
		{name: "host:port without a scheme", urls: []string{"users:3002"}, wantErr: `"users:3002"`},
		{name: "a path only", urls: []string{"/users"}, wantErr: `"/users"`},
		{name: "no host", urls: []string{"http://"}, wantErr: `"http://"`},
		{name: "unparsable", urls: []string{"http://[::1"}, wantErr: `"http://[::1"`},
		{name: "empty string", urls: []string{""}, wantErr: `""`},
		{name: "one bad among good", urls: []string{"http://a:3002", "tcp://b:3002"}, wantErr: `"tcp://b:3002"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := upstream.New(upstream.Config{Service: "users", URLs: tt.urls, Timeout: time.Second, Telemetry: tel})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("New(%q) error = %v, want nil", tt.urls, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("New(%q) error = nil, want one containing %s", tt.urls, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("New(%q) error = %q, want it to contain %s", tt.urls, err, tt.wantErr)
			}
		})
	}
}

func TestResponseProblem(t *testing.T) {
	t.Parallel()
	const problem = `{"type":"https://blueprint.dev/problems/not_found","title":"Not Found","status":404,"detail":"no such user","traceId":"4bf92f3577b34da6a3ce929d0e0e4736"}`
	tests := []struct {
		name        string
		contentType string
		body        string
		wantOK      bool
	}{
		{name: "problem+json", contentType: httpx.ContentTypeProblem, body: problem, wantOK: true},
		{name: "problem+json with a charset", contentType: httpx.ContentTypeProblem + "; charset=utf-8", body: problem, wantOK: true},
		{name: "plain JSON of the same shape", contentType: "application/json", body: problem},
		{name: "no content type", contentType: "", body: problem},
		{name: "HTML error page", contentType: "text/html", body: "<h1>502 Bad Gateway</h1>"},
		{name: "problem+json that is not JSON", contentType: httpx.ContentTypeProblem, body: "{"},
		{name: "problem+json without a status", contentType: httpx.ContentTypeProblem, body: `{"title":"Not Found"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &upstream.Response{Status: 404, Header: http.Header{}, Body: []byte(tt.body)}
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			p, ok := r.Problem()
			if ok != tt.wantOK {
				t.Fatalf("Problem() ok = %v, want %v (content type %q, body %s)", ok, tt.wantOK, tt.contentType, tt.body)
			}
			if !ok {
				return
			}
			want := httpx.Problem{
				Type: "https://blueprint.dev/problems/not_found", Title: "Not Found", Status: 404,
				Detail: "no such user", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
			}
			if p.Type != want.Type || p.Title != want.Title || p.Status != want.Status || p.Detail != want.Detail || p.TraceID != want.TraceID {
				t.Errorf("Problem() = %+v, want %+v", p, want)
			}
		})
	}
}

func TestResponseDecodeJSON(t *testing.T) {
	t.Parallel()
	type user struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	}
	tests := []struct {
		name    string
		body    string
		want    user
		wantErr bool
	}{
		{name: "valid", body: `{"id":"u-1","email":"a@example.com"}`, want: user{ID: "u-1", Email: "a@example.com"}},
		{name: "truncated", body: `{"id":"u-1","em`, wantErr: true},
		{name: "empty", body: ``, wantErr: true},
		{name: "HTML", body: `<html>oops</html>`, wantErr: true},
		{name: "wrong type", body: `{"id":42}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &upstream.Response{Status: 200, Header: http.Header{}, Body: []byte(tt.body)}
			var got user
			err := r.DecodeJSON(&got)
			if !tt.wantErr {
				if err != nil || got != tt.want {
					t.Errorf("DecodeJSON(%s) = %+v, %v, want %+v, nil", tt.body, got, err, tt.want)
				}
				return
			}
			if k := apperr.KindOf(err); err == nil || k != apperr.BadGateway {
				t.Errorf("DecodeJSON(%s) error = %v (kind %v), want kind %v", tt.body, err, k, apperr.BadGateway)
			}
		})
	}
}

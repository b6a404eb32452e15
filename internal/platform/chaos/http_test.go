package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// response is what a test reads back from a server.
type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle connection outlives the test
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: raw}
}

// problem decodes a problem+json answer with the given status.
func (r response) problem(t *testing.T, status int) httpx.Problem {
	t.Helper()
	if r.status != status || r.header.Get("Content-Type") != httpx.ContentTypeProblem {
		t.Fatalf("answer = %d %s %s, want %d problem+json", r.status, r.header.Get("Content-Type"), r.body, status)
	}
	var p httpx.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem %s: %v", r.body, err)
	}
	return p
}

// newTestService serves a router with the test routes through the
// middleware of a real main listener, with the injector's route hook, and
// records the server spans.
func newTestService(t *testing.T, ti *testInjector) (string, *tracetest.SpanRecorder) {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tel := telemetry.Providers{
		Tracer:     sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		Meter:      sdkmetric.NewMeterProvider(),
		Propagator: propagation.TraceContext{},
	}
	rt := httpx.NewRouter()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	rt.Handle(routeGet, ok)
	rt.Handle(routePost, ok)
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv := httptest.NewServer(httpx.WithRouteHook(httpx.Instrument(rt, logger, tel, slog.LevelInfo), ti.HookRoute))
	t.Cleanup(srv.Close)
	return srv.URL, spans
}

// TestMiddleware: rules on the main listener act on the route pattern the
// request was routed by; the exact route's rule beats "*"; an injected
// error is a 503 chaos problem with the trace id, an error span and an
// event; a path no route matches is left alone.
func TestMiddleware(t *testing.T) {
	t.Parallel()
	ti := newTestInjector(t)
	url, spans := newTestService(t, ti)

	if r := do(t, "GET", url+"/items/7", nil); r.status != 200 {
		t.Fatalf("GET /items/7 without rules = %d, want 200", r.status)
	}
	ti.mustSet(t, chaos.Rule{Route: routeGet, ErrorRate: 1})
	p := do(t, "GET", url+"/items/7", nil).problem(t, http.StatusServiceUnavailable)
	if p.Type != "urn:blueprint:problem:chaos" || p.TraceID == "" || !strings.Contains(p.Detail, routeGet) {
		t.Errorf("problem = %+v, want type urn:blueprint:problem:chaos, a trace id, and the route in the detail", p)
	}
	if r := do(t, "POST", url+"/items", "{}"); r.status != 200 {
		t.Errorf("POST /items, another route, = %d, want 200", r.status)
	}

	ti.mustSet(t, chaos.Rule{Route: chaos.AllRoutes, ErrorRate: 1})
	ti.mustSet(t, chaos.Rule{Route: routeGet, LatencyMs: 1}) // the route's own rule wins over *
	if r := do(t, "GET", url+"/items/7", nil); r.status != 200 {
		t.Errorf("GET /items/7 with its own latency rule and a * error rule = %d, want 200", r.status)
	}
	do(t, "POST", url+"/items", "{}").problem(t, http.StatusServiceUnavailable)
	do(t, "GET", url+"/nope", nil).problem(t, http.StatusNotFound)
	do(t, "DELETE", url+"/items", nil).problem(t, http.StatusMethodNotAllowed)

	want := map[string]int64{routeGet + " error": 1, routeGet + " latency": 1, routePost + " error": 1}
	if got := ti.injected(t); !equalCounts(got, want) {
		t.Errorf("blueprint.chaos.injected = %v, want %v", got, want)
	}
	var events []string
	for _, s := range spans.Ended() {
		for _, e := range s.Events() {
			if e.Name != "chaos.injected" {
				continue
			}
			events = append(events, s.Name())
			if slices.Contains(e.Attributes, attribute.String("kind", "error")) && s.Status().Code != codes.Error {
				t.Errorf("span %s with an injected error has status %v, want Error", s.Name(), s.Status())
			}
		}
	}
	slices.Sort(events)
	if wantEvents := []string{routeGet, routeGet, routePost}; !slices.Equal(events, wantEvents) {
		t.Errorf("spans with a chaos.injected event = %q, want %q", events, wantEvents)
	}
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestMiddlewareLatencyEndsWithTheRequest: a client that gives up during
// injected latency frees the handler at once.
func TestMiddlewareLatencyEndsWithTheRequest(t *testing.T) {
	t.Parallel()
	ti := newTestInjector(t)
	url, _ := newTestService(t, ti)
	ti.mustSet(t, chaos.Rule{Route: routeGet, LatencyMs: int(chaos.MaxLatency / time.Millisecond)})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url+"/items/7", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	if resp, err := http.DefaultTransport.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatalf("GET with a minute of latency answered %d before the client's deadline", resp.StatusCode)
	}
	// httptest.Server.Close, run by Cleanup, waits for the handler: the
	// test ends only if the handler stopped waiting with the request.
}

func TestOpsDisabled(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(chaos.NewHandler(nil))
	t.Cleanup(srv.Close)
	for _, method := range []string{"GET", "POST", "DELETE"} {
		p := do(t, method, srv.URL+"/chaos", nil).problem(t, http.StatusNotFound)
		if p.Code() != "chaos_disabled" {
			t.Errorf("%s /chaos with chaos off = %q, want chaos_disabled", method, p.Code())
		}
	}
}

// listed is the body of GET /chaos.
type listed struct {
	Rules  []chaos.Rule `json:"rules"`
	Routes []string     `json:"routes"`
}

func list(t *testing.T, url string) listed {
	t.Helper()
	r := do(t, "GET", url+"/chaos", nil)
	if r.status != 200 {
		t.Fatalf("GET /chaos = %d %s", r.status, r.body)
	}
	var l listed
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		t.Fatalf("GET /chaos body %s: %v", r.body, err)
	}
	return l
}

func TestOpsSetListClear(t *testing.T) {
	t.Parallel()
	ti := newTestInjector(t)
	srv := httptest.NewServer(chaos.NewHandler(ti.Injector))
	t.Cleanup(srv.Close)

	if l := list(t, srv.URL); l.Rules == nil || len(l.Rules) != 0 || !slices.Contains(l.Routes, pointCommit) || l.Routes[0] != "*" {
		t.Fatalf("GET /chaos with no rules = %+v, want an empty list and every route, * first", l)
	}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	r := do(t, "POST", srv.URL+"/chaos", map[string]any{
		"route": pointCommit, "errorRate": 1, "crash": true, "until": until.Format(time.RFC3339),
	})
	var set chaos.Rule
	if r.status != 200 || json.Unmarshal(r.body, &set) != nil {
		t.Fatalf("POST /chaos = %d %s, want 200 and the rule", r.status, r.body)
	}
	want := chaos.Rule{Route: pointCommit, ErrorRate: 1, Crash: true, Until: until}
	if !set.Until.Equal(until) || set.Route != want.Route || set.ErrorRate != 1 || !set.Crash {
		t.Errorf("POST /chaos = %+v, want %+v", set, want)
	}
	if r := do(t, "POST", srv.URL+"/chaos", map[string]any{"route": routeGet, "latencyMs": 800}); r.status != 200 {
		t.Fatalf("POST /chaos latency = %d %s", r.status, r.body)
	}
	l := list(t, srv.URL)
	if len(l.Rules) != 2 || l.Rules[0].Route != routeGet || l.Rules[0].LatencyMs != 800 || l.Rules[1].Route != pointCommit {
		t.Errorf("GET /chaos rules = %+v, want %s then %s", l.Rules, routeGet, pointCommit)
	}

	if r := do(t, "DELETE", srv.URL+"/chaos?route="+pointCommit, nil); r.status != http.StatusNoContent {
		t.Errorf("DELETE /chaos?route=%s = %d %s, want 204", pointCommit, r.status, r.body)
	}
	if p := do(t, "DELETE", srv.URL+"/chaos?route="+pointCommit, nil).problem(t, 404); p.Code() != "rule_not_found" {
		t.Errorf("second DELETE = %q, want rule_not_found", p.Code())
	}
	if l := list(t, srv.URL); len(l.Rules) != 1 || l.Rules[0].Route != routeGet {
		t.Errorf("GET /chaos after clearing one = %+v, want only %s", l.Rules, routeGet)
	}
	if r := do(t, "DELETE", srv.URL+"/chaos", nil); r.status != http.StatusNoContent {
		t.Errorf("DELETE /chaos = %d %s, want 204", r.status, r.body)
	}
	if l := list(t, srv.URL); len(l.Rules) != 0 {
		t.Errorf("GET /chaos after clearing all = %+v, want none", l.Rules)
	}
	do(t, "PUT", srv.URL+"/chaos", "{}").problem(t, http.StatusMethodNotAllowed)
}

func TestOpsValidation(t *testing.T) {
	t.Parallel()
	ti := newTestInjector(t)
	srv := httptest.NewServer(chaos.NewHandler(ti.Injector))
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		name, body string
		wantCode   string
		wantField  string
	}{
		{"unknown field", `{"route":"*","errorRate":1,"rate":1}`, "unknown_field", "rate"},
		{"wrong type", `{"route":"*","errorRate":"half"}`, "wrong_type", "errorRate"},
		{"malformed", `{"route":`, "malformed_json", ""},
		{"unknown route", `{"route":"GET /items","errorRate":1}`, "invalid_rule", "route"},
		{"rate out of range", `{"route":"*","errorRate":1.01}`, "invalid_rule", "errorRate"},
		{"negative latency", `{"route":"*","latencyMs":-1,"errorRate":1}`, "invalid_rule", "latencyMs"},
		{"until not RFC 3339", `{"route":"*","errorRate":1,"until":"in an hour"}`, "invalid_rule", "until"},
		{"until past", `{"route":"*","errorRate":1,"until":"2020-01-01T00:00:00Z"}`, "invalid_rule", "until"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := do(t, "POST", srv.URL+"/chaos", tt.body).problem(t, http.StatusBadRequest)
			if p.Code() != tt.wantCode {
				t.Errorf("POST /chaos %s = %q, want %q", tt.body, p.Code(), tt.wantCode)
			}
			if tt.wantField != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tt.wantField) {
				t.Errorf("POST /chaos %s errors = %+v, want one for %s", tt.body, p.Errors, tt.wantField)
			}
		})
	}
	if p := do(t, "DELETE", srv.URL+"/chaos?route=nope", nil).problem(t, 400); p.Code() != "invalid_rule" {
		t.Errorf("DELETE /chaos?route=nope = %q, want invalid_rule", p.Code())
	}
	if l := list(t, srv.URL); len(l.Rules) != 0 {
		t.Errorf("rules after only bad requests = %+v, want none", l.Rules)
	}
}

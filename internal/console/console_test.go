package console_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/console"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// serve runs a console over store with the given fault injectors.
func serve(t *testing.T, store *console.Store, faults map[string]*chaos.Injector) *httptest.Server {
	t.Helper()
	h, err := console.NewHandler(console.Config{Store: store, Faults: faults, Logger: slog.New(slog.DiscardHandler), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// service builds a service's real telemetry, exporting to the console at
// url as Blueprint's services do.
func service(t *testing.T, name, url string) *telemetry.Providers {
	t.Helper()
	p, err := telemetry.New(context.Background(), name, "test", func(string) string { return "" },
		telemetry.WithConsole(telemetry.Console{Endpoint: url, TracesPerSecond: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConsoleReceivesWhatServicesExport sends a trace across two services,
// its log lines and metrics through the SDK's OTLP exporters, as the
// services send them, and reads them back from the store and the pages.
func TestConsoleReceivesWhatServicesExport(t *testing.T) {
	store := console.NewStore(console.DefaultLimits)
	srv := serve(t, store, nil)
	gw, users := service(t, "gateway", srv.URL), service(t, "users", srv.URL)
	base := slog.New(slog.DiscardHandler)

	ctx, root := gw.Tracer.Tracer("test").Start(context.Background(), "GET /users/me",
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("http.route", "/users/me"), attribute.Int("http.response.status_code", 502)))
	ctx, client := gw.Tracer.Tracer("test").Start(ctx, "GET users", trace.WithSpanKind(trace.SpanKindClient))
	// users continues the trace from the headers the client sent.
	headers := map[string]string{}
	gw.Propagator.Inject(ctx, propagationCarrier(headers))
	uctx := users.Propagator.Extract(context.Background(), propagationCarrier(headers))
	uctx, server := users.Tracer.Tracer("test").Start(uctx, "GET /users/{id}", trace.WithSpanKind(trace.SpanKindServer))
	users.Logger(base).DebugContext(uctx, "request", "status", 500) // a debug line of a sampled trace: kept
	server.SetStatus(codes.Error, "database is down")
	server.End()
	client.End()
	gw.Logger(base).InfoContext(ctx, "request", "status", 502)
	root.End()
	gw.Logger(base).Info("outside any request")       // neither sampled nor a problem: not sent
	gw.Logger(base).Warn("a warning outside a trace") // a problem: sent

	requests, err := gw.Meter.Meter("test").Float64Histogram("http.server.request.duration")
	if err != nil {
		t.Fatal(err)
	}
	requests.Record(context.Background(), 0.002, metric.WithAttributes(attribute.String("http.route", "/users/me"), attribute.Int("http.response.status_code", 200)))
	for _, p := range []*telemetry.Providers{gw, users} {
		if err := p.Shutdown(context.Background()); err != nil { // flushes every signal
			t.Fatal(err)
		}
	}

	id := root.SpanContext().TraceID().String()
	got, ok := store.Trace(id)
	if !ok {
		t.Fatalf("trace %s not kept; summaries: %+v", id, store.Summaries())
	}
	var names []string
	for _, sp := range got.Spans {
		names = append(names, sp.Service+" "+sp.Name)
	}
	want := []string{"gateway GET /users/me", "gateway GET users", "users GET /users/{id}"}
	if !slices.Equal(names, want) {
		t.Errorf("spans = %q, want %q", names, want)
	}
	if len(got.Logs) != 2 || got.Logs[0].Service != "users" || got.Logs[0].Severity != "DEBUG" || got.Logs[1].Service != "gateway" {
		t.Errorf("trace logs = %+v, want the users debug line then the gateway's", got.Logs)
	}
	sums := store.Summaries()
	if len(sums) != 1 || sums[0].Root != "GET /users/me" || sums[0].Route != "/users/me" || sums[0].Status != 502 || !sums[0].Error ||
		!slices.Equal(sums[0].Services, []string{"gateway", "users"}) {
		t.Errorf("summaries = %+v", sums)
	}
	var recent []string
	for _, l := range store.RecentLogs() {
		recent = append(recent, l.Body)
	}
	if !slices.Equal(recent, []string{"a warning outside a trace"}) {
		t.Errorf("logs outside traces = %q, want only the warning", recent)
	}
	if pts := store.Points("http.server.request.duration", time.Time{}); len(pts) != 1 || pts[0].Value != 1 || pts[0].Service != "gateway" {
		t.Errorf("request metric = %+v, want one gateway series counting 1", pts)
	}

	page := get(t, srv.URL+"/traces/"+id)
	for _, s := range []string{"GET /users/{id}", "database is down", "outside any request"} {
		if want := s != "outside any request"; strings.Contains(page, s) != want {
			t.Errorf("trace page contains %q: %v, want %v", s, !want, want)
		}
	}
	if list := get(t, srv.URL+"/traces?status=error"); !strings.Contains(list, "/traces/"+id) {
		t.Errorf("failed traces list lacks %s", id)
	}
	if list := get(t, srv.URL+"/traces?status=ok"); strings.Contains(list, "/traces/"+id) {
		t.Errorf("succeeded traces list shows the failed %s", id)
	}
	for _, page := range []string{"/", "/events", "/faults"} {
		get(t, srv.URL+page) // each renders whole (a template error is a 500)
	}
	res, err := http.Get(srv.URL + "/traces/" + strings.Repeat("0", 32))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Errorf("a trace not kept: %d %s, want a 404 page", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

type propagationCarrier map[string]string

func (c propagationCarrier) Get(k string) string { return c[k] }
func (c propagationCarrier) Set(k, v string)     { c[k] = v }
func (c propagationCarrier) Keys() []string {
	var ks []string
	for k := range c {
		ks = append(ks, k)
	}
	return ks
}

func get(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, body)
	}
	return string(body)
}

// TestStaticFiles serves the page's stylesheet and script, and nothing
// else from the embedded files.
func TestStaticFiles(t *testing.T) {
	srv := serve(t, console.NewStore(console.DefaultLimits), nil)
	for file, want := range map[string]string{"console.css": "text/css", "console.js": "text/javascript", "nothing.js": ""} {
		res, err := http.Get(srv.URL + "/static/" + file)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		switch ct := res.Header.Get("Content-Type"); {
		case want == "" && res.StatusCode != http.StatusNotFound:
			t.Errorf("%s: %d, want 404", file, res.StatusCode)
		case want != "" && (res.StatusCode != http.StatusOK || !strings.HasPrefix(ct, want)):
			t.Errorf("%s: %d %s, want 200 %s", file, res.StatusCode, ct, want)
		}
	}
}

// TestStoreIsBounded fills the store past each limit: the oldest traces go,
// spans and logs past a trace's limit are counted, not kept.
func TestStoreIsBounded(t *testing.T) {
	store := console.NewStore(console.Limits{Traces: 3, SpansPerTrace: 2, LogsPerTrace: 1, Logs: 2, Series: 1})
	for i := range 5 {
		id := strings.Repeat(string(rune('a'+i)), 32)
		store.AddSpans([]console.Span{{TraceID: id, SpanID: "1", Start: time.Unix(int64(i), 0)}})
	}
	var kept []string
	for _, s := range store.Summaries() {
		kept = append(kept, s.ID[:1])
	}
	if !slices.Equal(kept, []string{"e", "d", "c"}) {
		t.Errorf("kept traces = %q, want the three newest", kept)
	}
	id := strings.Repeat("e", 32)
	store.AddSpans([]console.Span{{TraceID: id, SpanID: "2"}, {TraceID: id, SpanID: "3"}})
	store.AddLogs([]console.LogRecord{{TraceID: id, Body: "1"}, {TraceID: id, Body: "2"}, {Body: "x"}, {Body: "y"}, {Body: "z"}})
	tr, _ := store.Trace(id)
	if len(tr.Spans) != 2 || tr.DroppedSpans != 1 || len(tr.Logs) != 1 || tr.DroppedLogs != 1 {
		t.Errorf("trace holds %d spans (%d dropped), %d logs (%d dropped); want 2 (1), 1 (1)", len(tr.Spans), tr.DroppedSpans, len(tr.Logs), tr.DroppedLogs)
	}
	var recent []string
	for _, l := range store.RecentLogs() {
		recent = append(recent, l.Body)
	}
	if !slices.Equal(recent, []string{"y", "z"}) {
		t.Errorf("recent logs = %q, want the two newest", recent)
	}
}

// TestWaterfall lays a trace out as its tree: each child after its parent,
// deeper, its bar where it ran.
func TestWaterfall(t *testing.T) {
	t0 := time.Unix(100, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tr := console.Trace{Spans: []console.Span{
		{SpanID: "root", Name: "POST /orders", Start: at(0), End: at(100)},
		{SpanID: "call", ParentID: "root", Name: "POST orders", Start: at(10), End: at(60)},
		{SpanID: "send", ParentID: "call", Name: "send orders.created", Start: at(50), End: at(70)},
		{SpanID: "late", ParentID: "root", Name: "access line", Start: at(90), End: at(100)},
		{SpanID: "orphan", ParentID: "not-here", Name: "process orders.created", Start: at(75), End: at(100)},
	}}
	rows, start, total := console.Waterfall(tr)
	if !start.Equal(t0) || total != 100*time.Millisecond {
		t.Errorf("start, total = %v, %v", start, total)
	}
	var got []string
	for _, r := range rows {
		got = append(got, strings.Repeat(" ", r.Depth)+r.Name)
	}
	want := []string{"POST /orders", " POST orders", "  send orders.created", " access line", "process orders.created"}
	if !slices.Equal(got, want) {
		t.Errorf("rows = %q, want %q", got, want)
	}
	if r := rows[2]; r.Offset != 50 || r.Width != 20 {
		t.Errorf("send bar at %v%% for %v%%, want 50%% for 20%%", r.Offset, r.Width)
	}
}

// TestArchitecture draws the call paths a trace shows (HTTP, and a subject
// through NATS) and each caller's breakers, an open one marking its path.
func TestArchitecture(t *testing.T) {
	store := console.NewStore(console.DefaultLimits)
	srv := serve(t, store, nil)
	now := time.Now()
	store.AddSpans([]console.Span{
		{TraceID: "t1", SpanID: "a", Service: "gateway", Kind: "client"},
		{TraceID: "t1", SpanID: "b", ParentID: "a", Service: "orders", Kind: "server"},
		{TraceID: "t1", SpanID: "c", ParentID: "b", Service: "orders", Kind: "producer"},
		{TraceID: "t1", SpanID: "d", ParentID: "c", Service: "notifications", Kind: "consumer",
			Attrs: []console.Attr{{Key: "messaging.destination.name", Value: "orders.created"}}},
	})
	postMetric(t, srv.URL, "notifications", "blueprint.upstream.breaker.state", 2,
		map[string]string{"upstream": "users", "replica": "127.0.0.1:3002"})

	g := store.Architecture(now)
	var edges []string
	for _, e := range g.Edges {
		mark := ""
		if e.Open {
			mark = " (open)"
		}
		edges = append(edges, e.From+" -> "+e.To+" "+e.Label+mark)
	}
	want := []string{
		"NATS JetStream -> notifications orders.created", "gateway -> orders HTTP",
		"notifications -> users HTTP (open)", "orders -> NATS JetStream orders.created",
	}
	if !slices.Equal(edges, want) {
		t.Errorf("edges = %q, want %q", edges, want)
	}
	page := get(t, srv.URL+"/")
	if !strings.Contains(page, "users 127.0.0.1:3002: open") {
		t.Errorf("architecture page does not show the open breaker:\n%s", page)
	}
}

// postMetric exports one gauge point over OTLP/JSON, gzipped, as another
// SDK than Go's might.
func postMetric(t *testing.T, base, service, name string, value int, attrs map[string]string) {
	t.Helper()
	var kvs []string
	for k, v := range attrs {
		kvs = append(kvs, `{"key":"`+k+`","value":{"stringValue":"`+v+`"}}`)
	}
	body := `{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"` + service + `"}}]},
		"scopeMetrics":[{"metrics":[{"name":"` + name + `","gauge":{"dataPoints":[{"asInt":"` + strconv.Itoa(value) +
		`","timeUnixNano":"` + strconv.FormatInt(time.Now().UnixNano(), 10) + `","attributes":[` + strings.Join(kvs, ",") + `]}]}}]}]}]}`
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	zw.Write([]byte(body))
	zw.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/metrics", &zipped)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("export: %d %s", res.StatusCode, b)
	}
}

// TestReceiverRefusesBadExports answers what an SDK must not retry with a
// 4xx, and keeps nothing of it.
func TestReceiverRefusesBadExports(t *testing.T) {
	store := console.NewStore(console.DefaultLimits)
	srv := serve(t, store, nil)
	for _, tc := range []struct {
		name, contentType, encoding, body string
		want                              int
	}{
		{"not OTLP", "text/plain", "", "hello", http.StatusUnsupportedMediaType},
		{"broken protobuf", "application/x-protobuf", "", "\xff\xff\xff", http.StatusBadRequest},
		{"broken JSON", "application/json", "", "{", http.StatusBadRequest},
		{"not gzip", "application/json", "gzip", "{}", http.StatusBadRequest},
		{"unknown encoding", "application/json", "br", "{}", http.StatusUnsupportedMediaType},
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/traces", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.contentType)
		if tc.encoding != "" {
			req.Header.Set("Content-Encoding", tc.encoding)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, res.StatusCode, tc.want)
		}
	}
	if n := len(store.Summaries()); n != 0 {
		t.Errorf("%d traces kept from bad exports", n)
	}
}

// TestFaultSwitches sets and clears a fault through the page's forms, and
// refuses the same form sent from another site.
func TestFaultSwitches(t *testing.T) {
	in, err := chaos.New(slog.New(slog.DiscardHandler), noop.NewMeterProvider(), "GET /users/me")
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, console.NewStore(console.DefaultLimits), map[string]*chaos.Injector{"users": in})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, form url.Values, site string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", site)
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	rule := url.Values{"service": {"users"}, "route": {"GET /users/me"}, "latency_ms": {"0"}, "error_percent": {"100"}}
	if code := post("/faults", rule, "cross-site"); code != http.StatusForbidden {
		t.Errorf("cross-site form: %d, want 403", code)
	}
	if rules := in.Rules(context.Background()); len(rules) != 0 {
		t.Fatalf("a cross-site form set %+v", rules)
	}
	if code := post("/faults", rule, "same-origin"); code != http.StatusSeeOther {
		t.Fatalf("set: %d, want 303", code)
	}
	if rules := in.Rules(context.Background()); len(rules) != 1 || rules[0].Route != "GET /users/me" || rules[0].ErrorRate != 1 {
		t.Errorf("rules = %+v, want GET /users/me failing every time", rules)
	}
	if page := get(t, srv.URL+"/faults"); !strings.Contains(page, "100 % errors") {
		t.Errorf("faults page does not show the rule")
	}
	if code := post("/faults/clear", url.Values{"service": {"users"}, "route": {"GET /users/me"}}, "same-origin"); code != http.StatusSeeOther {
		t.Fatalf("clear: %d", code)
	}
	if rules := in.Rules(context.Background()); len(rules) != 0 {
		t.Errorf("rules after clear = %+v", rules)
	}
	bad := url.Values{"service": {"users"}, "route": {"GET /nowhere"}, "error_percent": {"100"}}
	if code := post("/faults", bad, "same-origin"); code != http.StatusSeeOther {
		t.Errorf("bad rule: %d, want a redirect to the page with the error", code)
	}
}

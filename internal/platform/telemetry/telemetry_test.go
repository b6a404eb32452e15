package telemetry_test

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry/telemetrytest"
)

// shutdownWait bounds how long a test waits for Shutdown. It is far above
// the flush bound on purpose: the tests check that Shutdown returns, not how
// fast (no test asserts a timing).
const shutdownWait = 30 * time.Second

// env is a getenv reading from a map, the way app.Run is handed one.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// newTestProviders calls New and shuts the providers down when the test ends.
func newTestProviders(t *testing.T, service string, vars map[string]string) *telemetry.Providers {
	t.Helper()
	p, err := telemetry.New(context.Background(), service, "v1.2.3", env(vars))
	if err != nil {
		t.Fatalf("New(%q, %v) error = %v, want nil", service, vars, err)
	}
	t.Cleanup(func() { shutdown(t, p) })
	return p
}

// shutdown calls p.Shutdown and fails the test if it does not return. Its
// error is not checked: with an unreachable collector it reports the lost
// export, which is the expected outcome.
func shutdown(t *testing.T, p *telemetry.Providers) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }() // ends when Shutdown returns
	timer := time.NewTimer(shutdownWait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Errorf("Shutdown() still running after %s, want it to return (flush is bounded)", shutdownWait)
		<-done // do not leak it: wait however long it takes
	}
}

// recordSpans attaches a recorder to the providers' tracer.
func recordSpans(t *testing.T, p *telemetry.Providers) *tracetest.SpanRecorder {
	t.Helper()
	tp, ok := p.Tracer.(*sdktrace.TracerProvider)
	if !ok {
		t.Fatalf("Tracer is %T, want *sdktrace.TracerProvider", p.Tracer)
	}
	rec := tracetest.NewSpanRecorder()
	tp.RegisterSpanProcessor(rec)
	return rec
}

// closedEndpoint returns an http URL on a loopback port nothing listens on.
func closedEndpoint(t *testing.T) string {
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

// gather returns the families of the registry by name.
func gather(t *testing.T, p *telemetry.Providers) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := p.Registry.Gather()
	if err != nil {
		t.Fatalf("Registry.Gather() error = %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// recordAll names a sampler, so spans are recorded with no exporter.
var recordAll = map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_on"}

func TestNewTracerRecordsSpans(t *testing.T) {
	t.Parallel()
	p := newTestProviders(t, "gateway", recordAll)
	rec := recordSpans(t, p)

	ctx, span := p.Tracer.Tracer("test").Start(context.Background(), "work")
	sc := span.SpanContext()
	span.End()
	if !sc.IsValid() {
		t.Errorf("span context = %v, want a valid one (every log line needs a trace id)", sc)
	}
	if !sc.IsSampled() {
		t.Errorf("span sampled = false, want true")
	}
	if got := len(rec.Ended()); got != 1 {
		t.Errorf("ended spans = %d, want 1", got)
	}

	// The propagator writes W3C trace context, so the next hop joins the trace.
	carrier := propagation.MapCarrier{}
	p.Propagator.Inject(ctx, carrier)
	if got := carrier.Get("traceparent"); !strings.Contains(got, sc.TraceID().String()) {
		t.Errorf("injected traceparent = %q, want it to hold trace id %s", got, sc.TraceID())
	}
	fields := p.Propagator.Fields()
	for _, want := range []string{"traceparent", "tracestate", "baggage"} {
		if !slices.Contains(fields, want) {
			t.Errorf("Propagator.Fields() = %v, want it to include %q", fields, want)
		}
	}
}

func TestNewRegistryServesRuntimeAndOTelMetrics(t *testing.T) {
	t.Parallel()
	p := newTestProviders(t, "gateway", nil)
	counter, err := p.Meter.Meter("test").Int64Counter("blueprint.test.requests", metric.WithDescription("test requests"))
	if err != nil {
		t.Fatalf("Int64Counter() error = %v", err)
	}
	counter.Add(context.Background(), 3, metric.WithAttributes(attribute.String("route", "/x")))

	families := gather(t, p)
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := families[name]; !ok {
			t.Errorf("Registry.Gather() has no %s, want the runtime and process collectors", name)
		}
	}
	const name = "blueprint_test_requests_total"
	mf, ok := families[name]
	if !ok {
		t.Fatalf("Registry.Gather() has no %s; got %v", name, slices.Sorted(maps.Keys(families)))
	}
	if got := len(mf.GetMetric()); got != 1 {
		t.Fatalf("%s has %d series, want 1", name, got)
	}
	if got := mf.GetMetric()[0].GetCounter().GetValue(); got != 3 {
		t.Errorf("%s = %v, want 3", name, got)
	}
}

func TestNewGivesEachServiceItsOwnRegistry(t *testing.T) {
	t.Parallel()
	// In `all` mode four services share a process: a metric of one must not
	// show up in another's /metrics, and registering twice must not clash.
	users := newTestProviders(t, "users", nil)
	orders := newTestProviders(t, "orders", nil)
	c, err := users.Meter.Meter("test").Int64Counter("blueprint.users.only")
	if err != nil {
		t.Fatalf("Int64Counter() error = %v", err)
	}
	c.Add(context.Background(), 1)

	if _, ok := gather(t, users)["blueprint_users_only_total"]; !ok {
		t.Errorf("users registry has no blueprint_users_only_total, want it")
	}
	if _, ok := gather(t, orders)["blueprint_users_only_total"]; ok {
		t.Errorf("orders registry has blueprint_users_only_total, want only users to have it")
	}
}

func TestNewResource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		vars map[string]string
		want map[string]string // attribute → value; "" means absent
	}{
		{
			name: "no environment",
			want: map[string]string{
				"service.name": "gateway", "service.version": "v1.2.3", "service.namespace": "blueprint",
				"deployment.environment": "",
			},
		},
		{
			name: "OTEL_RESOURCE_ATTRIBUTES adds attributes",
			vars: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,k8s.pod.name=gw-1"},
			want: map[string]string{
				"service.name": "gateway", "deployment.environment": "staging", "k8s.pod.name": "gw-1",
			},
		},
		{
			name: "OTEL_RESOURCE_ATTRIBUTES cannot rename the service",
			vars: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=impostor,deployment.environment=prod"},
			want: map[string]string{"service.name": "gateway", "deployment.environment": "prod"},
		},
		{
			name: "OTEL_RESOURCE_ATTRIBUTES names the instance",
			vars: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=gateway-7f9c"},
			want: map[string]string{"service.name": "gateway", "service.instance.id": "gateway-7f9c"},
		},
		{
			name: "OTEL_SERVICE_NAME cannot rename the service",
			vars: map[string]string{"OTEL_SERVICE_NAME": "impostor", "OTEL_RESOURCE_ATTRIBUTES": "team=core"},
			want: map[string]string{"service.name": "gateway", "team": "core"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := maps.Clone(recordAll)
			maps.Copy(vars, tt.vars)
			p := newTestProviders(t, "gateway", vars)
			rec := recordSpans(t, p)
			_, span := p.Tracer.Tracer("test").Start(context.Background(), "work")
			span.End()
			ended := rec.Ended()
			if len(ended) != 1 {
				t.Fatalf("ended spans = %d, want 1", len(ended))
			}
			res := ended[0].Resource()
			for key, want := range tt.want {
				v, _ := res.Set().Value(attribute.Key(key))
				if got := v.String(); got != want {
					t.Errorf("resource %s = %q, want %q (resource %v)", key, got, want, res)
				}
			}
		})
	}
}

// TestNewNamesEachInstance: without OTEL_RESOURCE_ATTRIBUTES naming one,
// every start gets a service.instance.id of its own, so two replicas
// pushing the same metric stay two series.
func TestNewNamesEachInstance(t *testing.T) {
	t.Parallel()
	ids := map[string]bool{}
	for range 2 {
		p := newTestProviders(t, "orders", recordAll)
		rec := recordSpans(t, p)
		_, span := p.Tracer.Tracer("test").Start(context.Background(), "work")
		span.End()
		v, _ := rec.Ended()[0].Resource().Set().Value("service.instance.id")
		if v.AsString() == "" {
			t.Fatalf("resource %v has no service.instance.id", rec.Ended()[0].Resource())
		}
		ids[v.AsString()] = true
	}
	if len(ids) != 2 {
		t.Errorf("two starts share service.instance.id %v, want one each", ids)
	}
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		vars     map[string]string
		wantName string // the variable the error must name
	}{
		{
			name:     "unknown OTEL_EXPORTER_OTLP_PROTOCOL",
			vars:     map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "bogus"},
			wantName: "OTEL_EXPORTER_OTLP_PROTOCOL",
		},
		{
			name:     "unknown OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
			vars:     map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
			wantName: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
		},
		{
			name:     "an exporter other than otlp",
			vars:     map[string]string{"OTEL_TRACES_EXPORTER": "console"},
			wantName: "OTEL_TRACES_EXPORTER",
		},
		{
			name:     "a log exporter other than otlp",
			vars:     map[string]string{"OTEL_LOGS_EXPORTER": "prometheus"},
			wantName: "OTEL_LOGS_EXPORTER",
		},
		{
			name:     "unknown OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
			vars:     map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json"},
			wantName: "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
		},
		{
			name:     "malformed OTEL_RESOURCE_ATTRIBUTES",
			vars:     map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment"},
			wantName: "OTEL_RESOURCE_ATTRIBUTES",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := telemetry.New(context.Background(), "gateway", "v1", env(tt.vars))
			if err == nil {
				shutdown(t, p)
				t.Fatalf("New(%v) = nil error, want one naming %s", tt.vars, tt.wantName)
			}
			if !strings.Contains(err.Error(), tt.wantName) {
				t.Errorf("New(%v) error = %q, want it to name %s", tt.vars, err, tt.wantName)
			}
		})
	}
}

func TestShutdownWithAnUnreachableCollectorReturns(t *testing.T) {
	t.Parallel()
	// The original took ~8 s to stop because its exporter kept retrying a
	// missing collector. Here New must not fail and Shutdown must return.
	tests := []struct {
		name string
		vars func(endpoint string) map[string]string
	}{
		{
			name: "default protocol",
			vars: func(e string) map[string]string { return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e} },
		},
		{
			name: "http/protobuf",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
			},
		},
		{
			name: "grpc, spelt in capitals",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e, "OTEL_EXPORTER_OTLP_PROTOCOL": "GRPC"}
			},
		},
		{
			name: "logs and metrics over grpc, traces over http",
			vars: func(e string) map[string]string {
				return map[string]string{
					"OTEL_EXPORTER_OTLP_ENDPOINT": e, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
				}
			},
		},
		{
			name: "traces endpoint and protocol",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": e + "/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := tt.vars(closedEndpoint(t))
			p, err := telemetry.New(context.Background(), "gateway", "v1", env(vars))
			if err != nil {
				t.Fatalf("New(%v) error = %v, want nil (a collector may come later)", vars, err)
			}
			for range 10 {
				emitAll(t, p)
			}
			shutdown(t, p)
		})
	}
}

// emitAll records one span, one counter increment and one log line through
// the providers, the log line inside the span and a request.
func emitAll(t *testing.T, p *telemetry.Providers) trace.SpanContext {
	t.Helper()
	ctx, span := p.Tracer.Tracer("test").Start(context.Background(), "work")
	defer span.End()
	c, err := p.Meter.Meter("test").Int64Counter("blueprint.test.work")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(ctx, 1)
	logger := p.Logger(telemetry.NewLogger(io.Discard, telemetry.LogJSON, false, slog.LevelInfo))
	logger.InfoContext(telemetry.WithRequestID(ctx, "req-7"), "work done", "user_id", "u-1")
	return span.SpanContext()
}

// TestNewExportsTheSignalsTheEnvironmentNames: each signal goes over OTLP
// when an endpoint or OTEL_<SIGNAL>_EXPORTER=otlp says so, and not when
// its exporter is none or the SDK is disabled. New is handed getenv so that
// app.Run (and its tests) decide the environment.
func TestNewExportsTheSignalsTheEnvironmentNames(t *testing.T) {
	t.Parallel()
	all := []string{"POST /v1/traces", "POST /v1/metrics", "POST /v1/logs"}
	tests := []struct {
		name string
		vars func(endpoint string) map[string]string
		want []string
	}{
		{
			name: "one endpoint, every signal",
			vars: func(e string) map[string]string { return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e} },
			want: all,
		},
		{
			name: "http/protobuf named",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e + "/", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
			},
			want: all,
		},
		{
			name: "traces turned off",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e, "OTEL_TRACES_EXPORTER": "none"}
			},
			want: []string{"POST /v1/metrics", "POST /v1/logs"},
		},
		{
			name: "metrics left to Prometheus, logs off",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e, "OTEL_METRICS_EXPORTER": "prometheus", "OTEL_LOGS_EXPORTER": "none"}
			},
			want: []string{"POST /v1/traces"},
		},
		{
			name: "logs only, on their own endpoint",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": e + "/v1/logs"}
			},
			want: []string{"POST /v1/logs"},
		},
		{
			name: "traces endpoint only",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": e + "/v1/traces"}
			},
			want: []string{"POST /v1/traces"},
		},
		{
			name: "SDK disabled",
			vars: func(e string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e, "OTEL_SDK_DISABLED": "true"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			col := telemetrytest.NewCollector(t)
			vars := tt.vars(col.URL)
			p, err := telemetry.New(context.Background(), "gateway", "v1", env(vars))
			if err != nil {
				t.Fatalf("New(%v) error = %v", vars, err)
			}
			emitAll(t, p)
			shutdown(t, p) // flushes every pipeline

			got := slices.Compact(slices.Sorted(slices.Values(col.Paths())))
			if want := slices.Sorted(slices.Values(tt.want)); !slices.Equal(got, want) {
				t.Errorf("New(%v): collector received %v, want %v", vars, got, want)
			}
		})
	}
}

// TestExportedSignalsCarryTheirContext: the exported span, metric and log
// record belong to the service, and the log record to the span it was
// written in, with the request id beside it.
func TestExportedSignalsCarryTheirContext(t *testing.T) {
	t.Parallel()
	col := telemetrytest.NewCollector(t)
	p, err := telemetry.New(context.Background(), "orders", "v1", env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL}))
	if err != nil {
		t.Fatal(err)
	}
	sc := emitAll(t, p)
	// Below the logger's level: not exported either.
	p.Logger(telemetry.NewLogger(io.Discard, telemetry.LogJSON, false, slog.LevelInfo)).Debug("noise")
	shutdown(t, p)

	spans := col.Spans()
	if len(spans) != 1 || spans[0].Service != "orders" || spans[0].GetName() != "work" {
		t.Errorf("spans = %v, want the one span of orders", spans)
	}
	var metricNames []string
	for _, m := range col.Metrics() {
		if m.Service != "orders" {
			t.Errorf("metric %s exported as service %q, want orders", m.GetName(), m.Service)
		}
		metricNames = append(metricNames, m.GetName())
	}
	for _, want := range []string{"blueprint.test.work", "go.memory.used", "go.goroutine.count"} {
		if !slices.Contains(metricNames, want) {
			t.Errorf("exported metrics %v, want %s among them", metricNames, want)
		}
	}
	logs := col.Logs()
	if len(logs) != 1 {
		t.Fatalf("exported log records = %d (%v), want 1", len(logs), logs)
	}
	l := logs[0]
	if l.Service != "orders" || l.GetBody().GetStringValue() != "work done" || l.GetSeverityText() != "INFO" {
		t.Errorf("log record = %v from %q, want \"work done\" at INFO from orders", l.LogRecord, l.Service)
	}
	if got := hex.EncodeToString(l.GetTraceId()); got != sc.TraceID().String() {
		t.Errorf("log record trace id = %s, want the span's %s", got, sc.TraceID())
	}
	if got := hex.EncodeToString(l.GetSpanId()); got != sc.SpanID().String() {
		t.Errorf("log record span id = %s, want the span's %s", got, sc.SpanID())
	}
	for key, want := range map[string]string{"request_id": "req-7", "user_id": "u-1", "trace_id": "", "service": ""} {
		if got := telemetrytest.Attr(l.GetAttributes(), key); got != want {
			t.Errorf("log record attribute %s = %q, want %q", key, got, want)
		}
	}
}

func TestLoggerWithoutLogExportIsTheBase(t *testing.T) {
	t.Parallel()
	p := newTestProviders(t, "users", nil)
	base := telemetry.NewLogger(io.Discard, telemetry.LogJSON, false, slog.LevelInfo)
	if got := p.Logger(base); got != base {
		t.Errorf("Logger(base) = %v, want base itself when logs are not exported", got)
	}
}

// TestSampler: OTEL_TRACES_SAMPLER picks the sampler, parent-based by
// default when spans are exported, so a caller's decision holds for the
// whole trace, and none recorded when they are not; unsampled spans still
// have ids for the logs.
func TestSampler(t *testing.T) {
	t.Parallel()
	sampledParent := trace.ContextWithRemoteSpanContext(context.Background(), testSpan(t))
	unsampledParent := trace.ContextWithRemoteSpanContext(context.Background(),
		testSpan(t).WithTraceFlags(0))
	tests := []struct {
		name                                 string
		vars                                 map[string]string
		wantRoot, wantSampled, wantUnsampled bool
	}{
		{name: "default, spans exported", vars: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": closedEndpoint(t)},
			wantRoot: true, wantSampled: true, wantUnsampled: false},
		{name: "default, nothing exported: no span is recorded", wantRoot: false, wantSampled: false, wantUnsampled: false},
		{name: "parentbased_always_off", vars: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_off"},
			wantRoot: false, wantSampled: true, wantUnsampled: false},
		{name: "parentbased_traceidratio 0", vars: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
			wantRoot: false, wantSampled: true, wantUnsampled: false},
		{name: "parentbased_traceidratio 1", vars: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"},
			wantRoot: true, wantSampled: true, wantUnsampled: false},
		{name: "always_on ignores the parent", vars: map[string]string{"OTEL_TRACES_SAMPLER": "always_on"},
			wantRoot: true, wantSampled: true, wantUnsampled: true},
		{name: "traceidratio 0 ignores the parent", vars: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
			wantRoot: false, wantSampled: false, wantUnsampled: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tracer := newTestProviders(t, "gateway", tt.vars).Tracer.Tracer("test")
			for _, c := range []struct {
				parent context.Context
				want   bool
			}{{context.Background(), tt.wantRoot}, {sampledParent, tt.wantSampled}, {unsampledParent, tt.wantUnsampled}} {
				_, span := tracer.Start(c.parent, "work")
				sc := span.SpanContext()
				span.End()
				if !sc.IsValid() {
					t.Errorf("span context = %v, want valid ids even when not sampled", sc)
				}
				if sc.IsSampled() != c.want {
					t.Errorf("sampled = %v with parent %v, want %v", sc.IsSampled(), trace.SpanContextFromContext(c.parent).TraceFlags(), c.want)
				}
			}
		})
	}
	for _, bad := range []map[string]string{
		{"OTEL_TRACES_SAMPLER": "jaeger_remote"},
		{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
	} {
		if p, err := telemetry.New(context.Background(), "gateway", "v1", env(bad)); err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER") {
			if p != nil {
				shutdown(t, p)
			}
			t.Errorf("New(%v) error = %v, want one naming OTEL_TRACES_SAMPLER", bad, err)
		}
	}
}

// TestConsoleSamplerBoundsNewTraces: with a console and no trace exporter,
// a service starts at most TracesPerSecond traces a second however many
// requests come, and every span of a sampled trace is sampled with it.
func TestConsoleSamplerBoundsNewTraces(t *testing.T) {
	p, err := telemetry.New(context.Background(), "gateway", "test", func(string) string { return "" },
		telemetry.WithConsole(telemetry.Console{Endpoint: "http://127.0.0.1:1", TracesPerSecond: 5}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background()) // nothing listens there: bounded, and the spans are dropped
	tracer := p.Tracer.Tracer("test")
	sampled := 0
	for range 200 { // far faster than 5 a second
		ctx, root := tracer.Start(context.Background(), "request")
		_, child := tracer.Start(ctx, "call")
		if root.SpanContext().IsSampled() {
			sampled++
		}
		if child.SpanContext().IsSampled() != root.SpanContext().IsSampled() {
			t.Fatal("a child span's sampling differs from its trace's")
		}
		child.End()
		root.End()
	}
	// The bucket holds one second's worth; the loop may refill one more.
	if sampled < 5 || sampled > 6 {
		t.Errorf("%d of 200 traces sampled at once, want 5 (6 if the bucket refilled)", sampled)
	}
}

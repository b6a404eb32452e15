package telemetry_test

import (
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// shutdownWait bounds how long a test waits for Shutdown. It is far above
// the flush bound on purpose: the tests check that Shutdown returns, not how
// fast (DESIGN §9: no timed assertions).
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

func TestNewTracerRecordsSpans(t *testing.T) {
	t.Parallel()
	p := newTestProviders(t, "gateway", nil)
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
			name: "OTEL_SERVICE_NAME cannot rename the service",
			vars: map[string]string{"OTEL_SERVICE_NAME": "impostor", "OTEL_RESOURCE_ATTRIBUTES": "team=core"},
			want: map[string]string{"service.name": "gateway", "team": "core"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newTestProviders(t, "gateway", tt.vars)
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
				if got := v.Emit(); got != want {
					t.Errorf("resource %s = %q, want %q (resource %v)", key, got, want, res)
				}
			}
		})
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
				_, span := p.Tracer.Tracer("test").Start(context.Background(), "work")
				span.End()
			}
			shutdown(t, p)
		})
	}
}

// otlpReceiver is a collector stand-in that records the paths it is sent.
type otlpReceiver struct {
	mu    sync.Mutex
	paths []string
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	r.mu.Lock()
	r.paths = append(r.paths, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

func (r *otlpReceiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.paths)
}

func TestNewExportsSpansToTheEndpointGetenvNames(t *testing.T) {
	t.Parallel()
	// New is handed getenv so that app.Run (and its tests) decide the
	// environment; the endpoint it names is where spans must go.
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()

	p, err := telemetry.New(context.Background(), "gateway", "v1", env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
	}))
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	_, span := p.Tracer.Tracer("test").Start(context.Background(), "work")
	span.End()
	shutdown(t, p) // flushes the batch

	if got := recv.got(); !slices.Contains(got, "POST /v1/traces") {
		t.Errorf("collector at %s received %v, want POST /v1/traces", srv.URL, got)
	}
}

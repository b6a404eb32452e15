// Package telemetry builds the OpenTelemetry providers and the slog logger of
// one service. Nothing here is global: every service gets its own providers
// (its own service.name, its own Prometheus registry) and passes them
// explicitly, so in `all` mode four services in one process still report as
// four services.
//
// Traces are always recorded (so every response and log line has a trace
// id) and exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. Metrics are served by the
// service's ops listener at /metrics.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// flushTimeout bounds how long shutdown waits for telemetry to leave the
// process. A missing collector must never hold a SIGTERM hostage.
const flushTimeout = 2 * time.Second

// Providers are one service's telemetry handles.
type Providers struct {
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
	// Registry is what the service's /metrics serves: its OTel metrics and
	// the Go runtime and process collectors.
	Registry *prometheus.Registry

	shutdown []func(context.Context) error
}

// New builds the providers of the named service. getenv reads the standard
// OTEL_* variables.
func New(ctx context.Context, service, version string, getenv func(string) string) (*Providers, error) {
	res, err := resource.Merge(
		resource.Default(),
		resource.NewWithAttributes(semconv.SchemaURL,
			semconv.ServiceName(service),
			semconv.ServiceVersion(version),
			semconv.ServiceNamespace("blueprint"),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	if attrs := getenv("OTEL_RESOURCE_ATTRIBUTES"); attrs != "" {
		// Extra attributes (deployment.environment, k8s.pod.name, …) are
		// added, but service.name stays the service's own.
		fromEnv, err := resource.New(ctx, resource.WithFromEnv())
		if err != nil {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
		}
		if res, err = resource.Merge(fromEnv, res); err != nil {
			return nil, fmt.Errorf("telemetry resource: %w", err)
		}
	}

	p := &Providers{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:   prometheus.NewRegistry(),
	}

	// Parent-based sampling, ratio from OTEL_TRACES_SAMPLER(_ARG) when set:
	// the SDK reads those itself.
	traceOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exporter, err := newTraceExporter(ctx, getenv)
	if err != nil {
		return nil, err
	}
	if exporter != nil {
		traceOpts = append(traceOpts, sdktrace.WithBatcher(exporter))
	}
	tp := sdktrace.NewTracerProvider(traceOpts...)
	p.Tracer = tp
	p.shutdown = append(p.shutdown, tp.Shutdown)

	if err := p.Registry.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("register go collector: %w", err)
	}
	if err := p.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("register process collector: %w", err)
	}
	reader, err := otelprom.New(otelprom.WithRegisterer(p.Registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
	p.Meter = mp
	p.shutdown = append(p.shutdown, mp.Shutdown)
	return p, nil
}

// newTraceExporter returns an OTLP exporter when an endpoint is configured,
// or nil. OTEL_EXPORTER_OTLP_PROTOCOL picks grpc or http/protobuf (the
// default, as in the specification); the exporters read the rest of the
// OTEL_EXPORTER_OTLP_* variables themselves.
func newTraceExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch strings.ToLower(protocol) {
	case "", "http/protobuf":
		return otlptracehttp.New(ctx)
	case "grpc":
		return otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported; use grpc or http/protobuf", protocol)
	}
}

// Shutdown flushes and stops the providers, giving up after a short bound.
func (p *Providers) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	var errs []error
	for _, fn := range p.shutdown {
		errs = append(errs, fn(ctx))
	}
	return errors.Join(errs...)
}

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
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/attribute"
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
	// abort cancels exports still running when Shutdown gives up.
	abort context.CancelFunc
}

// abortableExporter lets Shutdown cut off an export that is still retrying
// against a missing collector, so nothing of it outlives Shutdown's bound.
type abortableExporter struct {
	sdktrace.SpanExporter
	abort context.Context
}

func (e abortableExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(e.abort, cancel)
	defer stop()
	return e.SpanExporter.ExportSpans(ctx, spans)
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
	if raw := getenv("OTEL_RESOURCE_ATTRIBUTES"); raw != "" {
		// Extra attributes (deployment.environment, k8s.pod.name, …) are
		// added, but service.name stays the service's own.
		attrs, err := parseResourceAttributes(raw)
		if err != nil {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
		}
		if res, err = resource.Merge(resource.NewSchemaless(attrs...), res); err != nil {
			return nil, fmt.Errorf("telemetry resource: %w", err)
		}
	}

	p := &Providers{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:   prometheus.NewRegistry(),
	}

	sampler, err := samplerFrom(getenv)
	if err != nil {
		return nil, err
	}
	traceOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	exporter, err := newTraceExporter(ctx, getenv)
	if err != nil {
		return nil, err
	}
	if exporter != nil {
		abortCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
		p.abort = abort
		traceOpts = append(traceOpts, sdktrace.WithBatcher(abortableExporter{SpanExporter: exporter, abort: abortCtx}))
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
// or nil. OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL picks grpc or http/protobuf
// (the default, as in the specification). The endpoint is passed explicitly;
// the exporters read the other OTEL_EXPORTER_OTLP_* variables (headers,
// certificates, timeout) themselves.
func newTraceExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	endpoint, signalEndpoint := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" && signalEndpoint == "" {
		return nil, nil
	}
	protocolVar := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	protocol := getenv(protocolVar)
	if protocol == "" {
		protocolVar = "OTEL_EXPORTER_OTLP_PROTOCOL"
		protocol = getenv(protocolVar)
	}
	switch strings.ToLower(protocol) {
	case "", "http/protobuf":
		// A signal endpoint is used as given; the general one gets the
		// signal's path appended, as the specification says.
		if signalEndpoint == "" {
			signalEndpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
		}
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(signalEndpoint))
	case "grpc":
		if signalEndpoint == "" {
			signalEndpoint = endpoint
		}
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(signalEndpoint))
	default:
		return nil, fmt.Errorf("%s: %q is not supported; use grpc or http/protobuf", protocolVar, protocol)
	}
}

// samplerFrom builds the sampler OTEL_TRACES_SAMPLER and its _ARG name:
// parent-based "always on" by default, so a caller's sampling decision
// holds for the whole trace.
func samplerFrom(getenv func(string) string) (sdktrace.Sampler, error) {
	ratio := 1.0
	if arg := getenv("OTEL_TRACES_SAMPLER_ARG"); arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio from 0 to 1", arg)
		}
		ratio = r
	}
	switch name := getenv("OTEL_TRACES_SAMPLER"); name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_SAMPLER: %q is not supported", name)
	}
}

// parseResourceAttributes reads key=value pairs, comma-separated, values
// percent-encoded, as OTEL_RESOURCE_ATTRIBUTES holds them.
func parseResourceAttributes(raw string) ([]attribute.KeyValue, error) {
	var attrs []attribute.KeyValue
	for _, pair := range strings.Split(raw, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", pair)
		}
		value, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", pair, err)
		}
		attrs = append(attrs, attribute.String(k, value))
	}
	return attrs, nil
}

// Shutdown flushes and stops the providers, giving up after a short bound.
func (p *Providers) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if p.abort != nil {
		context.AfterFunc(ctx, p.abort) // flush time is up: stop any export still trying
	}
	var errs []error
	for _, fn := range p.shutdown {
		errs = append(errs, fn(ctx))
	}
	return errors.Join(errs...)
}

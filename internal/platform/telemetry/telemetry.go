// Package telemetry builds the OpenTelemetry providers and the slog logger of
// one service. Nothing here is global but the SDK's error handler
// (ReportErrorsTo): every service gets its own providers (its own
// service.name, its own Prometheus registry) and passes them explicitly, so
// in `all` mode four services in one process still report as four services.
//
// Every request and message has a trace id, for its log lines and problem
// bodies, but spans are recorded only when they go somewhere: with no trace
// exporter and no OTEL_TRACES_SAMPLER, the sampler drops every span, which
// then costs an id and nothing else. Metrics are always served by the service's ops listener at /metrics.
// Each signal — traces, metrics, logs — is also exported over OTLP when the
// standard variables say so: an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, or
// the signal's own OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT), or
// OTEL_<SIGNAL>_EXPORTER=otlp; OTEL_<SIGNAL>_EXPORTER=none or
// OTEL_SDK_DISABLED=true turns the export off.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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

	// logs exports log records over OTLP; nil when logs are not exported.
	logs *sdklog.LoggerProvider
	// consoleLogs sends the console the log records it shows; nil without
	// a console.
	consoleLogs *sdklog.LoggerProvider
	shutdown    []func(context.Context) error
	// abort cancels exports still running when Shutdown gives up.
	abort context.CancelFunc
}

// The OTLP exporters retry a missing collector for up to a minute. These
// wrappers let Shutdown cut such an export off, so nothing of it outlives
// Shutdown's bound.
type (
	abortableSpans struct {
		sdktrace.SpanExporter
		abort context.Context
	}
	abortableMetrics struct {
		sdkmetric.Exporter
		abort context.Context
	}
	abortableLogs struct {
		sdklog.Exporter
		abort context.Context
	}
)

// bound returns ctx, cancelled also when abort is.
func bound(ctx, abort context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(abort, cancel)
	return ctx, func() { stop(); cancel() }
}

func (e abortableSpans) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	ctx, done := bound(ctx, e.abort)
	defer done()
	return e.SpanExporter.ExportSpans(ctx, spans)
}

func (e abortableMetrics) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	ctx, done := bound(ctx, e.abort)
	defer done()
	return e.Exporter.Export(ctx, rm)
}

func (e abortableLogs) Export(ctx context.Context, records []sdklog.Record) error {
	ctx, done := bound(ctx, e.abort)
	defer done()
	return e.Exporter.Export(ctx, records)
}

// New builds the providers of the named service. getenv reads the standard
// OTEL_* variables.
func New(ctx context.Context, service, version string, getenv func(string) string, opts ...Option) (*Providers, error) {
	var set settings
	for _, o := range opts {
		o(&set)
	}
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
	// service.instance.id tells replicas apart where nothing else does: a
	// collector's prometheus exporter makes it the `instance` label, and
	// without it two replicas' counters would land on one series. A new one
	// at each start, unless OTEL_RESOURCE_ATTRIBUTES names one (a pod name).
	if _, ok := res.Set().Value(semconv.ServiceInstanceIDKey); !ok {
		if res, err = resource.Merge(res, resource.NewSchemaless(semconv.ServiceInstanceID(uuid.NewString()))); err != nil {
			return nil, fmt.Errorf("telemetry resource: %w", err)
		}
	}
	traces, err := otlpFor(getenv, "TRACES")
	if err != nil {
		return nil, err
	}
	metrics, err := otlpFor(getenv, "METRICS")
	if err != nil {
		return nil, err
	}
	logs, err := otlpFor(getenv, "LOGS")
	if err != nil {
		return nil, err
	}
	sampler, err := samplerFrom(getenv, traces != nil)
	if err != nil {
		return nil, err
	}
	if set.console != nil && traces == nil && getenv("OTEL_TRACES_SAMPLER") == "" {
		sampler = consoleSampler(set.console.TracesPerSecond)
	}

	abortCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	p := &Providers{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:   prometheus.NewRegistry(),
		abort:      abort,
	}
	fail := func(err error) (*Providers, error) {
		abort()
		_ = p.Shutdown(ctx)
		return nil, err
	}

	traceOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	if traces != nil {
		exporter, err := traces.spanExporter(ctx)
		if err != nil {
			return fail(err)
		}
		traceOpts = append(traceOpts, sdktrace.WithBatcher(abortableSpans{SpanExporter: exporter, abort: abortCtx}))
	}
	var meterOpts []sdkmetric.Option
	if set.console != nil {
		if err := p.addConsole(ctx, *set.console, res, abortCtx, &traceOpts, &meterOpts); err != nil {
			return fail(fmt.Errorf("console exporters: %w", err))
		}
	}
	tp := sdktrace.NewTracerProvider(traceOpts...)
	p.Tracer = tp
	p.shutdown = append(p.shutdown, tp.Shutdown)

	if err := p.Registry.Register(collectors.NewGoCollector()); err != nil {
		return fail(fmt.Errorf("register go collector: %w", err))
	}
	if err := p.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fail(fmt.Errorf("register process collector: %w", err))
	}
	reader, err := otelprom.New(otelprom.WithRegisterer(p.Registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return fail(fmt.Errorf("prometheus exporter: %w", err))
	}
	meterOpts = append(meterOpts, sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
	if metrics != nil {
		exporter, err := metrics.metricExporter(ctx)
		if err != nil {
			return fail(err)
		}
		// The interval is OTEL_METRIC_EXPORT_INTERVAL (60 s by default),
		// read by the SDK; Shutdown pushes a last collection.
		meterOpts = append(meterOpts, sdkmetric.WithReader(
			sdkmetric.NewPeriodicReader(abortableMetrics{Exporter: exporter, abort: abortCtx})))
	}
	mp := sdkmetric.NewMeterProvider(meterOpts...)
	p.Meter = mp
	p.shutdown = append(p.shutdown, mp.Shutdown)
	// The Go runtime by the semantic conventions (go.memory.used,
	// go.goroutine.count, …), so that OTLP receives it too: the Prometheus
	// collectors above serve /metrics only.
	if err := runtime.Start(runtime.WithMeterProvider(mp)); err != nil {
		return fail(fmt.Errorf("runtime metrics: %w", err))
	}

	if logs != nil {
		exporter, err := logs.logExporter(ctx)
		if err != nil {
			return fail(err)
		}
		p.logs = sdklog.NewLoggerProvider(sdklog.WithResource(res),
			sdklog.WithProcessor(sdklog.NewBatchProcessor(abortableLogs{Exporter: exporter, abort: abortCtx})))
		p.shutdown = append(p.shutdown, p.logs.Shutdown)
	}
	return p, nil
}

// otlp is where one signal is exported.
type otlp struct {
	// protocol is "grpc" or "http/protobuf".
	protocol string
	// endpoint is a URL; with http/protobuf it includes the signal's path.
	// Empty means the exporter's default (localhost:4317 or :4318).
	endpoint string
	// path is the signal's path under a general http/protobuf endpoint.
	path string
}

// otlpFor reads whether and where the signal (TRACES, METRICS or LOGS) is
// exported over OTLP; nil means it is not. The endpoint and protocol are
// read here and passed to the exporter; the exporters read the other
// OTEL_EXPORTER_OTLP_* variables (headers, certificates, timeout,
// compression) themselves.
func otlpFor(getenv func(string) string, signal string) (*otlp, error) {
	exporterVar := "OTEL_" + signal + "_EXPORTER"
	endpoint, signalEndpoint := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT")
	switch exporter := strings.ToLower(strings.TrimSpace(getenv(exporterVar))); exporter {
	case "":
		if endpoint == "" && signalEndpoint == "" {
			return nil, nil
		}
	case "otlp":
	case "none":
		return nil, nil
	case "prometheus":
		// /metrics is always served; there is nothing to push.
		if signal == "METRICS" {
			return nil, nil
		}
		fallthrough
	default:
		return nil, fmt.Errorf("%s: %q is not supported; use otlp or none", exporterVar, exporter)
	}
	if disabled, _ := strconv.ParseBool(getenv("OTEL_SDK_DISABLED")); disabled {
		return nil, nil
	}
	protocolVar := "OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"
	protocol := getenv(protocolVar)
	if protocol == "" {
		protocolVar = "OTEL_EXPORTER_OTLP_PROTOCOL"
		protocol = getenv(protocolVar)
	}
	o := &otlp{protocol: strings.ToLower(protocol), endpoint: signalEndpoint, path: "/v1/" + strings.ToLower(signal)}
	switch o.protocol {
	case "", "http/protobuf":
		// A signal endpoint is used as given; the general one gets the
		// signal's path appended, as the specification says.
		o.protocol = "http/protobuf"
		if o.endpoint == "" && endpoint != "" {
			o.endpoint = strings.TrimSuffix(endpoint, "/") + o.path
		}
	case "grpc":
		if o.endpoint == "" {
			o.endpoint = endpoint
		}
	default:
		return nil, fmt.Errorf("%s: %q is not supported; use grpc or http/protobuf", protocolVar, protocol)
	}
	return o, nil
}

func (o *otlp) spanExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	if o.protocol == "grpc" {
		var opts []otlptracegrpc.Option
		if o.endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(o.endpoint))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	var opts []otlptracehttp.Option
	if o.endpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(o.endpoint))
	}
	return otlptracehttp.New(ctx, opts...)
}

func (o *otlp) metricExporter(ctx context.Context) (sdkmetric.Exporter, error) {
	if o.protocol == "grpc" {
		var opts []otlpmetricgrpc.Option
		if o.endpoint != "" {
			opts = append(opts, otlpmetricgrpc.WithEndpointURL(o.endpoint))
		}
		return otlpmetricgrpc.New(ctx, opts...)
	}
	var opts []otlpmetrichttp.Option
	if o.endpoint != "" {
		opts = append(opts, otlpmetrichttp.WithEndpointURL(o.endpoint))
	}
	return otlpmetrichttp.New(ctx, opts...)
}

func (o *otlp) logExporter(ctx context.Context) (sdklog.Exporter, error) {
	if o.protocol == "grpc" {
		var opts []otlploggrpc.Option
		if o.endpoint != "" {
			opts = append(opts, otlploggrpc.WithEndpointURL(o.endpoint))
		}
		return otlploggrpc.New(ctx, opts...)
	}
	var opts []otlploghttp.Option
	if o.endpoint != "" {
		opts = append(opts, otlploghttp.WithEndpointURL(o.endpoint))
	}
	return otlploghttp.New(ctx, opts...)
}

// samplerFrom builds the sampler OTEL_TRACES_SAMPLER and its _ARG name:
// parent-based "always on" by default when spans are exported, so a
// caller's sampling decision holds for the whole trace, and "always off"
// when they are not: building spans nobody receives was 4.4 % of the CPU
// of a request (docs/benchmarks.md). A sampler named explicitly
// is used either way (tests record spans in the process).
func samplerFrom(getenv func(string) string, exported bool) (sdktrace.Sampler, error) {
	ratio := 1.0
	if arg := getenv("OTEL_TRACES_SAMPLER_ARG"); arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio from 0 to 1", arg)
		}
		ratio = r
	}
	name := getenv("OTEL_TRACES_SAMPLER")
	if name == "" && !exported {
		name = "always_off"
	}
	switch name {
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
// The providers stop side by side: one stuck on a missing collector must
// not use up the others' time, since a provider that finds its time spent
// before it starts returns without stopping its exporter.
func (p *Providers) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	context.AfterFunc(ctx, p.abort) // flush time is up: stop any export still trying
	errs := make([]error, len(p.shutdown))
	var wg sync.WaitGroup
	for i, fn := range p.shutdown {
		wg.Go(func() { errs[i] = fn(ctx) }) // each returns by the deadline
	}
	wg.Wait()
	return errors.Join(errs...)
}

package telemetry

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
)

// Console sends a service's telemetry to a Blueprint console (package
// console) besides wherever the OTEL_* variables send it, at a cost that
// does not grow with the traffic: a bounded number of traces a second, the
// log records of those traces and every warning and error, and the metrics
// every ConsoleMetricInterval.
type Console struct {
	// Endpoint is the console's OTLP/HTTP base URL: http://127.0.0.1:9400.
	Endpoint string
	// TracesPerSecond bounds the traces the service starts a second when no
	// trace exporter or sampler is configured; a trace started elsewhere
	// follows its caller's decision, so a sampled request is whole.
	TracesPerSecond float64
}

// ConsoleMetricInterval is how often metrics go to the console: often
// enough for its rates and breaker states to be live.
const ConsoleMetricInterval = 5 * time.Second

// consoleBatchTimeout is how long spans and logs wait to be sent to the
// console: a trace shows about a second after its request.
const consoleBatchTimeout = time.Second

// consoleLogQueue is how many log records wait for the console at most;
// past it, records are dropped (and counted by the SDK).
const consoleLogQueue = 256

// Option changes how New builds the providers.
type Option func(*settings)

type settings struct{ console *Console }

// WithConsole also sends the service's telemetry to the console c.
func WithConsole(c Console) Option { return func(s *settings) { s.console = &c } }

// consoleSampler starts at most perSecond traces a second (a token bucket
// holding one second's worth), and follows the parent's decision for spans
// of a trace already started.
func consoleSampler(perSecond float64) sdktrace.Sampler {
	return sdktrace.ParentBased(rateSampler{limit: rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond)))})
}

type rateSampler struct{ limit *rate.Limiter }

func (s rateSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	decision := sdktrace.Drop
	if s.limit.Allow() {
		decision = sdktrace.RecordAndSample
	}
	return sdktrace.SamplingResult{Decision: decision, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}

func (s rateSampler) Description() string { return "RateLimited" }

// addConsole adds the console's exporters to the providers being built.
func (p *Providers) addConsole(ctx context.Context, c Console, res *resource.Resource, abort context.Context,
	traceOpts *[]sdktrace.TracerProviderOption, meterOpts *[]sdkmetric.Option,
) error {
	base := strings.TrimSuffix(c.Endpoint, "/")
	spans, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(base+"/v1/traces"))
	if err != nil {
		return err
	}
	*traceOpts = append(*traceOpts, sdktrace.WithBatcher(abortableSpans{SpanExporter: spans, abort: abort},
		sdktrace.WithBatchTimeout(consoleBatchTimeout)))
	metrics, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(base+"/v1/metrics"))
	if err != nil {
		return err
	}
	*meterOpts = append(*meterOpts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(
		abortableMetrics{Exporter: metrics, abort: abort}, sdkmetric.WithInterval(ConsoleMetricInterval))))
	logs, err := otlploghttp.New(ctx, otlploghttp.WithEndpointURL(base+"/v1/logs"))
	if err != nil {
		return err
	}
	// The queue holds a second of the sampled traces' records and the
	// warnings: the default (2,048) preallocates about a megabyte per
	// service for a flow that rarely tops a hundred a second.
	p.consoleLogs = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(
		sdklog.NewBatchProcessor(abortableLogs{Exporter: logs, abort: abort}, sdklog.WithExportInterval(consoleBatchTimeout),
			sdklog.WithMaxQueueSize(consoleLogQueue), sdklog.WithExportMaxBatchSize(consoleLogQueue))))
	p.shutdown = append(p.shutdown, p.consoleLogs.Shutdown)
	return nil
}

// sampledOrWarning is a handler enabled for every record of a sampled
// trace, whatever its level (the console shows a trace's debug lines too),
// and for warnings and errors: the console receives what it can show
// beside a trace, and the problems, not every line.
type sampledOrWarning struct{ slog.Handler }

func (h sampledOrWarning) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || trace.SpanContextFromContext(ctx).IsSampled()
}

func (h sampledOrWarning) WithAttrs(attrs []slog.Attr) slog.Handler {
	return sampledOrWarning{h.Handler.WithAttrs(attrs)}
}

func (h sampledOrWarning) WithGroup(name string) slog.Handler {
	return sampledOrWarning{h.Handler.WithGroup(name)}
}

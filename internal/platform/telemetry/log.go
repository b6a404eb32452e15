package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// LogFormat selects how log records are written.
type LogFormat string

// The log formats. Auto means text on a terminal and JSON otherwise.
const (
	LogJSON LogFormat = "json"
	LogText LogFormat = "text"
	LogAuto LogFormat = "auto"
)

// ParseLogLevel parses debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not a log level; use debug, info, warn or error", s)
	}
	return l, nil
}

// ParseLogFormat parses json, text or auto.
func ParseLogFormat(s string) (LogFormat, error) {
	switch f := LogFormat(strings.ToLower(s)); f {
	case LogJSON, LogText, LogAuto:
		return f, nil
	}
	return "", fmt.Errorf("%q is not a log format; use json, text or auto", s)
}

// NewLogger returns the process's logger. Every record written with a
// context carries the trace_id and span_id of the span in it and the
// request_id of the request it serves, so a log line always leads to its
// trace. Services add their own "service" attribute with With.
func NewLogger(w io.Writer, format LogFormat, terminal bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == LogText || (format == LogAuto && terminal) {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(contextHandler{Handler: h})
}

// ReportErrorsTo makes what the OpenTelemetry SDK cannot do — above all an
// export that failed while the collector is away — a warning on logger,
// where the SDK would print a plain line on stderr that log pipelines do
// not parse. The SDK has one error handler per process, so this is the one
// process-wide setting of the package; the errors name the signal
// ("traces export: …", or the /v1/logs URL) and the collector's address.
func ReportErrorsTo(logger *slog.Logger) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("telemetry error", "error", err)
	}))
}

// Logger returns the service's logger: base, and when logs are exported
// over OTLP (the otelslog bridge), also the OTLP pipeline, which receives
// every record base writes, at base's level; with a console, also the
// console's, which receives what sampledOrWarning lets through. OTLP
// records carry the trace and span ids in fields of their own and the
// service in their resource, so only the request id is added to them as an
// attribute.
func (p *Providers) Logger(base *slog.Logger) *slog.Logger {
	handlers := []slog.Handler{base.Handler()}
	if p.logs != nil {
		bridge := otelslog.NewHandler(scope, otelslog.WithLoggerProvider(p.logs))
		handlers = append(handlers, levelFrom{Handler: contextHandler{Handler: bridge, spanInRecord: true}, of: base.Handler()})
	}
	if p.consoleLogs != nil {
		bridge := otelslog.NewHandler(scope, otelslog.WithLoggerProvider(p.consoleLogs))
		handlers = append(handlers, sampledOrWarning{contextHandler{Handler: bridge, spanInRecord: true}})
	}
	if len(handlers) == 1 {
		return base
	}
	return slog.New(slog.NewMultiHandler(handlers...))
}

// scope is the instrumentation scope of the log records sent over OTLP.
const scope = "github.com/ds-blueprint/blueprint"

// contextHandler adds correlation ids from the context to each record: the
// request id of the request it serves, and the trace and span ids unless
// the records carry them already (spanInRecord).
type contextHandler struct {
	slog.Handler
	spanInRecord bool
}

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !h.spanInRecord {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{Handler: h.Handler.WithAttrs(attrs), spanInRecord: h.spanInRecord}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{Handler: h.Handler.WithGroup(name), spanInRecord: h.spanInRecord}
}

// levelFrom is a handler enabled at the levels another one is.
type levelFrom struct {
	slog.Handler
	of slog.Handler
}

func (h levelFrom) Enabled(ctx context.Context, l slog.Level) bool { return h.of.Enabled(ctx, l) }

func (h levelFrom) WithAttrs(attrs []slog.Attr) slog.Handler {
	return levelFrom{Handler: h.Handler.WithAttrs(attrs), of: h.of}
}

func (h levelFrom) WithGroup(name string) slog.Handler {
	return levelFrom{Handler: h.Handler.WithGroup(name), of: h.of}
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

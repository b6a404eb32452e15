package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// testSpan is the span context of a request being served.
func testSpan(t *testing.T) trace.SpanContext {
	t.Helper()
	traceID, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil {
		t.Fatalf("TraceIDFromHex: %v", err)
	}
	spanID, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	if err != nil {
		t.Fatalf("SpanIDFromHex: %v", err)
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
}

// jsonRecords parses every line of buf as a JSON log record.
func jsonRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

func TestNewLoggerAddsCorrelationIDs(t *testing.T) {
	t.Parallel()
	sc := testSpan(t)
	unset := "" // marks an attribute that must be absent
	tests := []struct {
		name string
		ctx  func() context.Context
		want map[string]string
	}{
		{
			name: "plain context",
			ctx:  context.Background,
			want: map[string]string{"trace_id": unset, "span_id": unset, "request_id": unset},
		},
		{
			name: "context with a span",
			ctx:  func() context.Context { return trace.ContextWithSpanContext(context.Background(), sc) },
			want: map[string]string{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String(), "request_id": unset},
		},
		{
			name: "context with a request id",
			ctx:  func() context.Context { return telemetry.WithRequestID(context.Background(), "req-1") },
			want: map[string]string{"trace_id": unset, "span_id": unset, "request_id": "req-1"},
		},
		{
			name: "context with both",
			ctx: func() context.Context {
				return telemetry.WithRequestID(trace.ContextWithSpanContext(context.Background(), sc), "req-2")
			},
			want: map[string]string{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String(), "request_id": "req-2"},
		},
		{
			name: "context with an invalid span context",
			ctx: func() context.Context {
				return trace.ContextWithSpanContext(context.Background(), trace.SpanContext{})
			},
			want: map[string]string{"trace_id": unset, "span_id": unset, "request_id": unset},
		},
		{
			name: "context with an empty request id",
			ctx:  func() context.Context { return telemetry.WithRequestID(context.Background(), "") },
			want: map[string]string{"trace_id": unset, "span_id": unset, "request_id": unset},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			// Services log through a logger made With their name: the ids
			// must survive that.
			logger := telemetry.NewLogger(&buf, telemetry.LogJSON, false, slog.LevelInfo).With("service", "users")
			logger.InfoContext(tt.ctx(), "user created", "user_id", "u-1")

			recs := jsonRecords(t, &buf)
			if len(recs) != 1 {
				t.Fatalf("wrote %d records, want 1: %s", len(recs), buf.String())
			}
			rec := recs[0]
			for key, want := range tt.want {
				got, ok := rec[key]
				switch {
				case want == unset && ok:
					t.Errorf("record has %s = %v, want none: %s", key, got, buf.String())
				case want != unset && got != want:
					t.Errorf("record %s = %v, want %q: %s", key, got, want, buf.String())
				}
			}
			for key, want := range map[string]string{"msg": "user created", "service": "users", "user_id": "u-1", "level": "INFO"} {
				if got := rec[key]; got != want {
					t.Errorf("record %s = %v, want %q", key, got, want)
				}
			}
		})
	}
}

func TestNewLoggerFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		format   telemetry.LogFormat
		terminal bool
		wantJSON bool
	}{
		{name: "json to a terminal", format: telemetry.LogJSON, terminal: true, wantJSON: true},
		{name: "json to a pipe", format: telemetry.LogJSON, terminal: false, wantJSON: true},
		{name: "text to a terminal", format: telemetry.LogText, terminal: true, wantJSON: false},
		{name: "text to a pipe", format: telemetry.LogText, terminal: false, wantJSON: false},
		{name: "auto to a terminal", format: telemetry.LogAuto, terminal: true, wantJSON: false},
		{name: "auto to a pipe", format: telemetry.LogAuto, terminal: false, wantJSON: true},
	}
	sc := testSpan(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			logger := telemetry.NewLogger(&buf, tt.format, tt.terminal, slog.LevelInfo)
			ctx := telemetry.WithRequestID(trace.ContextWithSpanContext(context.Background(), sc), "req-1")
			logger.InfoContext(ctx, "hello")
			line := buf.String()

			isJSON := json.Valid(bytes.TrimSpace(buf.Bytes()))
			if isJSON != tt.wantJSON {
				t.Fatalf("NewLogger(%q, terminal=%v) wrote %q: JSON = %v, want %v", tt.format, tt.terminal, line, isJSON, tt.wantJSON)
			}
			if tt.wantJSON {
				return
			}
			// Text is for people, but it still leads to the trace.
			for _, want := range []string{"msg=hello", "trace_id=" + sc.TraceID().String(), "span_id=" + sc.SpanID().String(), "request_id=req-1"} {
				if !strings.Contains(line, want) {
					t.Errorf("NewLogger(%q, terminal=%v) wrote %q, want it to contain %q", tt.format, tt.terminal, line, want)
				}
			}
		})
	}
}

func TestNewLoggerLevel(t *testing.T) {
	t.Parallel()
	all := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}
	tests := []struct {
		level slog.Level
		want  []string
	}{
		{level: slog.LevelDebug, want: []string{"DEBUG", "INFO", "WARN", "ERROR"}},
		{level: slog.LevelInfo, want: []string{"INFO", "WARN", "ERROR"}},
		{level: slog.LevelWarn, want: []string{"WARN", "ERROR"}},
		{level: slog.LevelError, want: []string{"ERROR"}},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			logger := telemetry.NewLogger(&buf, telemetry.LogJSON, false, tt.level)
			for _, l := range all {
				logger.Log(context.Background(), l, "at "+l.String())
			}
			var got []string
			for _, rec := range jsonRecords(t, &buf) {
				got = append(got, rec["level"].(string))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("NewLogger(level %v) wrote levels %v, want %v", tt.level, got, tt.want)
			}
		})
	}
}

func TestParseLogLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{in: "debug", want: slog.LevelDebug},
		{in: "info", want: slog.LevelInfo},
		{in: "warn", want: slog.LevelWarn},
		{in: "error", want: slog.LevelError},
		{in: "DEBUG", want: slog.LevelDebug},
		{in: "Error", want: slog.LevelError},
		{in: "", wantErr: true},
		{in: "verbose", wantErr: true},
		{in: "warning", wantErr: true},
		{in: "trace", wantErr: true},
		{in: "fatal", wantErr: true},
		{in: "4", wantErr: true},
		{in: " info", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := telemetry.ParseLogLevel(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseLogLevel(%q) = %v, nil, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), "debug, info, warn or error") {
					t.Errorf("ParseLogLevel(%q) error = %q, want it to list the levels", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseLogLevel(%q) = %v, %v, want %v, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseLogFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    telemetry.LogFormat
		wantErr bool
	}{
		{in: "json", want: telemetry.LogJSON},
		{in: "text", want: telemetry.LogText},
		{in: "auto", want: telemetry.LogAuto},
		{in: "JSON", want: telemetry.LogJSON},
		{in: "Text", want: telemetry.LogText},
		{in: "", wantErr: true},
		{in: "yaml", wantErr: true},
		{in: "logfmt", wantErr: true},
		{in: " json", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := telemetry.ParseLogFormat(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseLogFormat(%q) = %q, nil, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), "json, text or auto") {
					t.Errorf("ParseLogFormat(%q) error = %q, want it to list the formats", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseLogFormat(%q) = %q, %v, want %q, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{name: "none", ctx: context.Background(), want: ""},
		{name: "set", ctx: telemetry.WithRequestID(context.Background(), "req-1"), want: "req-1"},
		{name: "inner wins", ctx: telemetry.WithRequestID(telemetry.WithRequestID(context.Background(), "outer"), "inner"), want: "inner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := telemetry.RequestID(tt.ctx); got != tt.want {
				t.Errorf("RequestID() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSDKErrorsAreLogged: a span export that fails because the collector
// is away becomes a warning in the process's log, naming the signal and
// the address, instead of a plain line on stderr.
func TestSDKErrorsAreLogged(t *testing.T) {
	// Not parallel: the SDK's error handler and the variables its
	// exporters read are the process's.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")     // export at once
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "200") // and give up soon
	var buf logtest.Buffer
	telemetry.ReportErrorsTo(telemetry.NewLogger(&buf, telemetry.LogJSON, false, slog.LevelInfo))
	t.Cleanup(func() { telemetry.ReportErrorsTo(slog.New(slog.NewTextHandler(os.Stderr, nil))) })

	endpoint := closedEndpoint(t)
	p := newTestProviders(t, "gateway", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces"})
	_, span := p.Tracer.Tracer("test").Start(context.Background(), "work")
	span.End()

	testwait.For(t, 10*time.Second, "a telemetry error logged", func() bool {
		return len(buf.Records(t, "telemetry error")) > 0
	})
	rec := buf.Records(t, "telemetry error")[0]
	if msg, _ := rec["error"].(string); rec["level"] != "WARN" || !strings.Contains(msg, "traces") || !strings.Contains(msg, strings.TrimPrefix(endpoint, "http://")) {
		t.Errorf("logged %v, want a WARN whose error names the traces export and %s", rec, endpoint)
	}
}

// Package telemetrytest runs an OTLP/HTTP receiver for tests, the part of an
// OpenTelemetry Collector that services export to. Point
// OTEL_EXPORTER_OTLP_ENDPOINT at Collector.URL, run the services, and read
// back the spans, metrics and log records each service exported, by service
// name. Nothing is faked on the services' side: they export exactly as they
// would to a real collector.
package telemetrytest

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Collector receives OTLP over HTTP (protobuf) on /v1/traces, /v1/metrics
// and /v1/logs.
type Collector struct {
	// URL is the base URL, the value of OTEL_EXPORTER_OTLP_ENDPOINT.
	URL string

	mu      sync.Mutex
	spans   []Span
	metrics []Metric
	logs    []LogRecord
	paths   []string
}

// Span is an exported span and the service that exported it.
type Span struct {
	Service string
	*tracepb.Span
}

// Metric is an exported metric and the service that exported it.
type Metric struct {
	Service string
	*metricspb.Metric
}

// LogRecord is an exported log record and the service that exported it.
type LogRecord struct {
	Service string
	*logspb.LogRecord
}

// NewCollector starts a receiver that lives as long as the test.
func NewCollector(t testing.TB) *Collector {
	t.Helper()
	c := &Collector{}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paths = append(c.paths, r.Method+" "+r.URL.Path)
	var resp proto.Message
	switch r.URL.Path {
	case "/v1/traces":
		var req coltrace.ExportTraceServiceRequest
		if err = proto.Unmarshal(data, &req); err == nil {
			for _, rs := range req.GetResourceSpans() {
				service := serviceName(rs.GetResource())
				for _, ss := range rs.GetScopeSpans() {
					for _, s := range ss.GetSpans() {
						c.spans = append(c.spans, Span{Service: service, Span: s})
					}
				}
			}
		}
		resp = &coltrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		var req colmetrics.ExportMetricsServiceRequest
		if err = proto.Unmarshal(data, &req); err == nil {
			for _, rm := range req.GetResourceMetrics() {
				service := serviceName(rm.GetResource())
				for _, sm := range rm.GetScopeMetrics() {
					for _, m := range sm.GetMetrics() {
						c.metrics = append(c.metrics, Metric{Service: service, Metric: m})
					}
				}
			}
		}
		resp = &colmetrics.ExportMetricsServiceResponse{}
	case "/v1/logs":
		var req collogs.ExportLogsServiceRequest
		if err = proto.Unmarshal(data, &req); err == nil {
			for _, rl := range req.GetResourceLogs() {
				service := serviceName(rl.GetResource())
				for _, sl := range rl.GetScopeLogs() {
					for _, l := range sl.GetLogRecords() {
						c.logs = append(c.logs, LogRecord{Service: service, LogRecord: l})
					}
				}
			}
		}
		resp = &collogs.ExportLogsServiceResponse{}
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Spans returns the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.spans)
}

// Metrics returns the metrics received so far, one entry per metric per
// export.
func (c *Collector) Metrics() []Metric {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.metrics)
}

// Logs returns the log records received so far.
func (c *Collector) Logs() []LogRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.logs)
}

// Paths returns "METHOD /path" of every request received so far.
func (c *Collector) Paths() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.paths)
}

func serviceName(r *resourcepb.Resource) string {
	return Attr(r.GetAttributes(), "service.name")
}

// Attr returns the value of the attribute key as a string ("" when absent).
func Attr(attrs []*commonpb.KeyValue, key string) string {
	for _, kv := range attrs {
		if kv.GetKey() == key {
			return ValueString(kv.GetValue())
		}
	}
	return ""
}

// ValueString renders an OTLP value: strings as they are, numbers and
// booleans in Go syntax, anything else in protobuf text form.
func ValueString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case nil:
		return ""
	}
	return v.String()
}

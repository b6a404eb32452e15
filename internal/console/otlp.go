package console

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// maxExportBytes bounds one OTLP request, as decompressed: an SDK's batch
// is far smaller (512 spans by default).
const maxExportBytes = 16 << 20

// receiver serves OTLP/HTTP (the specification's /v1/traces, /v1/metrics
// and /v1/logs, protobuf or JSON, optionally gzipped) into a Store.
type receiver struct{ store *Store }

func (rc receiver) traces(w http.ResponseWriter, r *http.Request) {
	var req coltrace.ExportTraceServiceRequest
	if decode(w, r, &req) {
		rc.store.AddSpans(spansOf(req.GetResourceSpans()))
		reply(w, r, &coltrace.ExportTraceServiceResponse{})
	}
}

func (rc receiver) logs(w http.ResponseWriter, r *http.Request) {
	var req collogs.ExportLogsServiceRequest
	if decode(w, r, &req) {
		rc.store.AddLogs(logsOf(req.GetResourceLogs()))
		reply(w, r, &collogs.ExportLogsServiceResponse{})
	}
}

func (rc receiver) metrics(w http.ResponseWriter, r *http.Request) {
	var req colmetrics.ExportMetricsServiceRequest
	if decode(w, r, &req) {
		rc.store.addSamples(samplesOf(req.GetResourceMetrics()))
		reply(w, r, &colmetrics.ExportMetricsServiceResponse{})
	}
}

// isJSON reports whether the request is OTLP/JSON rather than protobuf.
func isJSON(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/json"
}

// decode reads an export request into m, or answers the error itself and
// returns false. Errors are 4xx: an SDK does not retry them.
func decode(w http.ResponseWriter, r *http.Request, m proto.Message) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-protobuf" && mt != "application/json" {
		http.Error(w, "Content-Type must be application/x-protobuf or application/json", http.StatusUnsupportedMediaType)
		return false
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, maxExportBytes)
	switch r.Header.Get("Content-Encoding") {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "bad gzip body: "+err.Error(), http.StatusBadRequest)
			return false
		}
		defer zr.Close()
		body = io.LimitReader(zr, maxExportBytes+1)
	default:
		http.Error(w, "Content-Encoding must be gzip or none", http.StatusUnsupportedMediaType)
		return false
	}
	data, err := io.ReadAll(body)
	if err == nil && len(data) > maxExportBytes {
		err = fmt.Errorf("more than %d bytes", maxExportBytes)
	}
	if err == nil {
		if isJSON(r) {
			err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
		} else {
			err = proto.Unmarshal(data, m)
		}
	}
	if err != nil {
		http.Error(w, "bad export request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// reply answers an export with its (empty: nothing rejected) response, in
// the request's encoding.
func reply(w http.ResponseWriter, r *http.Request, m proto.Message) {
	var data []byte
	if isJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		data, _ = protojson.Marshal(m)
	} else {
		w.Header().Set("Content-Type", "application/x-protobuf")
		data, _ = proto.Marshal(m)
	}
	_, _ = w.Write(data)
}

// origin is who sent a batch: the service and replica its resource names.
func origin(res *resourcepb.Resource) (service, instance string) {
	for _, kv := range res.GetAttributes() {
		switch kv.GetKey() {
		case "service.name":
			service = text(kv.GetValue())
		case "service.instance.id":
			instance = text(kv.GetValue())
		}
	}
	if service == "" {
		service = "unknown_service"
	}
	return service, instance
}

var spanKinds = map[tracepb.Span_SpanKind]string{
	tracepb.Span_SPAN_KIND_SERVER: "server", tracepb.Span_SPAN_KIND_CLIENT: "client",
	tracepb.Span_SPAN_KIND_PRODUCER: "producer", tracepb.Span_SPAN_KIND_CONSUMER: "consumer",
}

func spansOf(batches []*tracepb.ResourceSpans) []Span {
	var out []Span
	for _, rs := range batches {
		service, instance := origin(rs.GetResource())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				kind, ok := spanKinds[sp.GetKind()]
				if !ok {
					kind = "internal"
				}
				s := Span{
					TraceID: hexID(sp.GetTraceId()), SpanID: hexID(sp.GetSpanId()), ParentID: hexID(sp.GetParentSpanId()),
					Service: service, Instance: instance, Name: sp.GetName(), Kind: kind,
					Start: unixNano(sp.GetStartTimeUnixNano()), End: unixNano(sp.GetEndTimeUnixNano()),
					Error:         sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					StatusMessage: sp.GetStatus().GetMessage(),
					Attrs:         attrs(sp.GetAttributes()),
				}
				if s.TraceID == "" || s.SpanID == "" {
					continue // not a span anything can point at
				}
				for _, e := range sp.GetEvents() {
					s.Events = append(s.Events, Event{Time: unixNano(e.GetTimeUnixNano()), Name: e.GetName(), Attrs: attrs(e.GetAttributes())})
				}
				out = append(out, s)
			}
		}
	}
	return out
}

func logsOf(batches []*logspb.ResourceLogs) []LogRecord {
	var out []LogRecord
	for _, rl := range batches {
		service, _ := origin(rl.GetResource())
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				at := lr.GetTimeUnixNano()
				if at == 0 {
					at = lr.GetObservedTimeUnixNano()
				}
				severity := lr.GetSeverityText()
				if severity == "" {
					severity = severityName(lr.GetSeverityNumber())
				}
				out = append(out, LogRecord{
					Time: unixNano(at), Service: service, Severity: strings.ToUpper(severity), Body: text(lr.GetBody()),
					TraceID: hexID(lr.GetTraceId()), SpanID: hexID(lr.GetSpanId()), Attrs: attrs(lr.GetAttributes()),
				})
			}
		}
	}
	return out
}

// severityName names a severity number by its range (TRACE 1–4, DEBUG
// 5–8, INFO 9–12, WARN 13–16, ERROR 17–20, FATAL 21–24).
func severityName(n logspb.SeverityNumber) string {
	names := []string{"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
	if n < 1 || n > 24 {
		return ""
	}
	return names[(n-1)/4]
}

// dataPoint is what every kind of OTLP data point has.
type dataPoint interface {
	GetAttributes() []*commonpb.KeyValue
	GetStartTimeUnixNano() uint64
	GetTimeUnixNano() uint64
}

func samplesOf(batches []*metricspb.ResourceMetrics) []sample {
	var out []sample
	for _, rm := range batches {
		service, instance := origin(rm.GetResource())
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				add := func(dp dataPoint, value, sum float64, temporality metricspb.AggregationTemporality) {
					out = append(out, sample{
						Point: Point{Service: service, Instance: instance, Name: m.GetName(), Attrs: attrs(dp.GetAttributes()),
							Value: value, Sum: sum, At: unixNano(dp.GetTimeUnixNano())},
						Start: unixNano(dp.GetStartTimeUnixNano()),
						Delta: temporality == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA,
					})
				}
				switch d := m.GetData().(type) {
				case *metricspb.Metric_Gauge:
					for _, dp := range d.Gauge.GetDataPoints() {
						add(dp, number(dp), 0, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_UNSPECIFIED)
					}
				case *metricspb.Metric_Sum:
					for _, dp := range d.Sum.GetDataPoints() {
						add(dp, number(dp), 0, d.Sum.GetAggregationTemporality())
					}
				case *metricspb.Metric_Histogram:
					for _, dp := range d.Histogram.GetDataPoints() {
						add(dp, float64(dp.GetCount()), dp.GetSum(), d.Histogram.GetAggregationTemporality())
					}
				case *metricspb.Metric_ExponentialHistogram:
					for _, dp := range d.ExponentialHistogram.GetDataPoints() {
						add(dp, float64(dp.GetCount()), dp.GetSum(), d.ExponentialHistogram.GetAggregationTemporality())
					}
				}
			}
		}
	}
	return out
}

func number(dp *metricspb.NumberDataPoint) float64 {
	if v, ok := dp.GetValue().(*metricspb.NumberDataPoint_AsInt); ok {
		return float64(v.AsInt)
	}
	return dp.GetAsDouble()
}

// attrs turns OTLP attributes into text, sorted by key.
func attrs(kvs []*commonpb.KeyValue) []Attr {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]Attr, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, Attr{Key: kv.GetKey(), Value: text(kv.GetValue())})
	}
	slices.SortFunc(out, func(a, b Attr) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// text is an attribute value as the console prints it.
func text(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		parts := make([]string, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			parts = append(parts, text(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case *commonpb.AnyValue_KvlistValue:
		parts := make([]string, 0, len(x.KvlistValue.GetValues()))
		for _, kv := range x.KvlistValue.GetValues() {
			parts = append(parts, kv.GetKey()+"="+text(kv.GetValue()))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return ""
}

// hexID is a trace or span id as hex, "" when absent or all zeros.
func hexID(b []byte) string {
	for _, c := range b {
		if c != 0 {
			return hex.EncodeToString(b)
		}
	}
	return ""
}

func unixNano(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

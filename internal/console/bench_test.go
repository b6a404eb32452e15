package console_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/ds-blueprint/blueprint/internal/console"
)

// orderTrace is an export of one order's trace as the services send it:
// 22 spans with about six attributes each.
func orderTrace(n int) []byte {
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	traceID := []byte(fmt.Sprintf("%016d", n))
	var spans []*tracepb.Span
	start := uint64(time.Now().UnixNano())
	for i := range 22 {
		spans = append(spans, &tracepb.Span{
			TraceId: traceID, SpanId: []byte(fmt.Sprintf("%08d", i+1)), ParentSpanId: []byte(fmt.Sprintf("%08d", i)),
			Name: "INSERT outbox", Kind: tracepb.Span_SPAN_KIND_CLIENT,
			StartTimeUnixNano: start + uint64(i)*1000, EndTimeUnixNano: start + uint64(i)*1000 + 500,
			Attributes: []*commonpb.KeyValue{str("db.system.name", "sqlite"), str("db.operation.name", "INSERT"),
				str("db.collection.name", "outbox"), str("db.query.text", "INSERT INTO outbox (id, subject, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5)"),
				str("server.address", "127.0.0.1"), str("blueprint.order.id", "01a251b9-8279-7e52-a6c8-1e04bc726089")},
		})
	}
	req := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "orders"), str("service.instance.id", "b7b3879a")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}
	body, err := proto.Marshal(req)
	if err != nil {
		panic(err)
	}
	return body
}

// BenchmarkReceiveTrace is the console's side of one order's trace:
// decoding its export and keeping it, the store full (the oldest trace
// replaced each time).
func BenchmarkReceiveTrace(b *testing.B) {
	store := console.NewStore(console.DefaultLimits)
	h, err := console.NewHandler(console.Config{Store: store, Logger: slog.New(slog.DiscardHandler), Now: time.Now})
	if err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, 2*console.DefaultLimits.Traces)
	for i := range bodies {
		bodies[i] = orderTrace(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		req := httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Content-Type", "application/x-protobuf")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("export: %d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkStoreFull reports the heap a full store holds: the default
// 1,000 traces, each an order's 22 spans, received over OTLP.
func BenchmarkStoreFull(b *testing.B) {
	var held uint64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		store := console.NewStore(console.DefaultLimits)
		h, err := console.NewHandler(console.Config{Store: store, Logger: slog.New(slog.DiscardHandler), Now: time.Now})
		if err != nil {
			b.Fatal(err)
		}
		for i := range console.DefaultLimits.Traces {
			req := httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(orderTrace(i)))
			req.Header.Set("Content-Type", "application/x-protobuf")
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(store)
	}
	b.ReportMetric(float64(held)/(1<<20), "MiB-held")
}

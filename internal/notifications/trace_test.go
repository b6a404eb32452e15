package notifications

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

func TestWorkerContinuesTheEventsTrace(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.WithoutCancel(t.Context())) })

	// The first delivery fails, so the trace shows the retry: two process
	// spans, attempts 1 and 2, both in the order's trace.
	ch := &fakeChannel{failures: 1}
	cfg := env.workerConfig(t, newFakeDirectory(map[string]string{"user-1": "ada@example.com"}), ch)
	cfg.Tracer = tp
	cfg.Propagator = propagation.TraceContext{}
	runWorker(t, newTestWorker(t, cfg))

	// The span of the request that created the order, as the outbox relay
	// carries it: its context in the message's traceparent header.
	ctx, parent := tp.Tracer("test").Start(t.Context(), "POST /orders")
	hdr := nats.Header{}
	propagation.TraceContext{}.Inject(ctx, natsbus.Header(hdr))
	parent.End()
	if hdr.Get("traceparent") == "" {
		t.Fatalf("no traceparent injected: %v", hdr)
	}
	ev := newEvent("user-1")
	publish(t, env.js, mustJSON(t, ev), ev.ID, hdr)

	var process, deliver []sdktrace.ReadOnlySpan
	testwait.For(t, 15*time.Second, "two process spans and two deliver spans", func() bool {
		process, deliver = nil, nil
		for _, s := range rec.Ended() {
			switch s.Name() {
			case "process orders.created":
				process = append(process, s)
			case "deliver " + fakeChannelName:
				deliver = append(deliver, s)
			}
		}
		return len(process) == 2 && len(deliver) == 2
	})

	psc := parent.SpanContext()
	for i, p := range process {
		attempt := int64(i + 1)
		t.Run(fmt.Sprintf("process attempt %d", attempt), func(t *testing.T) {
			if got := p.SpanContext().TraceID(); got != psc.TraceID() {
				t.Errorf("trace id = %v, want the order's %v", got, psc.TraceID())
			}
			if got := p.Parent().SpanID(); got != psc.SpanID() {
				t.Errorf("parent span = %v, want the publishing span %v", got, psc.SpanID())
			}
			if !p.Parent().IsRemote() {
				t.Errorf("parent is local, want remote (extracted from the message)")
			}
			if links := p.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != psc.SpanID() {
				t.Errorf("links = %v, want one to the message's creation context %v", links, psc.SpanID())
			}
			if got := p.SpanKind(); got != trace.SpanKindConsumer {
				t.Errorf("kind = %v, want %v", got, trace.SpanKindConsumer)
			}
			attrs := attribute.NewSet(p.Attributes()...)
			for _, want := range []attribute.KeyValue{
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.operation.name", "process"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", "orders.created"),
				attribute.String("messaging.consumer.group.name", ConsumerName),
				attribute.String("messaging.message.id", ev.ID),
				attribute.Int64("messaging.nats.delivery.attempt", attempt),
				attribute.String("blueprint.order.id", ev.Data.OrderID),
			} {
				if got, ok := attrs.Value(want.Key); !ok || got != want.Value {
					t.Errorf("attribute %s = %v (present %v), want %v", want.Key, got.String(), ok, want.Value.String())
				}
			}
			wantStatus := codes.Unset
			if attempt == 1 {
				wantStatus = codes.Error // the failed attempt
			}
			if got := p.Status().Code; got != wantStatus {
				t.Errorf("status = %v, want %v", got, wantStatus)
			}

			var child sdktrace.ReadOnlySpan
			for _, d := range deliver {
				if d.Parent().SpanID() == p.SpanContext().SpanID() {
					child = d
				}
			}
			if child == nil {
				t.Fatalf("no deliver span is a child of process span %v", p.SpanContext().SpanID())
			}
			if got := child.SpanContext().TraceID(); got != psc.TraceID() {
				t.Errorf("deliver trace id = %v, want %v", got, psc.TraceID())
			}
			if got := child.Status().Code; got != wantStatus {
				t.Errorf("deliver status = %v, want %v", got, wantStatus)
			}
		})
	}
}

// TestDeadLetterShowsInTheTrace: the process span of a dead-lettered event
// fails and carries a dead-lettered event with the entry's DLQ sequence, the
// number `blueprint dlq replay --seq` takes; the log line has it too.
func TestDeadLetterShowsInTheTrace(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.WithoutCancel(t.Context())) })
	logs := &logtest.Buffer{}
	cfg := env.workerConfig(t, newFakeDirectory(nil), &fakeChannel{})
	cfg.Tracer = tp
	cfg.Propagator = propagation.TraceContext{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	runWorker(t, newTestWorker(t, cfg))

	publish(t, env.js, []byte("not json"), "poison-1", nats.Header{"traceparent": {testTraceparent}})
	var process sdktrace.ReadOnlySpan
	testwait.For(t, 10*time.Second, "the process span", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "process orders.created" {
				process = s
			}
		}
		return process != nil
	})

	if got, want := process.SpanContext().TraceID().String(), "0af7651916cd43dd8448eb211c80319c"; got != want {
		t.Errorf("trace id = %s, want the message's %s", got, want)
	}
	if got := process.Status().Code; got != codes.Error {
		t.Errorf("status = %v, want %v", got, codes.Error)
	}
	var found bool
	for _, e := range process.Events() {
		if e.Name != "dead-lettered" {
			continue
		}
		found = true
		attrs := attribute.NewSet(e.Attributes...)
		if got, _ := attrs.Value("blueprint.dlq.sequence"); got.AsInt64() != 1 {
			t.Errorf("dead-lettered blueprint.dlq.sequence = %v, want 1", got.String())
		}
	}
	if !found {
		t.Errorf("process span events = %v, want a dead-lettered event", process.Events())
	}
	// The hop to the dead-letter stream is a span of its own under the
	// process span, with the attempt it gave up on.
	var send sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "send "+DeadLetterSubject {
			send = s
		}
	}
	if send == nil {
		t.Fatalf("no send %s span among %d spans", DeadLetterSubject, len(rec.Ended()))
	}
	if send.Parent().SpanID() != process.SpanContext().SpanID() || send.SpanKind() != trace.SpanKindProducer {
		t.Errorf("send %s: parent %v kind %v, want a producer child of the process span %v",
			DeadLetterSubject, send.Parent().SpanID(), send.SpanKind(), process.SpanContext().SpanID())
	}
	sendAttrs := attribute.NewSet(send.Attributes()...)
	for key, want := range map[attribute.Key]string{
		"messaging.destination.name": DeadLetterSubject, "messaging.nats.delivery.attempt": "1", "messaging.nats.stream.sequence": "1",
	} {
		if got, _ := sendAttrs.Value(key); got.String() != want {
			t.Errorf("send %s %s = %q, want %q", DeadLetterSubject, key, got.String(), want)
		}
	}
	if want := "dlq_seq=1"; !strings.Contains(logs.String(), want) {
		t.Errorf("log does not have %q:\n%s", want, logs.String())
	}
}

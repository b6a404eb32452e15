package e2e

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/ds-blueprint/blueprint/internal/platform/telemetry/telemetrytest"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// TestOneTraceFromOrderToNotification places one order with the whole system
// exporting over OTLP to a collector in the test, and makes the first
// delivery of its notification fail, so the worker retries it. Everything
// the order caused is one trace: the gateway's request, its call to orders,
// the database, the outbox relay's publish, each delivery attempt with its
// users lookup, and the delivery. The metrics link back to the trace with
// exemplars and are pushed over OTLP; the log lines of the handlers carry
// the trace too.
func TestOneTraceFromOrderToNotification(t *testing.T) {
	t.Parallel()
	col := telemetrytest.NewCollector(t)
	sys := startInProcess(t, t.TempDir(), map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL}, "--chaos")
	c := newClient(t, sys.url("gateway"))
	c.signUp(uniqueEmail("Trace"), "correct horse battery")

	// Every delivery fails until the first one has: then the rule goes and
	// the worker's retry succeeds. Were the retry to come before the rule
	// is cleared, it would fail too and a later one succeed: the assertions
	// below take any number of failed attempts before the last.
	chaosRequest(t, "POST", sys.url("notifications_ops")+"/chaos", `{"route":"notifications.deliver","errorRate":1}`)
	var o order
	c.do("POST", "/orders", map[string]any{"sku": "TRACE-1", "qty": 1}).expect(t, http.StatusCreated).json(t, &o)
	testwait.For(t, 15*time.Second, "the first delivery to fail", func() bool {
		return len(sys.logs.records("notification failed; will retry")) > 0
	})
	chaosRequest(t, "DELETE", sys.url("notifications_ops")+"/chaos?route=notifications.deliver", "")
	if n := c.notificationsFor(o.ID, 60*time.Second); len(n) != 1 {
		t.Fatalf("notifications of order %s = %d, want 1", o.ID, len(n))
	}

	traceID := ""
	for _, l := range sys.logs.records("request") {
		if l["service"] == "gateway" && l["route"] == "POST /orders" {
			traceID, _ = l["trace_id"].(string)
		}
	}
	if len(traceID) != 32 {
		t.Fatalf("trace id of POST /orders = %q, want 32 hex digits from the access log", traceID)
	}

	// Histogram buckets lead to the trace, on the gateway's request and on
	// the worker's processing.
	expectExemplar(t, sys.url("gateway_ops"), "http_server_request_duration_seconds_bucket", `http_route="/orders"`, traceID)
	expectExemplar(t, sys.url("notifications_ops"), "messaging_process_duration_seconds_bucket", `messaging_destination_name="orders.created"`, traceID)
	expectExemplar(t, sys.url("orders_ops"), "db_client_operation_duration_seconds_bucket", `db_query_summary="INSERT orders"`, traceID)

	sys.stop(t) // every service flushes its telemetry to the collector

	tree := traceTree(t, col.Spans(), traceID)
	t.Logf("the trace of POST /orders, as exported (service, kind, span indented under its parent):\n%s", tree)
	checkOrderTrace(t, tree, o)
	checkPushedMetrics(t, col)
	checkHandlerLogs(t, sys.logs, col, traceID)
}

// chaosRequest sends a request to a /chaos endpoint and expects success.
func chaosRequest(t *testing.T, method, url, body string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s = %d %s, want success", method, url, resp.StatusCode, b)
	}
}

// expectExemplar scrapes ops/metrics as OpenMetrics and expects a bucket
// line of the histogram, with the label, whose exemplar is in the trace.
func expectExemplar(t *testing.T, ops, bucket, label, traceID string) {
	t.Helper()
	req, err := http.NewRequest("GET", ops+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", ops, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("scrape %s: Content-Type = %q, want application/openmetrics-text", ops, ct)
	}
	exemplar := regexp.MustCompile(`^` + bucket + `\{.*` + regexp.QuoteMeta(label) + `.*\} \d+ # \{.*trace_id="` + traceID + `".*\} `)
	for line := range strings.Lines(string(body)) {
		if exemplar.MatchString(line) {
			t.Logf("exemplar: %s", strings.TrimSpace(line))
			return
		}
	}
	t.Errorf("scrape %s: no %s line with %s and an exemplar in trace %s", ops, bucket, label, traceID)
}

// spanNode is an exported span and its children, oldest first.
type spanNode struct {
	telemetrytest.Span
	children []*spanNode
}

// traceTree builds the tree of the trace's spans and fails the test unless
// it has exactly one root.
func traceTree(t *testing.T, spans []telemetrytest.Span, traceID string) *spanNode {
	t.Helper()
	nodes := map[string]*spanNode{}
	var inTrace []*spanNode
	for _, s := range spans {
		if hex.EncodeToString(s.GetTraceId()) == traceID {
			n := &spanNode{Span: s}
			nodes[hex.EncodeToString(s.GetSpanId())] = n
			inTrace = append(inTrace, n)
		}
	}
	slices.SortFunc(inTrace, func(a, b *spanNode) int { return cmp.Compare(a.GetStartTimeUnixNano(), b.GetStartTimeUnixNano()) })
	var roots []*spanNode
	for _, n := range inTrace {
		if parent, ok := nodes[hex.EncodeToString(n.GetParentSpanId())]; ok {
			parent.children = append(parent.children, n)
		} else {
			roots = append(roots, n)
		}
	}
	if len(roots) != 1 {
		t.Fatalf("trace %s has %d roots, want 1: %v", traceID, len(roots), roots)
	}
	return roots[0]
}

// String prints the tree, one span a line: service, kind, name indented by
// depth, and the attributes that tell the spans apart.
func (n *spanNode) String() string {
	var b strings.Builder
	var walk func(n *spanNode, depth int)
	walk = func(n *spanNode, depth int) {
		fmt.Fprintf(&b, "%-14s%-9s%s%s", n.Service, strings.TrimPrefix(n.GetKind().String(), "SPAN_KIND_"),
			strings.Repeat("  ", depth), n.GetName())
		var notes []string
		for _, key := range []string{"http.response.status_code", "db.system.name", "messaging.nats.delivery.attempt", "blueprint.outbox.attempt"} {
			if v := telemetrytest.Attr(n.GetAttributes(), key); v != "" {
				notes = append(notes, key+"="+v)
			}
		}
		if n.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			notes = append(notes, "ERROR")
		}
		for _, e := range n.GetEvents() {
			if e.GetName() == "chaos.injected" {
				notes = append(notes, "event chaos.injected")
			}
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, "  (%s)", strings.Join(notes, ", "))
		}
		b.WriteString("\n")
		for _, c := range n.children {
			walk(c, depth+1)
		}
	}
	walk(n, 0)
	return b.String()
}

// child returns n's children made by service with the kind and name.
func (n *spanNode) child(service string, kind tracepb.Span_SpanKind, name string) []*spanNode {
	var out []*spanNode
	for _, c := range n.children {
		if c.Service == service && c.GetKind() == kind && c.GetName() == name {
			out = append(out, c)
		}
	}
	return out
}

// one returns the single child of n with the service, kind and name, or
// fails the test.
func (n *spanNode) one(t *testing.T, service string, kind tracepb.Span_SpanKind, name string) *spanNode {
	t.Helper()
	c := n.child(service, kind, name)
	if len(c) != 1 {
		t.Fatalf("%s %q has %d children %s %v %q, want 1; the tree:\n%s", n.Service, n.GetName(), len(c), service, kind, name, n)
	}
	return c[0]
}

func (n *spanNode) attr(key string) string { return telemetrytest.Attr(n.GetAttributes(), key) }

func (n *spanNode) failed() bool { return n.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR }

// wantAttrs fails the test for each attribute of n that differs from want.
func (n *spanNode) wantAttrs(t *testing.T, want map[string]string) {
	t.Helper()
	for key, value := range want {
		if got := n.attr(key); got != value {
			t.Errorf("%s %q: %s = %q, want %q", n.Service, n.GetName(), key, got, value)
		}
	}
}

// wantDB checks that n has a database span of the service for each name.
func (n *spanNode) wantDB(t *testing.T, service string, names ...string) {
	t.Helper()
	for _, name := range names {
		db := n.child(service, kindClient, name)
		if len(db) == 0 {
			t.Errorf("%s %q has no database span %q", n.Service, n.GetName(), name)
			continue
		}
		db[0].wantAttrs(t, map[string]string{"db.system.name": "sqlite"})
	}
}

// The span kinds.
const (
	kindServer   = tracepb.Span_SPAN_KIND_SERVER
	kindClient   = tracepb.Span_SPAN_KIND_CLIENT
	kindProducer = tracepb.Span_SPAN_KIND_PRODUCER
	kindConsumer = tracepb.Span_SPAN_KIND_CONSUMER
	kindInternal = tracepb.Span_SPAN_KIND_INTERNAL
)

// checkOrderTrace checks the shape of the order's trace: who calls whom,
// each hop's parent, the attributes that identify the message and the
// attempt, and the failed first delivery.
func checkOrderTrace(t *testing.T, root *spanNode, o order) {
	t.Helper()
	if root.Service != "gateway" || root.GetKind() != kindServer || root.GetName() != "POST /orders" {
		t.Fatalf("trace root = %s %v %q, want the gateway's server span POST /orders", root.Service, root.GetKind(), root.GetName())
	}
	root.wantAttrs(t, map[string]string{"http.route": "/orders", "http.response.status_code": "201"})
	call := root.one(t, "gateway", kindClient, "POST orders")
	call.wantAttrs(t, map[string]string{"http.response.status_code": "201"})
	create := call.one(t, "orders", kindServer, "POST /orders")
	create.wantDB(t, "orders", "INSERT orders", "INSERT outbox", "COMMIT")

	// The relay's publish continues the request's trace from the outbox row.
	send := create.one(t, "orders", kindProducer, "send orders.created")
	eventID := send.attr("messaging.message.id")
	send.wantAttrs(t, map[string]string{
		"messaging.system": "nats", "messaging.destination.name": "orders.created", "blueprint.outbox.attempt": "1",
	})

	attempts := send.child("notifications", kindConsumer, "process orders.created")
	if len(attempts) < 2 {
		t.Fatalf("process spans under the publish = %d, want a failed attempt and its redelivery; the tree:\n%s", len(attempts), root)
	}
	for i, p := range attempts {
		last := i == len(attempts)-1
		p.wantAttrs(t, map[string]string{
			"messaging.system": "nats", "messaging.operation.name": "process", "messaging.destination.name": "orders.created",
			"messaging.consumer.group.name": "notifications", "messaging.message.id": eventID,
			"messaging.nats.delivery.attempt": fmt.Sprint(i + 1), "blueprint.order.id": o.ID,
		})
		if p.failed() == last {
			t.Errorf("attempt %d of %d failed = %v, want only the last one to succeed", i+1, len(attempts), p.failed())
		}
		p.wantDB(t, "notifications", "SELECT notifications")
		if i == 0 {
			// The first attempt asks users for the email; later ones find
			// it in the worker's cache.
			lookup := p.one(t, "notifications", kindClient, "GET users")
			lookup.one(t, "users", kindServer, "GET /users/{id}").wantDB(t, "users", "SELECT users")
		} else if n := len(p.child("notifications", kindClient, "GET users")); n != 0 {
			t.Errorf("attempt %d asked users %d times, want the email from the cache", i+1, n)
		}
		deliver := p.one(t, "notifications", kindInternal, "deliver log")
		if deliver.failed() == last {
			t.Errorf("deliver span of attempt %d failed = %v, want %v", i+1, deliver.failed(), !last)
		}
		if last {
			p.wantDB(t, "notifications", "INSERT notifications")
		}
	}
}

// checkPushedMetrics: each service pushed its metrics over OTLP, by their
// OpenTelemetry names.
func checkPushedMetrics(t *testing.T, col *telemetrytest.Collector) {
	t.Helper()
	pushed := map[string][]string{}
	for _, m := range col.Metrics() {
		if !slices.Contains(pushed[m.Service], m.GetName()) {
			pushed[m.Service] = append(pushed[m.Service], m.GetName())
		}
	}
	for service, names := range map[string][]string{
		"gateway":       {"http.server.request.duration", "http.client.request.duration", "go.goroutine.count"},
		"orders":        {"blueprint.orders.created", "db.client.operation.duration", "db.client.connection.count", "blueprint.outbox.pending", "messaging.client.operation.duration"},
		"notifications": {"messaging.process.duration", "blueprint.consumer.pending", "blueprint.consumer.redelivered", "blueprint.notifications.sent", "blueprint.notifications.failed"},
		"users":         {"http.server.request.duration", "db.client.operation.duration"},
	} {
		for _, name := range names {
			if !slices.Contains(pushed[service], name) {
				t.Errorf("%s pushed no %s over OTLP; it pushed %v", service, name, pushed[service])
			}
		}
	}
}

// checkHandlerLogs: every line written while serving a request or handling
// a message has the trace and span ids, on stdout and over OTLP.
func checkHandlerLogs(t *testing.T, logs *logSink, col *telemetrytest.Collector, traceID string) {
	t.Helper()
	hexID := regexp.MustCompile(`^[0-9a-f]+$`)
	logs.mu.Lock()
	lines := slices.Clone(logs.lines)
	logs.mu.Unlock()
	handled := 0
	for _, l := range lines {
		_, inRequest := l["request_id"]
		_, onEvent := l["event_id"]
		if !inRequest && !onEvent {
			continue
		}
		handled++
		traceID, _ := l["trace_id"].(string)
		spanID, _ := l["span_id"].(string)
		if len(traceID) != 32 || len(spanID) != 16 || !hexID.MatchString(traceID+spanID) {
			t.Errorf("log line %v: trace_id %q, span_id %q, want the ids of its span", l, traceID, spanID)
		}
	}
	if handled == 0 {
		t.Errorf("no log line of a request or a message handler")
	}
	var retry bool
	for _, r := range col.Logs() {
		if r.Service == "notifications" && r.GetBody().GetStringValue() == "notification failed; will retry" {
			retry = hex.EncodeToString(r.GetTraceId()) == traceID && len(r.GetSpanId()) == 8
		}
	}
	if !retry {
		t.Errorf("no OTLP log record \"notification failed; will retry\" from notifications in trace %s", traceID)
	}
}

// TestMissingCollectorStopsCleanly: with OTLP pointed at a port nothing
// listens on, the system serves, and stops with a clean exit; the lost
// telemetry is a warning per service, not a failed shutdown.
func TestMissingCollectorStopsCleanly(t *testing.T) {
	t.Parallel()
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	sys := startInProcess(t, t.TempDir(), map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
	c := newClient(t, sys.url("gateway"))
	c.signUp(uniqueEmail("NoCollector"), "correct horse battery")
	sys.stop(t) // fails the test unless app.Run returns nil
	if n := len(sys.logs.records("telemetry not flushed")); n != len(serviceNames) {
		t.Errorf("telemetry not flushed warnings = %d, want one per service (%d)", n, len(serviceNames))
	}
}

package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/app"
)

// TestConsoleShowsAnOrdersTrace: the all-in-one process runs the console
// and sends it its telemetry, so an order's trace — gateway, orders, the
// outbox relay, the worker and its users lookup — and its log lines are
// there to read a moment after the 201.
func TestConsoleShowsAnOrdersTrace(t *testing.T) {
	t.Parallel()
	sys := startInProcess(t, t.TempDir(), nil)
	console := sys.url("console")
	if console == "" {
		t.Fatalf("the ready line names no console: %v", sys.ready)
	}
	c := newClient(t, sys.url("gateway"))
	c.signUp(uniqueEmail("console"), "console-password")
	const traceID = "6bf92f3577b34da6a3ce929d0e0e4738"
	c.do("POST", "/orders", map[string]any{"sku": "BLUEPRINT-MUG", "qty": 1},
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01").expect(t, http.StatusCreated)

	var page string
	for deadline := time.Now().Add(20 * time.Second); ; {
		page = consolePage(t, console+"/traces/"+traceID)
		if strings.Contains(page, "GET /users/{id}") && strings.Contains(page, "notification delivered") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console's trace %s never reached the worker's users lookup and its log line:\n%s", traceID, page)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, want := range []string{"POST /orders", "INSERT outbox", "send orders.created", "process orders.created"} {
		if !strings.Contains(page, want) {
			t.Errorf("the trace lacks %q", want)
		}
	}
	if list := consolePage(t, console+"/traces?route=/orders"); !strings.Contains(list, "/traces/"+traceID) {
		t.Errorf("the trace list does not link %s", traceID)
	}
}

// TestConsoleTargetReceivesOTLP runs the console alone, as a deployment
// points its services' OTEL_EXPORTER_OTLP_ENDPOINT at it, and sends it a
// span over OTLP/HTTP JSON.
func TestConsoleTargetReceivesOTLP(t *testing.T) {
	t.Parallel()
	logs := newLogSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { // ends on cancel
		done <- app.Run(ctx, []string{"run", "--target=console", "--console-addr", "127.0.0.1:0", "--log-format", "json",
			"--data-dir", t.TempDir()}, func(string) string { return "" }, logs, io.Discard)
	}()
	ready := logs.waitReady(t, 10*time.Second)
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("console run = %v", err)
		}
	}()
	console, _ := ready["console"].(string)
	span := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}}]},
		"scopeSpans":[{"spans":[{"traceId":"7bf92f3577b34da6a3ce929d0e0e4739","spanId":"00f067aa0ba902b7","name":"charge",
		"kind":2,"startTimeUnixNano":"1765100000000000000","endTimeUnixNano":"1765100000005000000"}]}]}]}`
	res, err := http.Post(console+"/v1/traces", "application/json", strings.NewReader(span))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("export: %d", res.StatusCode)
	}
	if page := consolePage(t, console+"/traces"); !strings.Contains(page, "charge") || !strings.Contains(page, "billing") {
		t.Errorf("the trace list lacks the exported span:\n%s", page)
	}
}

func consolePage(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return string(body)
}

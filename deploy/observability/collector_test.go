package observability

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry/telemetrytest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// TestCollectorConfigValid: the collector built from the components the
// shipped config names accepts the config as it is.
func TestCollectorConfigValid(t *testing.T) {
	out, err := exec.Command(harness.OtelcolBinary(t), "validate", "--config=otel-collector.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("otelcol validate --config=otel-collector.yaml: %v\n%s", err, out)
	}
}

// TestCollectorCarriesEverySignal runs the shipped collector config with
// only its addresses changed (and its own metrics listener off): Tempo and
// Loki are OTLP receivers inside the test, the prometheus exporter listens
// on a free port. The system, all in one binary, exports every signal to
// it under the traffic and faults of TestQueriesReturnData. Then:
//   - Tempo has the trace of an order, from the gateway's request to the
//     worker's processing of the event;
//   - Loki has log records of every service, some inside that trace;
//   - every series a dashboard or a rule reads, as the services serve it on
//     /metrics, is on the collector's Prometheus endpoint too, under the
//     same name and with the same `service` label, and the gateway's
//     latency buckets carry exemplars. The Prometheus client's own Go and
//     process collectors serve /metrics only, so they are left out;
//   - each series has the process's service.instance.id as its instance.
func TestCollectorCarriesEverySignal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the system and a collector; skipped with -short")
	}
	queries := prometheusQueries(t)
	dir := t.TempDir()

	tempo := telemetrytest.NewCollector(t)
	loki := &telemetrytest.Collector{}
	lokiSrv := httptest.NewServer(http.StripPrefix("/otlp", loki)) // Loki takes OTLP under /otlp
	t.Cleanup(lokiSrv.Close)
	col := harness.StartCollector(t, filepath.Join(dir, "otelcol"), tempo.URL, lokiSrv.URL+"/otlp")
	promAddr := col.Prometheus

	c := harness.StartCluster(t, localcluster.Config{
		Binary:   harness.Build(t, dir),
		Dir:      filepath.Join(dir, "cluster"),
		AllInOne: true,
		Env: append(faultEnv(),
			"OTEL_EXPORTER_OTLP_ENDPOINT="+col.OTLP,
			"OTEL_METRIC_EXPORT_INTERVAL=1000"),
	})
	load(t, harness.Gateways(c)[0], c.OpsURLs)

	// Series the dashboards and rules read: a name in one of their
	// expressions, served by a service on /metrics.
	read := map[string]bool{}
	identifier := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	for _, q := range queries {
		for _, name := range identifier.FindAllString(q.expr, -1) {
			read[name] = true
		}
	}
	scrapedOnly := clientCollectorFamilies(t)
	wanted := func(name string) bool { return read[name] && !scrapedOnly[familyOf(name)] }

	deadline := time.Now().Add(60 * time.Second)
	for {
		var checked int
		var missing []string
		pushed := seriesByService(t, "http://"+promAddr+"/metrics", "")
		for service, ops := range c.OpsURLs {
			n := 0
			for name := range seriesByService(t, "http://"+ops+"/metrics", service) {
				if !wanted(name) {
					continue
				}
				n++
				if !pushed[name][service] {
					missing = append(missing, name+`{service="`+service+`"}`)
				}
			}
			if n == 0 {
				t.Fatalf("no series of %s's /metrics is read by a dashboard or rule: the check would check nothing", service)
			}
			checked += n
		}
		traceID, spansOK := orderTrace(tempo.Spans())
		logsOK := logsOfEveryService(loki.Logs(), traceID)
		if len(missing) == 0 && spansOK && logsOK {
			t.Logf("through the collector: %d spans to Tempo, %d log records to Loki, %d series (name and service) read by dashboards or rules on its Prometheus endpoint",
				len(tempo.Spans()), len(loki.Logs()), checked)
			break
		}
		if time.Now().After(deadline) {
			slices.Sort(missing)
			t.Fatalf("after 60 s: order trace in Tempo %v (%d spans), logs of every service in Loki %v (%d records); %d series read by dashboards or rules missing from the collector's Prometheus endpoint:\n%s",
				spansOK, len(tempo.Spans()), logsOK, len(loki.Logs()), len(missing), strings.Join(missing, "\n"))
		}
		time.Sleep(time.Second)
	}

	// Exemplars survive the collector when Prometheus asks for OpenMetrics.
	req, _ := http.NewRequest(http.MethodGet, "http://"+promAddr+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	exemplar := regexp.MustCompile(`(?m)^http_server_request_duration_seconds_bucket\{[^}]*service="gateway"[^}]*\} \S+ # \{[^}]*trace_id="[0-9a-f]{32}"`)
	if !exemplar.Match(body) {
		t.Errorf("no gateway latency bucket with a trace_id exemplar on the collector's OpenMetrics endpoint")
	}
	// Each process's service.instance.id is the instance label, so that
	// replicas of a service stay apart.
	instance := regexp.MustCompile(`(?m)^blueprint_orders_created_total\{[^}]*instance="[0-9a-f-]{36}"`)
	if !instance.Match(body) {
		t.Errorf("blueprint_orders_created_total on the collector's endpoint has no instance label from service.instance.id")
	}
}

// orderTrace finds a trace holding the gateway's POST /orders and the
// worker's processing of the event it created.
func orderTrace(spans []telemetrytest.Span) (string, bool) {
	post, process := map[string]bool{}, map[string]bool{}
	for _, s := range spans {
		id := string(s.GetTraceId())
		switch {
		case s.Service == "gateway" && s.GetName() == "POST /orders":
			post[id] = true
		case s.Service == "notifications" && s.GetName() == "process orders.created":
			process[id] = true
		}
	}
	for id := range post {
		if process[id] {
			return id, true
		}
	}
	return "", false
}

// logsOfEveryService reports whether every service's log records arrived
// and some of them carry traceID.
func logsOfEveryService(logs []telemetrytest.LogRecord, traceID string) bool {
	services, inTrace := map[string]bool{}, false
	for _, l := range logs {
		services[l.Service] = true
		inTrace = inTrace || (traceID != "" && string(l.GetTraceId()) == traceID)
	}
	for _, s := range []string{"gateway", "users", "orders", "notifications"} {
		if !services[s] {
			return false
		}
	}
	return inTrace
}

var serviceLabel = regexp.MustCompile(`[{,]service="([^"]+)"`)

// seriesByService reads a Prometheus text page and returns the services
// of each series name: those of its `service` labels, or, for a service's
// own /metrics (which has none), service.
func seriesByService(t *testing.T, url, service string) map[string]map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]bool{}
	for line := range strings.Lines(string(body)) {
		end := strings.IndexAny(line, "{ ")
		if line[0] == '#' || end <= 0 {
			continue // a comment, or a blank line
		}
		name := line[:end]
		s := service
		if m := serviceLabel.FindStringSubmatch(line); m != nil {
			s = m[1]
		}
		if series[name] == nil {
			series[name] = map[string]bool{}
		}
		series[name][s] = true
	}
	return series
}

// clientCollectorFamilies names the metric families of the Prometheus
// client's Go and process collectors, which the services register for
// /metrics only (OTLP carries the runtime by the semantic conventions).
func clientCollectorFamilies(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// familyOf strips a series name's histogram or summary suffix.
func familyOf(series string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(series, suffix); ok {
			return f
		}
	}
	return series
}

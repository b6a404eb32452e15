package observability

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// TestQueriesReturnData runs the system as the blueprint binary (all in
// one process, every ops listener on its own port) and Debian's Prometheus
// on the shipped scrape config and rules, drives some traffic and a few
// faults, then runs every PromQL expression of every dashboard panel and
// every rule through Prometheus's HTTP API and expects each to return data.
// A dashboard or rule naming a metric or label that does not exist fails
// here, not on a production Grafana.
//
// The faults, so the series that only exist after one do exist:
//   - users fails GET /users/{id} (chaos): the gateway's and the worker's
//     retries, breakers and rejections, 5xx at the gateway, and a
//     notification failed once then dead-lettered (NOTIFICATIONS_MAX_DELIVER=2);
//   - orders answers GET /orders after 1 s while GATEWAY_MAX_IN_FLIGHT is 4:
//     shed requests;
//   - an account with LOGIN_FAILURE_LIMIT=2 failed logins: a 429;
//   - REDIS_URL points at a port nobody listens on: every rate-limit check
//     falls back to local buckets.
//
// Not made here: an outbox event older than 30 s (it needs NATS away for
// that long; prometheus/tests covers the alert), so BlueprintOutboxStale
// is checked on the series it reads, which exist at 0.
func TestQueriesReturnData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the system and Prometheus; skipped with -short")
	}
	promBin := lookPath(t, "prometheus")
	queries := prometheusQueries(t)

	dir := t.TempDir()
	c := harness.StartCluster(t, localcluster.Config{
		Binary:   harness.Build(t, dir),
		Dir:      filepath.Join(dir, "cluster"),
		AllInOne: true,
		Env:      faultEnv(),
	})
	prom := startPrometheus(t, promBin, filepath.Join(dir, "prometheus"), c.OpsURLs)

	load(t, harness.Gateways(c)[0], c.OpsURLs)

	// Each expression gets until the deadline to return data: rates need
	// two scrapes of a series, rules one evaluation after that.
	deadline := time.Now().Add(90 * time.Second)
	var empty []string
	for _, q := range queries {
		for {
			n, err := prom.instant(q.expr)
			if err != nil {
				t.Errorf("%s: %v\n  %s", q.where, err, q.expr)
				break
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				empty = append(empty, fmt.Sprintf("%s\n  %s", q.where, q.expr))
				break
			}
			time.Sleep(time.Second)
		}
	}
	t.Logf("%d PromQL expressions checked against the running system, %d returned no data", len(queries), len(empty))
	if len(empty) > 0 {
		t.Errorf("expressions with no data:\n%s", strings.Join(empty, "\n"))
	}

	// Exemplars: a latency bucket points at the trace of a request.
	now := time.Now()
	var ex struct {
		Data []struct {
			Exemplars []struct {
				Labels map[string]string `json:"labels"`
			} `json:"exemplars"`
		} `json:"data"`
	}
	prom.get(t, "/api/v1/query_exemplars?"+url.Values{
		"query": {`http_server_request_duration_seconds_bucket{service="gateway"}`},
		"start": {strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)},
		"end":   {strconv.FormatInt(now.Unix(), 10)},
	}.Encode(), &ex)
	if len(ex.Data) == 0 || len(ex.Data[0].Exemplars) == 0 || ex.Data[0].Exemplars[0].Labels["trace_id"] == "" {
		t.Errorf("query_exemplars = %+v, want exemplars with a trace_id", ex)
	}
}

// faultEnv configures the system for the faults load makes (see
// TestQueriesReturnData).
func faultEnv() []string {
	return []string{
		"BLUEPRINT_CHAOS=true",
		"NOTIFICATIONS_MAX_DELIVER=2",
		"GATEWAY_MAX_IN_FLIGHT=4",
		"LOGIN_FAILURE_LIMIT=2",
		"REDIS_URL=redis://" + localcluster.FreeAddr() + "/0", // nothing listens there
		// Exemplars come from sampled spans; with no trace exporter none is
		// recorded unless a sampler is named.
		"OTEL_TRACES_SAMPLER=parentbased_always_on",
	}
}

// load places the traffic and the faults described on TestQueriesReturnData.
func load(t *testing.T, gw string, ops map[string]string) {
	t.Helper()
	cl := harness.NewClient(16, gw)
	expect := func(what string, status int, body []byte, want int) {
		t.Helper()
		if status != want {
			t.Fatalf("%s = %d %s, want %d", what, status, body, want)
		}
	}
	token := cl.SignUp(t, 0)
	var orderID string
	for i := range 3 {
		status, body := cl.Post(gw+"/orders", token, fmt.Sprintf("obs-%d", i), `{"sku":"BLUEPRINT-MUG","qty":1}`)
		expect("POST /orders", status, body, http.StatusCreated)
		var o struct{ ID string }
		_ = json.Unmarshal(body, &o)
		orderID = o.ID
	}
	for _, path := range []string{"/orders", "/orders/" + orderID, "/orders/me", "/users/me", "/notifications"} {
		status, body := cl.Get(gw+path, token)
		expect("GET "+path, status, body, http.StatusOK)
	}
	status, body := cl.Get(gw+"/nope", token)
	expect("GET /nope", status, body, http.StatusNotFound)
	status, body = cl.Post(gw+"/orders", token, "obs-invalid", `{"sku":"-","qty":0}`)
	expect("invalid POST /orders", status, body, http.StatusUnprocessableEntity)

	// Failed logins, past the per-account limit.
	status, body = cl.Post(gw+"/auth/register", "", "", `{"email":"mallory@example.com","password":"the-password","name":"M"}`)
	expect("register", status, body, http.StatusCreated)
	for i, want := range []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusTooManyRequests} {
		status, body := cl.Post(gw+"/auth/login", "", "", `{"email":"mallory@example.com","password":"a-wrong-guess"}`)
		expect(fmt.Sprintf("failed login %d", i+1), status, body, want)
	}

	// Slow orders reads and more of them at once than the gateway admits.
	setChaos(t, ops["orders"], `{"route":"GET /orders","latencyMs":1000}`)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { cl.Get(gw+"/orders", token) }) // some answered, some shed
	}
	wg.Wait()
	setChaos(t, ops["orders"], "")

	// Users fails: retries, the breaker opens, the worker cannot look the
	// user up and dead-letters the order's event after its second attempt.
	// The order is a new user's: the worker remembers the emails it found.
	newcomer := cl.SignUp(t, 1)
	setChaos(t, ops["users"], `{"route":"GET /users/{id}","errorRate":1}`)
	for range 10 {
		cl.Get(gw+"/users/me", token)
	}
	status, body = cl.Post(gw+"/orders", newcomer, "obs-dead-letter", `{"sku":"BLUEPRINT-MUG","qty":1}`)
	expect("POST /orders while users fails", status, body, http.StatusCreated)
}

// setChaos sets a fault rule on an ops listener, or clears them all.
func setChaos(t *testing.T, opsAddr, rule string) {
	t.Helper()
	method, body := http.MethodPost, io.Reader(strings.NewReader(rule))
	if rule == "" {
		method, body = http.MethodDelete, nil
	}
	req, err := http.NewRequest(method, "http://"+opsAddr+"/chaos", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("chaos: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s /chaos %s = %d %s", method, rule, resp.StatusCode, b)
	}
}

// promServer is a Prometheus started by the test.
type promServer struct {
	url  string
	http *http.Client
}

// startPrometheus runs Prometheus on the shipped prometheus.yml, its
// targets replaced by the system's ops listeners, scraping and evaluating
// every second, and stops it when the test ends.
func startPrometheus(t *testing.T, bin, dir string, ops map[string]string) *promServer {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Global        map[string]any `yaml:"global"`
		RuleFiles     []string       `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Global["scrape_interval"], cfg.Global["evaluation_interval"] = "1s", "1s"
	for i, f := range cfg.RuleFiles {
		abs, err := filepath.Abs(filepath.Join("prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuleFiles[i] = abs
	}
	for _, sc := range cfg.ScrapeConfigs {
		for i, st := range sc.StaticConfigs {
			addr, ok := ops[st.Labels["service"]]
			if !ok {
				t.Fatalf("prometheus.yml: job %s has a target labelled service=%q, which the system does not run", sc.JobName, st.Labels["service"])
			}
			sc.StaticConfigs[i].Targets = []string{addr}
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, out, 0o644); err != nil {
		t.Fatal(err)
	}

	addr := localcluster.FreeAddr()
	harness.StartDaemon(t, "prometheus", dir, "http://"+addr+"/-/ready", bin,
		"--config.file="+conf,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--enable-feature=exemplar-storage",
		"--log.level=warn")
	return &promServer{url: "http://" + addr, http: &http.Client{Timeout: 10 * time.Second}}
}

// instant runs an instant query and returns how many series (or a scalar,
// counted as one) it returned.
func (p *promServer) instant(expr string) (int, error) {
	resp, err := p.http.PostForm(p.url+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("prometheus: %s", r.Error)
	}
	if r.Data.ResultType == "scalar" || r.Data.ResultType == "string" {
		return 1, nil
	}
	var series []json.RawMessage
	if err := json.Unmarshal(r.Data.Result, &series); err != nil {
		return 0, err
	}
	return len(series), nil
}

func (p *promServer) get(t *testing.T, path string, into any) {
	t.Helper()
	resp, err := p.http.Get(p.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

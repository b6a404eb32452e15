package deploy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/deploy/boot"
)

// binary is the blueprint binary the parity tests run, built once.
var binary string

// dockerfile is the image's: its ENV is every container's first
// environment.
var dockerfile = must(filepath.Abs("../../deploy/docker/Dockerfile"))

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "blueprint-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Built in the repository's own module, with its go.mod and go.sum:
	// this module requires only what its tests import.
	binary = filepath.Join(dir, "blueprint")
	out, err := exec.Command("go", "build", "-C", "../..", "-o", binary, "./cmd/blueprint").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// TestChartBootsTheSystem checks that the configuration the chart gives
// the pods runs Blueprint: each rendered Deployment becomes a process with
// exactly its container's arguments, environment and mounted files — only
// the Service names, listen addresses and paths changed to this machine's
// — beside NATS servers admitting the users of the keys' nats-auth.conf as
// deploy/helm/nats-values.yaml makes the official chart's do. A new user's
// flow then goes through the gateway, and every process stops cleanly on
// SIGTERM.
func TestChartBootsTheSystem(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		keys := generateKeys(t)
		files := map[string]any{}
		for name, content := range keys {
			files[name] = string(content)
		}
		m := mustRender(t, nil, map[string]any{"keys": map[string]any{"files": files}})
		bootRelease(t, m, secrets{})
	})
	t.Run("production", func(t *testing.T) {
		if os.Getenv(sqldbtest.EnvPostgresURL) == "" {
			t.Skipf("values-production.yaml gives every service a PostgreSQL database: set %s to a server the test may create databases on", sqldbtest.EnvPostgresURL)
		}
		redisURL := os.Getenv("BLUEPRINT_TEST_REDIS_URL")
		if redisURL == "" {
			// The gateway then limits with its own buckets, as it does
			// whenever Redis does not answer.
			redisURL = "redis://" + localcluster.FreeAddr() + "/0"
			t.Logf("BLUEPRINT_TEST_REDIS_URL is not set: the gateway's Redis is %s, where nothing listens", redisURL)
		}
		// What values-production.yaml expects to find in the namespace
		// (README.md's install steps), standing in here.
		cluster := secrets{
			"blueprint-keys":       generateKeys(t),
			"pg-users-app":         {"uri": []byte(sqldbtest.CreatePostgresDatabase(t))},
			"pg-orders-app":        {"uri": []byte(sqldbtest.CreatePostgresDatabase(t))},
			"pg-notifications-app": {"uri": []byte(sqldbtest.CreatePostgresDatabase(t))},
			"blueprint-redis":      {"url": []byte(redisURL)},
		}
		bootRelease(t, mustRender(t, []string{"values-production.yaml"}), cluster)
	})
}

// generateKeys makes the files of `blueprint keys generate`.
func generateKeys(t *testing.T) map[string][]byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if out, err := exec.Command(binary, "keys", "generate", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("keys generate: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]byte{}
	for _, e := range entries {
		if keys[e.Name()], err = os.ReadFile(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// bootRelease runs the release's Deployments and its NATS, and the public
// flow through them.
func bootRelease(t *testing.T, m *manifest, cluster secrets) {
	t.Helper()
	specs := deploymentSpecs(t, m, cluster)
	i := slices.IndexFunc(specs, func(s boot.Spec) bool { return s.Name == "orders" })
	if i < 0 {
		t.Fatal("no orders Deployment")
	}
	orders := specs[i]
	// A stream of N replicas needs N servers: the NATS chart's cluster.
	nodes, err := strconv.Atoi(envOf(orders, "NATS_STREAM_REPLICAS"))
	if err != nil {
		t.Fatalf("NATS_STREAM_REPLICAS: %v", err)
	}
	nats := natsSpecs(t, nodes, natsAuth(t, m, cluster), envOf(orders, "NATS_URL"))

	outside := map[string]string{}
	var sink *otlpSink
	if endpoint := envOf(orders, "OTEL_EXPORTER_OTLP_ENDPOINT"); endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil {
			t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT: %v", err)
		}
		sink = newOTLPSink(t)
		outside[u.Host] = sink.addr
	}

	sys := boot.Start(t, boot.Config{Binary: binary, Dir: t.TempDir(), Specs: append(nats, specs...), Outside: outside})
	boot.Flow(t, sys.URL(t, "gateway", fmt.Sprintf("0.0.0.0:%d", ports["gateway"][0])))
	sys.Stop(t)
	if sink != nil {
		for _, signal := range []string{"/v1/traces", "/v1/metrics", "/v1/logs"} {
			if sink.count(signal) == 0 {
				t.Errorf("the collector received nothing on %s", signal)
			}
		}
	}
}

// envOf is a variable of a process's environment, the last one winning.
func envOf(s boot.Spec, name string) string {
	value := ""
	for _, kv := range s.Env {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			value = v
		}
	}
	return value
}

// natsAuth is the nats-auth.conf the official chart's servers include:
// the Secret item deploy/helm/nats-values.yaml mounts for them.
func natsAuth(t *testing.T, m *manifest, cluster secrets) []byte {
	t.Helper()
	data, err := os.ReadFile("../../deploy/helm/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		PodTemplate struct {
			Patch []struct {
				Value corev1.Volume `json:"value"`
			} `json:"patch"`
		} `json:"podTemplate"`
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
	for _, p := range values.PodTemplate.Patch {
		if s := p.Value.Secret; s != nil && len(s.Items) == 1 {
			return projected(t, "nats", "Secret "+s.SecretName, secretData(t, m, cluster, s.SecretName), s.Items)[s.Items[0].Path]
		}
	}
	t.Fatal("nats-values.yaml mounts no Secret item into the NATS servers")
	return nil
}

// natsSpecs are the NATS servers of the official chart as `blueprint nats`
// processes: clustered like its StatefulSet when there are several, each
// with its own store, the first reached by the names the release's
// NATS_URL gives.
func natsSpecs(t *testing.T, nodes int, auth []byte, natsURL string) []boot.Spec {
	t.Helper()
	var aliases []string
	for _, s := range strings.Split(natsURL, ",") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			t.Fatalf("NATS_URL %q: not a URL", natsURL)
		}
		aliases = append(aliases, u.Host)
	}
	var routes []string
	for i := range nodes {
		routes = append(routes, fmt.Sprintf("nats://nats-%d.nats-headless:6222", i))
	}
	var specs []boot.Spec
	for i := range nodes {
		name := fmt.Sprintf("nats-%d", i)
		s := boot.Spec{
			Name: name,
			Args: []string{"nats", "--name", name, "--config", "/etc/nats-auth/nats-auth.conf",
				"--listen", "0.0.0.0:4222", "--monitor-listen", "0.0.0.0:8222", "--store-dir", "/data"},
			Mounts: map[string]map[string][]byte{"/etc/nats-auth": {"nats-auth.conf": auth}, "/data": nil},
			Listen: map[string][]string{"0.0.0.0:4222": nil, "0.0.0.0:8222": nil},
			Ready:  "http://0.0.0.0:8222/healthz",
		}
		if i == 0 {
			s.Listen["0.0.0.0:4222"] = aliases
		}
		if nodes > 1 {
			s.Args = append(s.Args, "--cluster-listen", "0.0.0.0:6222", "--routes", strings.Join(routes, ","))
			s.Listen["0.0.0.0:6222"] = []string{fmt.Sprintf("nats-%d.nats-headless:6222", i)}
		}
		specs = append(specs, s)
	}
	return specs
}

// otlpSink stands in for the OpenTelemetry Collector: it accepts every
// OTLP/HTTP export and counts them by path.
type otlpSink struct {
	addr   string
	mu     sync.Mutex
	counts map[string]int
}

func newOTLPSink(t *testing.T) *otlpSink {
	s := &otlpSink{counts: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.counts[r.URL.Path]++
		s.mu.Unlock()
		// An empty export response: everything accepted.
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(srv.Close)
	s.addr = strings.TrimPrefix(srv.URL, "http://")
	return s
}

func (s *otlpSink) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[path]
}

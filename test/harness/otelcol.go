package harness

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
)

// Collector is an OpenTelemetry Collector running the shipped config,
// deploy/observability/otel-collector.yaml, with only its addresses
// changed and its own metrics listener (:8888) off.
type Collector struct {
	// OTLP is its OTLP/HTTP receiver, the services' OTEL_EXPORTER_OTLP_ENDPOINT.
	OTLP string
	// Prometheus is host:port of its prometheus exporter (/metrics).
	Prometheus string
	// Pid is the collector's process id.
	Pid int
}

// CollectorConfig is the path of the shipped collector config.
func CollectorConfig() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "observability", "otel-collector.yaml")
}

// OtelcolBinary returns the collector built from tools/otelcol/manifest.yaml
// that BLUEPRINT_TEST_OTELCOL names (.ci/run builds it), or skips the test.
func OtelcolBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("BLUEPRINT_TEST_OTELCOL")
	if bin == "" {
		t.Skip("BLUEPRINT_TEST_OTELCOL is unset; set it to the collector tools/otelcol/build.sh prints")
	}
	return bin
}

// StartCollector runs the shipped collector config until the test ends,
// its receivers and prometheus exporter on free loopback ports, its Tempo
// and Loki exporters sending OTLP/HTTP to tempoURL and lokiURL (as they
// would to http://tempo:4318 and http://loki:3100/otlp).
func StartCollector(t testing.TB, dir, tempoURL, lokiURL string) *Collector {
	t.Helper()
	bin := OtelcolBinary(t)
	c := &Collector{Prometheus: localcluster.FreeAddr()}
	otlp, health := localcluster.FreeAddr(), localcluster.FreeAddr()
	c.OTLP = "http://" + otlp
	args := []string{"--config=" + CollectorConfig()}
	for _, kv := range [][2]string{
		{"receivers::otlp::protocols::http::endpoint", otlp},
		{"receivers::otlp::protocols::grpc::endpoint", localcluster.FreeAddr()},
		{"exporters::otlp_http/tempo::endpoint", tempoURL},
		{"exporters::otlp_http/loki::endpoint", lokiURL},
		{"exporters::prometheus::endpoint", c.Prometheus},
		{"extensions::health_check::endpoint", health},
		{"service::telemetry::metrics::level", "none"}, // no listener of its own on :8888
	} {
		args = append(args, "--set="+kv[0]+"="+kv[1])
	}
	cmd := StartDaemon(t, "otelcol", dir, "http://"+health+"/", bin, args...)
	c.Pid = cmd.Process.Pid
	return c
}

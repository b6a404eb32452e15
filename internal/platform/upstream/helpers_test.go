package upstream_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// observed is a client with everything it reports within the test's reach:
// its metrics, its log lines and (through the caller) its spans.
type observed struct {
	*upstream.Client
	metrics *sdkmetric.ManualReader
	logs    *logtest.Buffer
}

// fastPolicy is DefaultPolicy with backoffs short enough for tests that
// retry many times; everything else as in production.
func fastPolicy() upstream.Policy {
	p := upstream.DefaultPolicy()
	p.RetryBackoff, p.RetryMaxBackoff = time.Millisecond, 5*time.Millisecond
	return p
}

// observedClient builds a client from cfg, filling in the caller's minter,
// its tracer and propagator, a meter read by a manual reader, a JSON logger
// into a buffer, and defaults for what cfg leaves out: service users, a 5 s
// timeout, a 2 s connect timeout and fastPolicy.
func (c *caller) observedClient(t *testing.T, cfg upstream.Config) *observed {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	tel := *c.tel
	tel.Meter = mp
	logs := &logtest.Buffer{}

	if cfg.Service == "" {
		cfg.Service = "users"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 2 * time.Second
	}
	if cfg.Policy == (upstream.Policy{}) {
		cfg.Policy = fastPolicy()
	}
	cfg.Minter = c.minter
	cfg.Telemetry = &tel
	cfg.Logger = telemetry.NewLogger(logs, telemetry.LogJSON, false, slog.LevelDebug)
	cl, err := upstream.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) error = %v", cfg, err)
	}
	return &observed{Client: cl, metrics: reader, logs: logs}
}

// counter is the value of the int64 counter name for exactly attrs; 0 when
// nothing was counted.
func (o *observed) counter(t *testing.T, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := o.metric(t, name)
	if !ok {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("metric %s = %T, want an int64 sum", name, m.Data)
	}
	want := attribute.NewSet(attrs...)
	for _, dp := range sum.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	return 0
}

// breakerState is blueprint.upstream.breaker.state for one replica; ok is
// false when the replica is not reported.
func (o *observed) breakerState(t *testing.T, service, replica string) (int64, bool) {
	t.Helper()
	return o.gauge(t, "blueprint.upstream.breaker.state", service, replica)
}

// ejected is blueprint.upstream.ejected for one replica; ok is false when
// the replica is not reported.
func (o *observed) ejected(t *testing.T, service, replica string) (int64, bool) {
	t.Helper()
	return o.gauge(t, "blueprint.upstream.ejected", service, replica)
}

// gauge is the int64 gauge name of one replica.
func (o *observed) gauge(t *testing.T, name, service, replica string) (int64, bool) {
	t.Helper()
	m, ok := o.metric(t, name)
	if !ok {
		return 0, false
	}
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("%s = %T, want an int64 gauge", name, m.Data)
	}
	want := attribute.NewSet(attribute.String("upstream", service), attribute.String("replica", replica))
	for _, dp := range g.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value, true
		}
	}
	return 0, false
}

// breakerReplicas lists the replicas blueprint.upstream.breaker.state
// reports, sorted.
func (o *observed) breakerReplicas(t *testing.T) []string {
	t.Helper()
	m, ok := o.metric(t, "blueprint.upstream.breaker.state")
	if !ok {
		return nil
	}
	var out []string
	for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
		v, _ := dp.Attributes.Value("replica")
		out = append(out, v.AsString())
	}
	slices.Sort(out)
	return out
}

func (o *observed) metric(t *testing.T, name string) (metricdata.Metrics, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := o.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// replicaServer is an upstream replica answering status (changeable while
// it runs) and counting what it gets.
type replicaServer struct {
	*httptest.Server
	status atomic.Int64
	hits   atomic.Int64
	// keys are the Idempotency-Key headers it saw, in order.
	mu   sync.Mutex
	keys []string
}

func newReplicaServer(t *testing.T, status int) *replicaServer {
	t.Helper()
	return newReplicaServerAt(t, "127.0.0.1:0", status)
}

// newReplicaServerAt is newReplicaServer listening on addr: a replica
// started again where one was before.
func newReplicaServerAt(t *testing.T, addr string, status int) *replicaServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	rs := &replicaServer{}
	rs.status.Store(int64(status))
	rs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.hits.Add(1)
		rs.mu.Lock()
		rs.keys = append(rs.keys, r.Header.Get("Idempotency-Key"))
		rs.mu.Unlock()
		w.WriteHeader(int(rs.status.Load()))
	}))
	rs.Listener.Close()
	rs.Listener = ln
	rs.Start()
	t.Cleanup(rs.Close)
	return rs
}

// addr is the host:port the replica listens on.
func (rs *replicaServer) addr() string { return strings.TrimPrefix(rs.URL, "http://") }

// newSheddingServer is a replica refusing every request as overloaded
// callees do: 503 with Retry-After.
func newSheddingServer(t *testing.T) *replicaServer {
	t.Helper()
	rs := &replicaServer{}
	rs.Server = newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		rs.hits.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	return rs
}

package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// testGateway is a Gateway with its logs, metrics and token issuer in reach
// of the test. Its upstreams are nil: tests drive only what the gateway
// answers on its own (limits, shedding, the JWKS), unless withFakeUsers
// gives it a users service.
type testGateway struct {
	*Gateway
	logs   *logtest.Buffer
	reader *sdkmetric.ManualReader
	tokens *auth.AccessTokens
}

func newTestGateway(t *testing.T, limits Limits, now func() time.Time) *testGateway {
	t.Helper()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewAccessTokens(key, []auth.PublicKey{key.Public()}, now)
	logs := &logtest.Buffer{}
	reader := sdkmetric.NewManualReader()
	g, err := New(tokens, Upstreams{}, limits, slog.New(slog.NewJSONHandler(logs, nil)),
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), tracenoop.NewTracerProvider(), now)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return &testGateway{Gateway: g, logs: logs, reader: reader, tokens: tokens}
}

// rightPassword is the one password the fake users service accepts.
const rightPassword = "right-password"

// testUserID is the user of the tests, an id as users makes them.
var testUserID = uuid.Must(uuid.NewV7()).String()

// withFakeUsers puts a fake users service behind the gateway: it registers
// anyone, and logs anyone in whose password is rightPassword, else answers
// invalid_credentials as the real one does. It returns how many calls it
// has had.
func (tg *testGateway) withFakeUsers(t *testing.T) *atomic.Int64 {
	t.Helper()
	var calls atomic.Int64
	logger := slog.New(slog.DiscardHandler)
	rt := httpx.NewRouter()
	rt.Handle("POST /users", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		return httpx.Encode(w, http.StatusCreated, map[string]string{"id": testUserID})
	}))
	rt.Handle("POST /users/authenticate", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		var creds struct{ Password string }
		if err := json.NewDecoder(r.Body).Decode(&creds); err != nil || creds.Password != rightPassword {
			return apperr.New(apperr.Unauthorized, "invalid_credentials", "the email or password is wrong")
		}
		return httpx.Encode(w, http.StatusOK, map[string]string{"id": testUserID})
	}))
	tg.withUsers(t, rt)
	return &calls
}

// withUsers puts h behind the gateway as the users service.
func (tg *testGateway) withUsers(t *testing.T, h http.Handler) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.New(context.Background(), Name, "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	users, err := upstream.New(upstream.Config{Service: "users", URLs: []string{srv.URL}, Timeout: 5 * time.Second,
		ConnectTimeout: time.Second, Minter: auth.NewMinter(Name, key, time.Now), Telemetry: tel, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	tg.upstreams.Users = users
}

// newTestStore is a redisStore on rdb with its telemetry switched off.
func newTestStore(t *testing.T, rdb *redis.Client, prefix string, now func() time.Time) *redisStore {
	t.Helper()
	s, err := newRedisStore(rdb, prefix, slog.New(slog.NewTextHandler(io.Discard, nil)),
		tracenoop.NewTracerProvider().Tracer(""), metricnoop.NewMeterProvider().Meter(""), now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// closedRedis is a client of a Redis that is not there: a loopback port
// nothing listens on.
func closedRedis(t *testing.T) *redis.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	opts, err := RedisOptions("redis://" + addr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// request sends one request through the gateway's handler from remote
// ("203.0.113.7:5000"), with a bearer token unless it is empty.
func (tg *testGateway) request(method, path, remote, token, body string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	req.RemoteAddr = remote
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	tg.Handler().ServeHTTP(rec, req)
	return rec
}

// counter returns a counter's values by their scope attribute ("" for
// none).
func (tg *testGateway) counter(t *testing.T, name string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, m := range tg.collect(t) {
		if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
			for _, dp := range sum.DataPoints {
				scope, _ := dp.Attributes.Value("scope")
				out[scope.AsString()] = dp.Value
			}
		}
	}
	return out
}

// gauge returns the value of an int64 gauge, or -1 when it has none.
func (tg *testGateway) gauge(t *testing.T, name string) int64 {
	t.Helper()
	for _, m := range tg.collect(t) {
		if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == name && len(g.DataPoints) == 1 {
			return g.DataPoints[0].Value
		}
	}
	return -1
}

func (tg *testGateway) collect(t *testing.T) []metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tg.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	var out []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		out = append(out, sm.Metrics...)
	}
	return out
}

// problemCode is the code of a problem+json answer, "" for anything else.
func problemCode(rec *httptest.ResponseRecorder) string {
	if rec.Header().Get("Content-Type") != "application/problem+json" {
		return ""
	}
	var p struct{ Type string }
	_ = json.Unmarshal(rec.Body.Bytes(), &p)
	return strings.TrimPrefix(p.Type, "urn:blueprint:problem:")
}

// must fails the test unless rec has the status.
func must(t *testing.T, rec *httptest.ResponseRecorder, status int) *httptest.ResponseRecorder {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	return rec
}

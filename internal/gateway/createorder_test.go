package gateway_test

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ds-blueprint/blueprint/internal/gateway"
	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// TestCreateOrderRetriedByTheGateway: orders commits an order but its
// answer is lost (a 503 after the commit); the gateway's client retries
// with the same key and orders replays the order. The client, whose one
// request made one order, gets the 201 — marked as a replay only if the
// key was its own.
func TestCreateOrderRetriedByTheGateway(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		clientKey    string
		wantReplayed string
	}{
		{name: "the client's key", clientKey: "mug-1", wantReplayed: "true"},
		{name: "the gateway's key", clientKey: "", wantReplayed: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var keys []string
			orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				keys = append(keys, r.Header.Get("Idempotency-Key"))
				if len(keys) == 1 {
					w.WriteHeader(http.StatusServiceUnavailable) // committed, answer lost
					return
				}
				w.Header().Set("Location", "/orders/o-1")
				w.Header().Set("Idempotent-Replayed", "true")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte(`{"id":"o-1"}`))
			}))
			t.Cleanup(orders.Close)
			gw, token := newTestGateway(t, orders.URL)

			req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"MUG","qty":1}`))
			req.Header.Set("Authorization", "Bearer "+token)
			if tt.clientKey != "" {
				req.Header.Set("Idempotency-Key", tt.clientKey)
			}
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)

			if rec.Code != http.StatusCreated || rec.Header().Get("Location") != "/orders/o-1" {
				t.Errorf("POST /orders = %d, Location %q, want 201 and the order", rec.Code, rec.Header().Get("Location"))
			}
			if got := rec.Header().Get("Idempotent-Replayed"); got != tt.wantReplayed {
				t.Errorf("Idempotent-Replayed = %q, want %q", got, tt.wantReplayed)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(keys) != 2 || keys[0] != keys[1] || keys[0] == "" ||
				(tt.clientKey != "" && keys[0] != tt.clientKey) {
				t.Errorf("orders saw keys %q, want the same key twice (the client's, if it sent one)", keys)
			}
		})
	}
}

// orderAnswer is one answer of a scripted orders service.
type orderAnswer func(w http.ResponseWriter, r *http.Request)

// lostAnswer imitates a replica that dies holding the request: the
// connection closes with no answer.
func lostAnswer(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// keyInFlight answers 409 idempotency_key_in_flight with the time left on
// the key's lock, as orders does.
func keyInFlight(left time.Duration) orderAnswer {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After-Ms", strconv.FormatInt(left.Milliseconds(), 10))
		httpx.WriteError(w, r, slog.New(slog.DiscardHandler), &apperr.Error{Kind: apperr.Conflict,
			Code: "idempotency_key_in_flight", Detail: "in progress", RetryAfter: int(math.Ceil(left.Seconds()))})
	}
}

// replayed answers with the order o-1, replayed.
func replayed(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Location", "/orders/o-1")
	w.Header().Set("Idempotent-Replayed", "true")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(`{"id":"o-1"}`))
}

// TestCreateOrderWaitsForKeyInFlight: orders answers that another request
// holds the order's key — the gateway's own attempt whose replica died —
// with the time left on its lock. The gateway waits that long and calls
// again, within the request's deadline, so the client gets its order and
// not a 409; a lock that outlasts the deadline is answered 409 at once, and
// a key taken over again and again is waited for only a few times.
func TestCreateOrderWaitsForKeyInFlight(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		answers        []orderAnswer // the last one repeats
		wantStatus     int
		wantCalls      int
		wantRetryAfter string
		// minTook is the least the request must take: the wait. maxTook
		// is a generous bound telling "answered at once" from "waited".
		minTook, maxTook time.Duration
	}{
		{name: "answer lost, key locked by the lost attempt",
			answers:    []orderAnswer{lostAnswer, keyInFlight(300 * time.Millisecond), replayed},
			wantStatus: http.StatusCreated, wantCalls: 3, minTook: 300 * time.Millisecond, maxTook: 5 * time.Second},
		{name: "lock outlasting the deadline",
			answers:    []orderAnswer{keyInFlight(30 * time.Second)},
			wantStatus: http.StatusConflict, wantCalls: 1, wantRetryAfter: "30", maxTook: 2 * time.Second},
		{name: "key taken over again and again",
			answers:    []orderAnswer{keyInFlight(50 * time.Millisecond)},
			wantStatus: http.StatusConflict, wantCalls: 4, wantRetryAfter: "1", minTook: 150 * time.Millisecond, maxTook: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var keys []string
			orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				keys = append(keys, r.Header.Get("Idempotency-Key"))
				answer := tt.answers[min(len(keys), len(tt.answers))-1]
				mu.Unlock()
				answer(w, r)
			}))
			t.Cleanup(orders.Close)
			gw, token := newTestGateway(t, orders.URL)

			req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"MUG","qty":1}`))
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			began := time.Now()
			gw.ServeHTTP(rec, req)
			took := time.Since(began)

			if rec.Code != tt.wantStatus {
				t.Errorf("POST /orders = %d %s, want %d", rec.Code, rec.Body, tt.wantStatus)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetryAfter)
			}
			if took < tt.minTook || took > tt.maxTook {
				t.Errorf("POST /orders took %v, want %v to %v", took, tt.minTook, tt.maxTook)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(keys) != tt.wantCalls || slices.ContainsFunc(keys, func(k string) bool { return k != keys[0] }) {
				t.Errorf("orders saw keys %q, want %d calls with one key", keys, tt.wantCalls)
			}
		})
	}
}

// newTestGateway returns the gateway's API with orders at ordersURL (users
// and notifications unreachable), and an access token for a user.
func newTestGateway(t *testing.T, ordersURL string) (http.Handler, string) {
	t.Helper()
	kr, err := auth.GenerateKeyring([]string{"gateway", "users", "orders", "notifications"})
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.New(context.Background(), "gateway", "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	logger := slog.New(slog.DiscardHandler)
	minter := auth.NewMinter("gateway", kr.Identities["gateway"], time.Now)
	client := func(service, url string) *upstream.Client {
		c, err := upstream.New(upstream.Config{Service: service, URLs: []string{url}, Timeout: 5 * time.Second,
			ConnectTimeout: time.Second, Minter: minter, Telemetry: tel, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	up := gateway.Upstreams{
		Users:         client("users", "http://127.0.0.1:1"),
		Orders:        client("orders", ordersURL),
		Notifications: client("notifications", "http://127.0.0.1:1"),
	}
	tokens := auth.NewAccessTokens(kr.Access, []auth.PublicKey{kr.Access.Public()}, time.Now)
	token, _, err := tokens.Issue(uuid.Must(uuid.NewV7()).String())
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(tokens, up, gateway.Limits{OrderTimeout: 5 * time.Second}, logger, metricnoop.NewMeterProvider(), tracenoop.NewTracerProvider(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return g.Handler(), token
}

package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// testClock is the injected clock: it stands still until a test moves it.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

// start has nanoseconds on purpose: the service keeps microseconds.
var start = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testService is a Service on a real migrated SQLite database, with a clock
// the test controls and a count of the relay wake-ups it asked for.
type testService struct {
	*Service
	db      *sqldb.DB
	clock   *testClock
	written atomic.Int64
	metrics *sdkmetric.ManualReader
}

func newTestService(t testing.TB, b sqldbtest.Backend) *testService {
	t.Helper()
	ts := &testService{db: b.Open(t, Migrations), clock: &testClock{now: start}, metrics: sdkmetric.NewManualReader()}
	var err error
	ts.Service, err = NewService(ts.db, propagation.TraceContext{}, sdkmetric.NewMeterProvider(sdkmetric.WithReader(ts.metrics)),
		func() { ts.written.Add(1) }, ts.clock.Now, nil)
	if err != nil {
		t.Fatalf("NewService() error = %v", err)
	}
	return ts
}

// ordersCreated reads the blueprint.orders.created counter.
func (ts *testService) ordersCreated(t *testing.T) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := ts.metrics.Collect(t.Context(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "blueprint.orders.created" && len(sum.DataPoints) == 1 {
				return sum.DataPoints[0].Value
			}
		}
	}
	return 0
}

// count runs a SELECT count(*) query.
func (ts *testService) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := ts.db.QueryRowContext(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (ts *testService) orderRows(t *testing.T) int {
	t.Helper()
	return ts.count(t, `SELECT count(*) FROM orders`)
}

func (ts *testService) outboxRows(t *testing.T) int {
	t.Helper()
	return ts.count(t, `SELECT count(*) FROM outbox`)
}

func (ts *testService) keyRows(t *testing.T) int {
	t.Helper()
	return ts.count(t, `SELECT count(*) FROM idempotency_keys`)
}

// mustCreate creates an order and fails the test on error.
func (ts *testService) mustCreate(t *testing.T, userID, key string, n NewOrder) Created {
	t.Helper()
	c, err := ts.Create(t.Context(), userID, key, n)
	if err != nil {
		t.Fatalf("Create(%q, %q, %+v) error = %v, want nil", userID, key, n, err)
	}
	return c
}

// sameOrder compares orders field by field, instants with Equal.
func sameOrder(a, b Order) bool {
	return a.ID == b.ID && a.UserID == b.UserID && a.SKU == b.SKU && a.Qty == b.Qty &&
		a.Status == b.Status && a.CreatedAt.Equal(b.CreatedAt)
}

// appErr returns the kind and code of err, or fails the test when err is
// not an *apperr.Error.
func appErr(t *testing.T, err error) (apperr.Kind, string) {
	t.Helper()
	e, ok := errors.AsType[*apperr.Error](err)
	if !ok {
		t.Fatalf("error %v (%T) is not an *apperr.Error", err, err)
	}
	return e.Kind, e.Code
}

func TestNewOrderValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   NewOrder
		want []string // the fields reported, sorted
	}{
		{"sku one letter", NewOrder{SKU: "A", Qty: 1}, nil},
		{"sku one digit", NewOrder{SKU: "7", Qty: 1}, nil},
		{"sku 64 chars", NewOrder{SKU: strings.Repeat("A", 64), Qty: 1}, nil},
		{"sku 65 chars", NewOrder{SKU: strings.Repeat("A", 65), Qty: 1}, []string{"sku"}},
		{"sku with inner dash", NewOrder{SKU: "A-1", Qty: 1}, nil},
		{"sku with trailing dash", NewOrder{SKU: "A-", Qty: 1}, nil},
		{"sku lowercase", NewOrder{SKU: "abc", Qty: 1}, []string{"sku"}},
		{"sku mixed case", NewOrder{SKU: "Ab", Qty: 1}, []string{"sku"}},
		{"sku leading dash", NewOrder{SKU: "-A", Qty: 1}, []string{"sku"}},
		{"sku empty", NewOrder{SKU: "", Qty: 1}, []string{"sku"}},
		{"sku with space", NewOrder{SKU: "A 1", Qty: 1}, []string{"sku"}},
		{"sku with trailing newline", NewOrder{SKU: "A\n", Qty: 1}, []string{"sku"}},
		{"sku with underscore", NewOrder{SKU: "A_1", Qty: 1}, []string{"sku"}},
		{"qty 0", NewOrder{SKU: "A", Qty: 0}, []string{"qty"}},
		{"qty 1", NewOrder{SKU: "A", Qty: 1}, nil},
		{"qty 1000", NewOrder{SKU: "A", Qty: 1000}, nil},
		{"qty 1001", NewOrder{SKU: "A", Qty: 1001}, []string{"qty"}},
		{"qty -1", NewOrder{SKU: "A", Qty: -1}, []string{"qty"}},
		{"both broken", NewOrder{SKU: "", Qty: 0}, []string{"qty", "sku"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := tt.in.Valid(t.Context())
			if got := slices.Sorted(maps.Keys(problems)); !slices.Equal(got, tt.want) {
				t.Errorf("%+v.Valid() fields = %v, want %v", tt.in, got, tt.want)
			}
			for field, msg := range problems {
				if msg == "" {
					t.Errorf("%+v.Valid()[%q] = %q, want a message", tt.in, field, msg)
				}
			}
		})
	}
}

func TestNewOrderHash(t *testing.T) {
	t.Parallel()
	base := NewOrder{SKU: "A-1", Qty: 2}
	if got, want := base.hash(), (NewOrder{SKU: "A-1", Qty: 2}).hash(); got != want {
		t.Errorf("hash of equal orders = %s, want %s", got, want)
	}
	for _, other := range []NewOrder{{SKU: "A-1", Qty: 3}, {SKU: "A-2", Qty: 2}, {SKU: "A-12", Qty: 0}} {
		if base.hash() == other.hash() {
			t.Errorf("hash(%+v) = hash(%+v), want different", other, base)
		}
	}
}

func TestCreateWithoutKey(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		in := NewOrder{SKU: "SKU-1", Qty: 3}

		got := ts.mustCreate(t, "user-1", "", in)

		want := Order{UserID: "user-1", SKU: "SKU-1", Qty: 3, Status: "created", CreatedAt: start.Truncate(time.Microsecond)}
		want.ID = got.Order.ID
		if got.Replayed || !sameOrder(got.Order, want) {
			t.Errorf("Create() = %+v, want {Order:%+v Replayed:false}", got, want)
		}
		if id, err := uuid.Parse(got.Order.ID); err != nil || id.Version() != 7 {
			t.Errorf("Create().Order.ID = %q (version %v, parse error %v), want a UUIDv7", got.Order.ID, id.Version(), err)
		}
		if n := ts.orderRows(t); n != 1 {
			t.Errorf("order rows = %d, want 1", n)
		}
		if n := ts.outboxRows(t); n != 1 {
			t.Errorf("outbox rows = %d, want 1", n)
		}
		if n := ts.keyRows(t); n != 0 {
			t.Errorf("idempotency key rows = %d, want 0", n)
		}
		if n := ts.written.Load(); n != 1 {
			t.Errorf("written called %d times, want 1", n)
		}
		if _, err := ts.Create(t.Context(), "user-1", "", NewOrder{SKU: "SKU-1", Qty: 0}); err == nil {
			t.Fatalf("Create(qty 0) error = nil, want a validation error")
		}
		if n := ts.ordersCreated(t); n != 1 {
			t.Errorf("blueprint.orders.created = %d, want 1 (an invalid order is not counted)", n)
		}

		stored, err := ts.Get(t.Context(), "user-1", got.Order.ID)
		if err != nil || !sameOrder(stored, got.Order) {
			t.Errorf("Get() = %+v, %v, want %+v, nil", stored, err, got.Order)
		}

		var id, subject string
		var payload []byte
		var created sqldb.Time
		var sentAt sqldb.NullTime
		err = ts.db.QueryRowContext(t.Context(), `SELECT id, subject, payload, created_at, sent_at FROM outbox`).
			Scan(&id, &subject, &payload, &created, &sentAt)
		if err != nil {
			t.Fatalf("read outbox row: %v", err)
		}
		if subject != events.OrderCreated {
			t.Errorf("outbox subject = %q, want %q", subject, events.OrderCreated)
		}
		if sentAt.Valid {
			t.Errorf("outbox sent_at = %v, want NULL until the relay publishes", sentAt.Time)
		}
		if !created.Equal(got.Order.CreatedAt) {
			t.Errorf("outbox created_at = %v, want %v", created.Time, got.Order.CreatedAt)
		}
		ev, err := events.ParseOrderCreated(payload)
		if err != nil {
			t.Fatalf("ParseOrderCreated(%s) error = %v", payload, err)
		}
		wantData := events.OrderCreatedData{OrderID: got.Order.ID, UserID: "user-1", SKU: "SKU-1", Qty: 3, CreatedAt: got.Order.CreatedAt}
		if ev.Data.OrderID != wantData.OrderID || ev.Data.UserID != wantData.UserID || ev.Data.SKU != wantData.SKU ||
			ev.Data.Qty != wantData.Qty || !ev.Data.CreatedAt.Equal(wantData.CreatedAt) {
			t.Errorf("event data = %+v, want %+v", ev.Data, wantData)
		}
		if ev.ID != id {
			t.Errorf("event id = %q, want the outbox row id %q", ev.ID, id)
		}
		if ev.Source != events.SourceOrders || !ev.Time.Equal(got.Order.CreatedAt) {
			t.Errorf("event source, time = %q, %v, want %q, %v", ev.Source, ev.Time, events.SourceOrders, got.Order.CreatedAt)
		}
	})
}

func TestCreateStoresTraceContext(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		tests := []struct {
			name string
			// ctx returns the request context and the traceparent the outbox
			// row must carry ("" for none).
			ctx func(t *testing.T) (context.Context, string)
		}{
			{"sampled span", func(t *testing.T) (context.Context, string) {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
				t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				ctx, span := tp.Tracer("test").Start(t.Context(), "POST /orders")
				t.Cleanup(func() { span.End() })
				sc := span.SpanContext()
				return ctx, fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
			}},
			{"no span", func(t *testing.T) (context.Context, string) {
				return t.Context(), ""
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ts := newTestService(t, b)
				ctx, want := tt.ctx(t)
				if _, err := ts.Create(ctx, "user-1", "", NewOrder{SKU: "A", Qty: 1}); err != nil {
					t.Fatalf("Create() error = %v", err)
				}
				var raw string
				if err := ts.db.QueryRowContext(t.Context(), `SELECT headers FROM outbox`).Scan(&raw); err != nil {
					t.Fatalf("read outbox headers: %v", err)
				}
				var headers map[string]string
				if err := json.Unmarshal([]byte(raw), &headers); err != nil {
					t.Fatalf("outbox headers %q: %v", raw, err)
				}
				if got := headers["traceparent"]; got != want {
					t.Errorf("outbox headers[traceparent] = %q, want %q", got, want)
				}
			})
		}
	})
}

func TestCreateIdempotency(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		body := NewOrder{SKU: "A-1", Qty: 2}

		t.Run("same key and body replays the first order", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			first := ts.mustCreate(t, "user-1", "key-1", body)
			ts.clock.Advance(time.Hour)
			second := ts.mustCreate(t, "user-1", "key-1", body)
			if !second.Replayed || !sameOrder(second.Order, first.Order) {
				t.Errorf("Create() again = %+v, want {Order:%+v Replayed:true}", second, first.Order)
			}
			if first.Replayed {
				t.Errorf("Create() first Replayed = true, want false")
			}
			if n := ts.orderRows(t); n != 1 {
				t.Errorf("order rows = %d, want 1", n)
			}
			if n := ts.outboxRows(t); n != 1 {
				t.Errorf("outbox rows = %d, want 1", n)
			}
			if n := ts.written.Load(); n != 1 {
				t.Errorf("written called %d times, want 1 (a replay writes nothing)", n)
			}
			if n := ts.ordersCreated(t); n != 1 {
				t.Errorf("blueprint.orders.created = %d, want 1 (a replay is not a new order)", n)
			}
		})

		t.Run("same key with another body is refused", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			ts.mustCreate(t, "user-1", "key-1", body)
			for _, other := range []NewOrder{{SKU: "A-1", Qty: 3}, {SKU: "A-2", Qty: 2}} {
				_, err := ts.Create(t.Context(), "user-1", "key-1", other)
				if kind, code := appErr(t, err); kind != apperr.Invalid || code != "idempotency_key_reused" {
					t.Errorf("Create(%+v) with a used key = %v %q, want Invalid %q", other, kind, code, "idempotency_key_reused")
				}
			}
			if n := ts.orderRows(t); n != 1 {
				t.Errorf("order rows = %d, want 1", n)
			}
		})

		t.Run("key in flight is a conflict", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			// Another request holds the key and has not finished.
			if hold, prior, err := ts.claimKey(t.Context(), "user-1", "key-1", body.hash()); hold == nil || prior != nil || err != nil {
				t.Fatalf("claimKey() = %v, %v, %v, want a hold, nil, nil", hold, prior, err)
			}
			_, err := ts.Create(t.Context(), "user-1", "key-1", body)
			kind, code := appErr(t, err)
			if kind != apperr.Conflict || code != "idempotency_key_in_flight" {
				t.Errorf("Create() while in flight = %v %q, want Conflict %q", kind, code, "idempotency_key_in_flight")
			}
			if e, _ := errors.AsType[*apperr.Error](err); e.RetryAfter < 1 {
				t.Errorf("Create() while in flight RetryAfter = %d, want >= 1", e.RetryAfter)
			}
			// A different body is still refused as a reuse, not queued.
			_, err = ts.Create(t.Context(), "user-1", "key-1", NewOrder{SKU: "B", Qty: 1})
			if kind, code := appErr(t, err); kind != apperr.Invalid || code != "idempotency_key_reused" {
				t.Errorf("Create(other body) while in flight = %v %q, want Invalid %q", kind, code, "idempotency_key_reused")
			}
			if n := ts.orderRows(t); n != 0 {
				t.Errorf("order rows = %d, want 0", n)
			}
		})

		t.Run("stale lock is taken over", func(t *testing.T) {
			tests := []struct {
				name     string
				after    time.Duration
				wantCode string // "" means the order is created
			}{
				// A request without a deadline holds its key for the longest lock.
				{"just before the lock ends", keyLockMax - time.Second, "idempotency_key_in_flight"},
				{"as the lock ends", keyLockMax, ""},
				{"after the lock", keyLockMax + time.Second, ""},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					ts := newTestService(t, b)
					if _, _, err := ts.claimKey(t.Context(), "user-1", "key-1", body.hash()); err != nil {
						t.Fatalf("claimKey() error = %v", err)
					}
					ts.clock.Advance(tt.after)
					got, err := ts.Create(t.Context(), "user-1", "key-1", body)
					if tt.wantCode != "" {
						if _, code := appErr(t, err); code != tt.wantCode {
							t.Errorf("Create() %v after the claim = %q, want %q", tt.after, code, tt.wantCode)
						}
						return
					}
					if err != nil || got.Replayed {
						t.Fatalf("Create() %v after the claim = %+v, %v, want a new order", tt.after, got, err)
					}
					again := ts.mustCreate(t, "user-1", "key-1", body)
					if !again.Replayed || again.Order.ID != got.Order.ID {
						t.Errorf("Create() after takeover = %+v, want a replay of %s", again, got.Order.ID)
					}
					if n := ts.orderRows(t); n != 1 {
						t.Errorf("order rows = %d, want 1", n)
					}
				})
			}
		})

		t.Run("key older than 24h is new", func(t *testing.T) {
			tests := []struct {
				name         string
				after        time.Duration
				wantReplayed bool
			}{
				{"23h59m59s", 24*time.Hour - time.Second, true},
				{"24h plus 1s", 24*time.Hour + time.Second, false},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					ts := newTestService(t, b)
					first := ts.mustCreate(t, "user-1", "key-1", body)
					ts.clock.Advance(tt.after)
					second := ts.mustCreate(t, "user-1", "key-1", body)
					if second.Replayed != tt.wantReplayed || (second.Order.ID == first.Order.ID) != tt.wantReplayed {
						t.Errorf("Create() %v later = {ID:%s Replayed:%v}, want Replayed %v (first ID %s)",
							tt.after, second.Order.ID, second.Replayed, tt.wantReplayed, first.Order.ID)
					}
					wantRows := 2
					if tt.wantReplayed {
						wantRows = 1
					}
					if n := ts.orderRows(t); n != wantRows {
						t.Errorf("order rows = %d, want %d", n, wantRows)
					}
					// The key starts a new life: another body is refused again,
					// and the same body replays the second order.
					if !tt.wantReplayed {
						third := ts.mustCreate(t, "user-1", "key-1", body)
						if !third.Replayed || third.Order.ID != second.Order.ID {
							t.Errorf("Create() after renewal = {ID:%s Replayed:%v}, want a replay of %s",
								third.Order.ID, third.Replayed, second.Order.ID)
						}
					}
				})
			}
		})

		t.Run("key older than 24h accepts another body", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			ts.mustCreate(t, "user-1", "key-1", body)
			ts.clock.Advance(24*time.Hour + time.Second)
			got, err := ts.Create(t.Context(), "user-1", "key-1", NewOrder{SKU: "B", Qty: 9})
			if err != nil || got.Replayed || got.Order.SKU != "B" {
				t.Errorf("Create(other body) after 24h = %+v, %v, want a new order of B", got, err)
			}
		})

		t.Run("keys are per user", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			a := ts.mustCreate(t, "user-1", "key-1", body)
			b := ts.mustCreate(t, "user-2", "key-1", body)
			if b.Replayed || b.Order.ID == a.Order.ID || b.Order.UserID != "user-2" {
				t.Errorf("Create(user-2, same key) = %+v, want a new order of user-2 (user-1 got %s)", b, a.Order.ID)
			}
			// And another body from the second user is not a reuse of the first's key.
			c, err := ts.Create(t.Context(), "user-3", "key-1", NewOrder{SKU: "C", Qty: 1})
			if err != nil || c.Replayed {
				t.Errorf("Create(user-3, same key, other body) = %+v, %v, want a new order", c, err)
			}
			if n := ts.orderRows(t); n != 3 {
				t.Errorf("order rows = %d, want 3", n)
			}
		})

		t.Run("failed create releases the key", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			// The service trusts its callers to validate; a qty the schema
			// refuses makes the order insert fail after the key was claimed.
			_, err := ts.Create(t.Context(), "user-1", "key-1", NewOrder{SKU: "A", Qty: 0})
			if err == nil {
				t.Fatalf("Create(qty 0) error = nil, want the insert to fail")
			}
			if n := ts.keyRows(t); n != 0 {
				t.Errorf("idempotency key rows after a failed create = %d, want 0", n)
			}
			if o, e := ts.orderRows(t), ts.outboxRows(t); o != 0 || e != 0 {
				t.Errorf("order, outbox rows after a failed create = %d, %d, want 0, 0", o, e)
			}
			if n := ts.written.Load(); n != 0 {
				t.Errorf("written called %d times after a failed create, want 0", n)
			}
			// The client's retry (with a corrected body) goes through at once.
			got, err := ts.Create(t.Context(), "user-1", "key-1", body)
			if err != nil || got.Replayed {
				t.Errorf("Create() retry after a failure = %+v, %v, want a new order", got, err)
			}
		})

		t.Run("releaseKey frees a claimed key", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			hold, _, err := ts.claimKey(t.Context(), "user-1", "key-1", body.hash())
			if err != nil {
				t.Fatalf("claimKey() error = %v", err)
			}
			releaseKey(t.Context(), ts.db, *hold)
			if n := ts.keyRows(t); n != 0 {
				t.Errorf("idempotency key rows after releaseKey = %d, want 0", n)
			}
			got, err := ts.Create(t.Context(), "user-1", "key-1", NewOrder{SKU: "OTHER", Qty: 1})
			if err != nil || got.Replayed {
				t.Errorf("Create() after releaseKey = %+v, %v, want a new order", got, err)
			}
		})

		t.Run("releaseKey keeps a completed key", func(t *testing.T) {
			t.Parallel()
			ts := newTestService(t, b)
			hold, _, err := ts.claimKey(t.Context(), "user-1", "key-1", body.hash())
			if err != nil {
				t.Fatalf("claimKey() error = %v", err)
			}
			first, err := ts.commitOrder(t.Context(), "user-1", body, hold)
			if err != nil {
				t.Fatalf("commitOrder() error = %v", err)
			}
			releaseKey(t.Context(), ts.db, *hold)
			if n := ts.keyRows(t); n != 1 {
				t.Errorf("idempotency key rows after releaseKey of a completed key = %d, want 1", n)
			}
			again := ts.mustCreate(t, "user-1", "key-1", body)
			if !again.Replayed || again.Order.ID != first.ID {
				t.Errorf("Create() after releaseKey = %+v, want a replay of %s", again, first.ID)
			}
		})
	})
}

func TestCreateIsAtomic(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		// Each trigger makes one statement of Create's transaction fail after
		// the order row was written; nothing of it may remain. Triggers are
		// written in each dialect.
		pgFail := `CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'store unavailable'; END $$`
		tests := []struct {
			name         string
			create, drop map[string][]string
		}{
			{"outbox insert fails", map[string][]string{
				"sqlite":   {`CREATE TRIGGER fail BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'outbox unavailable'); END`},
				"postgres": {pgFail, `CREATE TRIGGER fail BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail()`},
			}, map[string][]string{
				"sqlite":   {`DROP TRIGGER fail`},
				"postgres": {`DROP TRIGGER fail ON outbox`},
			}},
			{"saving the key's answer fails", map[string][]string{
				"sqlite": {`CREATE TRIGGER fail BEFORE UPDATE ON idempotency_keys
				WHEN NEW.response IS NOT NULL BEGIN SELECT RAISE(ABORT, 'keys unavailable'); END`},
				"postgres": {pgFail, `CREATE TRIGGER fail BEFORE UPDATE ON idempotency_keys
				FOR EACH ROW WHEN (NEW.response IS NOT NULL) EXECUTE FUNCTION fail()`},
			}, map[string][]string{
				"sqlite":   {`DROP TRIGGER fail`},
				"postgres": {`DROP TRIGGER fail ON idempotency_keys`},
			}},
		}
		exec := func(t *testing.T, db *sqldb.DB, stmts []string) {
			t.Helper()
			for _, q := range stmts {
				if _, err := db.ExecContext(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				ts := newTestService(t, b)
				exec(t, ts.db, tt.create[b.Name])
				body := NewOrder{SKU: "A", Qty: 1}
				if got, err := ts.Create(t.Context(), "user-1", "key-1", body); err == nil {
					t.Fatalf("Create() = %+v, nil, want an error", got)
				}
				if o, e, k := ts.orderRows(t), ts.outboxRows(t), ts.keyRows(t); o != 0 || e != 0 || k != 0 {
					t.Errorf("order, outbox, key rows after a failed create = %d, %d, %d, want 0, 0, 0", o, e, k)
				}
				if n := ts.written.Load(); n != 0 {
					t.Errorf("written called %d times after a failed create, want 0", n)
				}
				exec(t, ts.db, tt.drop[b.Name])
				got, err := ts.Create(t.Context(), "user-1", "key-1", body)
				if err != nil || got.Replayed {
					t.Errorf("Create() retry = %+v, %v, want a new order", got, err)
				}
				if o, e := ts.orderRows(t), ts.outboxRows(t); o != 1 || e != 1 {
					t.Errorf("order, outbox rows after the retry = %d, %d, want 1, 1", o, e)
				}
			})
		}
	})
}

func TestCreateConcurrentSameKey(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		body := NewOrder{SKU: "RACE", Qty: 1}
		const callers = 20

		type result struct {
			created Created
			err     error
		}
		results := make([]result, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() { // ends when its Create returns
				c, err := ts.Create(t.Context(), "user-1", "same-key", body)
				results[i] = result{c, err}
			})
		}
		wg.Wait()

		var created, replayed, inFlight int
		var orderID string
		for i, r := range results {
			if r.err != nil {
				kind, code := appErr(t, r.err)
				if kind != apperr.Conflict || code != "idempotency_key_in_flight" {
					t.Errorf("caller %d: Create() = %v %q, want success or Conflict %q", i, kind, code, "idempotency_key_in_flight")
				}
				inFlight++
				continue
			}
			if orderID == "" {
				orderID = r.created.Order.ID
			}
			if r.created.Order.ID != orderID {
				t.Errorf("caller %d: Create().Order.ID = %s, want %s (one order for one key)", i, r.created.Order.ID, orderID)
			}
			if r.created.Replayed {
				replayed++
			} else {
				created++
			}
		}
		if created != 1 {
			t.Errorf("callers that created = %d, want 1 (replayed %d, in flight %d)", created, replayed, inFlight)
		}
		if n := ts.orderRows(t); n != 1 {
			t.Errorf("order rows = %d, want 1", n)
		}
		if n := ts.outboxRows(t); n != 1 {
			t.Errorf("outbox rows = %d, want 1", n)
		}
		if n := ts.written.Load(); n != 1 {
			t.Errorf("written called %d times, want 1", n)
		}
	})
}

func TestPurgeExpiredKeys(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		body := NewOrder{SKU: "A", Qty: 1}
		ts.mustCreate(t, "user-1", "oldest", body) // start
		ts.clock.Advance(time.Second)
		ts.mustCreate(t, "user-1", "day-old", body) // start+1s
		ts.clock.Advance(12 * time.Hour)
		ts.mustCreate(t, "user-1", "half-day", body) // start+12h+1s
		ts.clock.Advance(12 * time.Hour)             // now start+24h+1s

		n, err := ts.PurgeExpiredKeys(t.Context())
		if err != nil || n != 1 {
			t.Errorf("PurgeExpiredKeys() = %d, %v, want 1, nil", n, err)
		}
		rows, err := ts.db.QueryContext(t.Context(), `SELECT key FROM idempotency_keys ORDER BY key`)
		if err != nil {
			t.Fatalf("list keys: %v", err)
		}
		defer rows.Close()
		var left []string
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				t.Fatalf("scan key: %v", err)
			}
			left = append(left, k)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("list keys: %v", err)
		}
		if want := []string{"day-old", "half-day"}; !slices.Equal(left, want) {
			t.Errorf("keys after PurgeExpiredKeys = %v, want %v (exactly 24h old is kept)", left, want)
		}
		if got := ts.orderRows(t); got != 3 {
			t.Errorf("order rows after PurgeExpiredKeys = %d, want 3 (orders are not purged)", got)
		}
	})
}

// TestPurgeExpiredKeysInBatches expires more keys than one purge statement
// deletes: one call deletes them all, and none of a later day.
func TestPurgeExpiredKeysInBatches(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		const expired = 2*sqldb.PurgeBatch + 300
		err := ts.db.InTx(t.Context(), func(ctx context.Context, tx *sql.Tx) error {
			for i := range expired {
				h := keyHold{userID: fmt.Sprintf("user-%d", i%7), key: fmt.Sprintf("key-%d", i), created: start, until: start}
				if _, err := insertKey(ctx, tx, h, "hash"); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		ts.clock.Advance(keyTTL + time.Hour)
		ts.mustCreate(t, "user-1", "today", NewOrder{SKU: "A", Qty: 1})

		if n, err := ts.PurgeExpiredKeys(t.Context()); err != nil || n != expired {
			t.Errorf("PurgeExpiredKeys() = %d, %v, want %d, nil", n, err, expired)
		}
		if got := ts.keyRows(t); got != 1 {
			t.Errorf("keys left = %d, want today's 1", got)
		}
	})
}

func TestListPaginatesNewestFirst(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		var mine []Order
		// Five orders of user-1 over two instants (several share one), with
		// another user's orders in between that must never show.
		for i, step := range []time.Duration{0, 0, time.Second, 0, 0} {
			ts.clock.Advance(step)
			mine = append(mine, ts.mustCreate(t, "user-1", "", NewOrder{SKU: fmt.Sprintf("SKU-%d", i), Qty: 1}).Order)
			ts.mustCreate(t, "user-2", "", NewOrder{SKU: "THEIRS", Qty: 1})
		}
		// Newest first is created_at desc, then id desc; UUIDv7 ids sort in
		// creation order, so that is exactly the reverse of creation.
		want := slices.Clone(mine)
		slices.Reverse(want)

		var got []Order
		var pages []int
		req := pagination.Request{Limit: 2}
		for range 10 { // more than enough pages; guards against a cursor loop
			page, err := ts.List(t.Context(), "user-1", req)
			if err != nil {
				t.Fatalf("List(%+v) error = %v", req, err)
			}
			got = append(got, page.Items...)
			pages = append(pages, len(page.Items))
			if page.NextCursor == nil {
				break
			}
			after, err := pagination.Parse(map[string][]string{"limit": {"2"}, "cursor": {*page.NextCursor}})
			if err != nil {
				t.Fatalf("Parse(cursor %q) error = %v", *page.NextCursor, err)
			}
			req = after
		}
		if wantPages := []int{2, 2, 1}; !slices.Equal(pages, wantPages) {
			t.Errorf("page sizes = %v, want %v", pages, wantPages)
		}
		if !slices.EqualFunc(got, want, sameOrder) {
			t.Errorf("List() pages =\n%v\nwant\n%v", ids(got), ids(want))
		}
		for _, o := range got {
			if o.UserID != "user-1" {
				t.Errorf("List(user-1) returned %+v of another user", o)
			}
		}
	})
}

func TestListEmpty(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		ts.mustCreate(t, "user-2", "", NewOrder{SKU: "A", Qty: 1})
		page, err := ts.List(t.Context(), "user-1", pagination.Request{Limit: 20})
		if err != nil || page.Items == nil || len(page.Items) != 0 || page.NextCursor != nil {
			t.Errorf("List(no orders) = %+v, %v, want empty items and no cursor", page, err)
		}
	})
}

func TestGet(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		ts := newTestService(t, b)
		mine := ts.mustCreate(t, "user-1", "", NewOrder{SKU: "A", Qty: 1}).Order
		theirs := ts.mustCreate(t, "user-2", "", NewOrder{SKU: "B", Qty: 2}).Order

		tests := []struct {
			name     string
			id       string
			want     Order
			wantKind apperr.Kind // checked when want is zero
		}{
			{"own order", mine.ID, mine, 0},
			{"another user's order", theirs.ID, Order{}, apperr.NotFound},
			{"unknown id", uuid.Must(uuid.NewV7()).String(), Order{}, apperr.NotFound},
			{"empty id", "", Order{}, apperr.NotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := ts.Get(t.Context(), "user-1", tt.id)
				if tt.want.ID != "" {
					if err != nil || !sameOrder(got, tt.want) {
						t.Errorf("Get(%q) = %+v, %v, want %+v, nil", tt.id, got, err, tt.want)
					}
					return
				}
				if kind, _ := appErr(t, err); kind != tt.wantKind {
					t.Errorf("Get(%q) = %+v, kind %v, want kind %v", tt.id, got, kind, tt.wantKind)
				}
			})
		}
	})
}

func ids(orders []Order) []string {
	out := make([]string, len(orders))
	for i, o := range orders {
		out[i] = o.CreatedAt.Format(time.RFC3339Nano) + "/" + o.ID
	}
	return out
}

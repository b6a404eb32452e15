package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// waitTimeout bounds every wait for the relay. Relay back-off tops out at
// 5 s, so this leaves room for a couple of rounds under -race.
const waitTimeout = 15 * time.Second

var discard = slog.New(slog.DiscardHandler)

// eachBackend runs fn once per database backend, in parallel subtests named
// sqlite and postgres, each with a fresh database holding the orders schema:
// the one production relays run against. The postgres one skips, saying
// why, unless BLUEPRINT_TEST_POSTGRES_URL is set.
func eachBackend(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	sqldbtest.Run(t, orders.Migrations, func(t *testing.T, db *sqldb.DB) {
		t.Parallel()
		fn(t, db)
	})
}

// createStream is the Prepare production uses: declare the ORDERS stream.
func createStream(js jetstream.JetStream) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := js.CreateOrUpdateStream(ctx, events.StreamConfig(1))
		return err
	}
}

// newTestConfig returns a relay config that only a Notify (or a failure's
// back-off) can wake: it polls once an hour. Its spans go to the returned
// recorder.
func newTestConfig(t *testing.T, db *sqldb.DB, js jetstream.JetStream) (outbox.RelayConfig, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return outbox.RelayConfig{
		DB:         db,
		JS:         js,
		Prepare:    createStream(js),
		Owner:      "relay-" + t.Name(),
		Poll:       time.Hour,
		Batch:      10,
		Logger:     discard,
		Tracer:     tp,
		Meter:      noop.NewMeterProvider(),
		Propagator: propagation.TraceContext{},
	}, rec
}

// newRelay builds a relay or fails the test.
func newRelay(t *testing.T, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	r, err := outbox.NewRelay(cfg)
	if err != nil {
		t.Fatalf("NewRelay() error = %v", err)
	}
	return r
}

// runRelay runs r until the returned stop is called or the test ends; stop
// cancels Run, waits for it and checks it returned nil promptly.
func runRelay(t *testing.T, r *outbox.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }() // ends when stop cancels ctx
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			timer := time.NewTimer(5 * time.Second)
			defer timer.Stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run() after cancel = %v, want nil", err)
				}
			case <-timer.C:
				t.Errorf("Run() still running 5s after cancel, want it to return")
				<-done // do not leak it: wait however long it takes
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// requestSpan starts a sampled span standing for the HTTP request that
// wrote an outbox row.
func requestSpan(t *testing.T) trace.SpanContext {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	_, span := tp.Tracer("test").Start(context.Background(), "POST /orders")
	span.End()
	return span.SpanContext()
}

// newMessage returns an outbox message with a fresh UUIDv7 id carrying the
// trace context of sc.
func newMessage(t *testing.T, subject string, sc trace.SpanContext) outbox.Message {
	t.Helper()
	headers := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), headers)
	id := uuid.Must(uuid.NewV7()).String()
	return outbox.Message{
		ID:        id,
		Subject:   subject,
		Payload:   fmt.Appendf(nil, `{"id":%q}`, id),
		Headers:   headers,
		CreatedAt: time.Now(),
	}
}

func newMessages(t *testing.T, n int, sc trace.SpanContext) []outbox.Message {
	t.Helper()
	msgs := make([]outbox.Message, n)
	for i := range msgs {
		msgs[i] = newMessage(t, events.OrderCreated, sc)
	}
	return msgs
}

// insert writes msgs in one transaction, as a service does with its state change.
func insert(t *testing.T, db *sqldb.DB, msgs ...outbox.Message) {
	t.Helper()
	err := db.InTx(t.Context(), func(ctx context.Context, tx *sql.Tx) error {
		for _, m := range msgs {
			if err := outbox.Insert(t.Context(), tx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert outbox rows: %v", err)
	}
}

func pending(t *testing.T, db *sqldb.DB) int {
	t.Helper()
	n, err := outbox.Pending(t.Context(), db)
	if err != nil {
		t.Fatalf("Pending() error = %v", err)
	}
	return n
}

// minAttempts is the fewest publish attempts of the rows with the given ids.
func minAttempts(t *testing.T, db *sqldb.DB, msgs []outbox.Message) int {
	t.Helper()
	least := -1
	for _, m := range msgs {
		var n int
		if err := db.QueryRowContext(t.Context(), `SELECT attempts FROM outbox WHERE id = $1`, m.ID).Scan(&n); err != nil {
			t.Fatalf("read attempts of %s: %v", m.ID, err)
		}
		if least < 0 || n < least {
			least = n
		}
	}
	return least
}

// sentIDs lists the rows marked sent, by id.
func sentIDs(t *testing.T, db *sqldb.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT id FROM outbox WHERE sent_at IS NOT NULL ORDER BY id`)
	if err != nil {
		t.Fatalf("list sent rows: %v", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("scan sent row: %v", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list sent rows: %v", err)
	}
	return ids
}

func ids(msgs []outbox.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// streamMessages returns every message in the ORDERS stream, in sequence order.
func streamMessages(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(t.Context(), events.Stream)
	if err != nil {
		t.Fatalf("Stream(%s) error = %v", events.Stream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("GetMsg(%d) error = %v", seq, err)
		}
		msgs = append(msgs, m)
	}
	if uint64(len(msgs)) != info.State.Msgs {
		t.Fatalf("read %d messages, stream info says %d", len(msgs), info.State.Msgs)
	}
	return msgs
}

func streamIDs(msgs []*jetstream.RawStreamMsg) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Header.Get(jetstream.MsgIDHeader)
	}
	return out
}

func TestRelayPublishesPendingRowsInOrder(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayPublishesPendingRowsInOrder)
}

func testRelayPublishesPendingRowsInOrder(t *testing.T, db *sqldb.DB) {
	_, js := natsbustest.Start(t)
	cfg, rec := newTestConfig(t, db, js)
	req := requestSpan(t)
	msgs := newMessages(t, 4, req)
	// Written out of id order; published in it.
	insert(t, db, msgs[2], msgs[0], msgs[3], msgs[1])

	runRelay(t, newRelay(t, cfg))
	testwait.For(t, waitTimeout, "every row to be sent", func() bool { return pending(t, db) == 0 })

	if got, want := sentIDs(t, db), ids(msgs); !slices.Equal(got, want) {
		t.Errorf("rows with sent_at = %v, want %v", got, want)
	}
	got := streamMessages(t, js)
	if got, want := streamIDs(got), ids(msgs); !slices.Equal(got, want) {
		t.Fatalf("stream Nats-Msg-Ids in sequence order = %v, want %v (id order)", got, want)
	}

	spans := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.SpanContext().SpanID()] = s
	}
	for i, m := range got {
		want := msgs[i]
		if m.Subject != want.Subject || string(m.Data) != string(want.Payload) {
			t.Errorf("message %d = %s %s, want %s %s", i, m.Subject, m.Data, want.Subject, want.Payload)
		}
		tp := m.Header.Get("traceparent")
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), natsbus.Header(m.Header)))
		if !sc.IsValid() || sc.TraceID() != req.TraceID() || !sc.IsSampled() {
			t.Errorf("message %d traceparent = %q, want a sampled span of trace %s", i, tp, req.TraceID())
			continue
		}
		// The header names the relay's publish span, a child of the request.
		span, ok := spans[sc.SpanID()]
		if !ok {
			t.Errorf("message %d traceparent = %q, want the span id of a recorded publish span", i, tp)
			continue
		}
		if span.Parent().SpanID() != req.SpanID() || span.SpanKind() != trace.SpanKindProducer {
			t.Errorf("publish span %q parent, kind = %s, %v, want %s, producer", span.Name(), span.Parent().SpanID(), span.SpanKind(), req.SpanID())
		}
	}
	if n := len(rec.Ended()); n != len(msgs) {
		t.Errorf("publish spans = %d, want %d", n, len(msgs))
	}
}

func TestRelayNotifyWakesItBeforeThePoll(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayNotifyWakesItBeforeThePoll)
}

func testRelayNotifyWakesItBeforeThePoll(t *testing.T, db *sqldb.DB) {
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js) // Poll is an hour
	first := newMessage(t, events.OrderCreated, requestSpan(t))
	insert(t, db, first)
	r := newRelay(t, cfg)
	runRelay(t, r)
	// The first round has claimed and sent the row: the relay now waits for
	// a wake-up or the hour to pass.
	testwait.For(t, waitTimeout, "the first row to be sent", func() bool { return pending(t, db) == 0 })

	second := newMessage(t, events.OrderCreated, requestSpan(t))
	insert(t, db, second)
	r.Notify()
	r.Notify() // never blocks, however many commits ask
	testwait.For(t, waitTimeout, "the notified row to be sent", func() bool { return pending(t, db) == 0 })

	if got, want := streamIDs(streamMessages(t, js)), ids([]outbox.Message{first, second}); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v", got, want)
	}
}

func TestRelayRetriesPrepare(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		failures int
	}{
		{"fails once", 1},
		{"fails three times", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			eachBackend(t, func(t *testing.T, db *sqldb.DB) {
				testRelayRetriesPrepare(t, db, tt.failures)
			})
		})
	}
}

func testRelayRetriesPrepare(t *testing.T, db *sqldb.DB, failures int) {
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js)
	var calls atomic.Int32
	// Until Prepare succeeds the stream does not exist: nothing can
	// be published and nothing may be marked sent.
	var pendingWhileFailing atomic.Int32
	pendingWhileFailing.Store(-1)
	cfg.Prepare = func(ctx context.Context) error {
		n := calls.Add(1)
		if int(n) <= failures {
			if p, err := outbox.Pending(ctx, db); err == nil && int(n) == failures {
				pendingWhileFailing.Store(int32(p))
			}
			return errors.New("stream not ready")
		}
		return createStream(js)(ctx)
	}
	msgs := newMessages(t, 3, requestSpan(t))
	insert(t, db, msgs...)

	runRelay(t, newRelay(t, cfg))
	testwait.For(t, waitTimeout, "every row to be sent", func() bool { return pending(t, db) == 0 })

	if got := pendingWhileFailing.Load(); got != int32(len(msgs)) {
		t.Errorf("Pending() during the last failed Prepare = %d, want %d", got, len(msgs))
	}
	if got, want := int(calls.Load()), failures+1; got != want {
		t.Errorf("Prepare calls = %d, want %d (retried until it succeeds, then never again)", got, want)
	}
	if got, want := streamIDs(streamMessages(t, js)), ids(msgs); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v", got, want)
	}
}

func TestRelayNeverMarksARefusedRowSent(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayNeverMarksARefusedRowSent)
}

func testRelayNeverMarksARefusedRowSent(t *testing.T, db *sqldb.DB) {
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js)
	sc := requestSpan(t)
	before, after := newMessage(t, events.OrderCreated, sc), newMessage(t, events.OrderCreated, sc)
	// No stream holds this subject: JetStream never acknowledges it.
	lost := newMessage(t, "nowhere.created", sc)
	lost.ID, after.ID = after.ID, lost.ID // keep it between the other two
	insert(t, db, before, lost, after)

	runRelay(t, newRelay(t, cfg))
	testwait.For(t, waitTimeout, "the acknowledged rows to be sent and the refused one retried", func() bool {
		return pending(t, db) == 1 && minAttempts(t, db, []outbox.Message{lost}) >= 2
	})

	if got, want := sentIDs(t, db), ids([]outbox.Message{before, after}); !slices.Equal(got, want) {
		t.Errorf("rows with sent_at = %v, want %v (never %s)", got, want, lost.ID)
	}
	if got, want := streamIDs(streamMessages(t, js)), ids([]outbox.Message{before, after}); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v", got, want)
	}
}

// tcpNATS runs embedded servers one after another on one loopback address,
// with a TCP connection, like a service's to an external NATS, that outlives
// each server and reconnects to the one that replaces it.
type tcpNATS struct {
	addr string
	nc   *nats.Conn
	js   jetstream.JetStream
	stop func()
}

func newTCPNATS(t *testing.T, storeDir string) *tcpNATS {
	t.Helper()
	n := &tcpNATS{addr: freeAddr(t)}
	n.start(t, storeDir)
	nc, err := natsbus.Connect(natsbus.ConnConfig{Name: t.Name(), URL: "nats://" + n.addr}, discard)
	if err != nil {
		t.Fatalf("Connect(%s) error = %v", n.addr, err)
	}
	t.Cleanup(nc.Close)
	if n.js, err = jetstream.New(nc); err != nil {
		t.Fatalf("jetstream.New() error = %v", err)
	}
	n.nc = nc
	return n
}

// start runs a server storing in storeDir on the address.
func (n *tcpNATS) start(t *testing.T, storeDir string) {
	t.Helper()
	srv, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: storeDir, Listen: n.addr}, discard)
	if err != nil {
		t.Fatalf("StartEmbedded(%s) error = %v", n.addr, err)
	}
	var once sync.Once
	n.stop = func() { once.Do(srv.Stop) }
	t.Cleanup(n.stop)
}

// outage stops the server and waits until the connection has noticed.
func (n *tcpNATS) outage(t *testing.T) {
	t.Helper()
	n.stop()
	testwait.For(t, waitTimeout, "the connection to notice the outage", func() bool { return n.nc.Status() != nats.CONNECTED })
}

func TestRelaySurvivesANATSOutage(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelaySurvivesANATSOutage)
}

func testRelaySurvivesANATSOutage(t *testing.T, db *sqldb.DB) {
	storeDir := t.TempDir()
	bus := newTCPNATS(t, storeDir)
	cfg, _ := newTestConfig(t, db, bus.js)
	var prepares atomic.Int64
	prepare := cfg.Prepare
	cfg.Prepare = func(ctx context.Context) error { prepares.Add(1); return prepare(ctx) }
	r := newRelay(t, cfg)
	stop := runRelay(t, r)

	sc := requestSpan(t)
	first := newMessage(t, events.OrderCreated, sc)
	insert(t, db, first)
	r.Notify()
	testwait.For(t, waitTimeout, "the row written before the outage to be sent", func() bool { return pending(t, db) == 0 })

	bus.outage(t)
	during := newMessages(t, 3, sc)
	insert(t, db, during...)
	r.Notify()
	// The relay keeps trying through the outage (declaring the stream
	// again before each try) without marking anything sent.
	before := prepares.Load()
	testwait.For(t, waitTimeout, "the relay to try twice during the outage", func() bool { return prepares.Load() >= before+2 })
	if n := pending(t, db); n != len(during) {
		t.Errorf("Pending() during the outage = %d, want %d", n, len(during))
	}
	if got, want := sentIDs(t, db), ids([]outbox.Message{first}); !slices.Equal(got, want) {
		t.Errorf("rows with sent_at during the outage = %v, want %v", got, want)
	}

	bus.start(t, storeDir) // same store, same address
	testwait.For(t, waitTimeout, "the rows written during the outage to be sent", func() bool { return pending(t, db) == 0 })
	stop()

	want := append([]string{first.ID}, ids(during)...)
	if got := streamIDs(streamMessages(t, bus.js)); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids after the outage = %v, want %v", got, want)
	}
}

// TestRelayRedeclaresAStreamLostWithTheServer: NATS comes back without the
// ORDERS stream (a server replaced with an empty store). Publishes fail with
// "no responders" until the relay, which prepares again after every failed
// round, declares the stream anew.
func TestRelayRedeclaresAStreamLostWithTheServer(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayRedeclaresAStreamLostWithTheServer)
}

func testRelayRedeclaresAStreamLostWithTheServer(t *testing.T, db *sqldb.DB) {
	bus := newTCPNATS(t, t.TempDir())
	cfg, _ := newTestConfig(t, db, bus.js)
	r := newRelay(t, cfg)
	runRelay(t, r)
	insert(t, db, newMessage(t, events.OrderCreated, requestSpan(t)))
	r.Notify()
	testwait.For(t, waitTimeout, "the first row to be sent", func() bool { return pending(t, db) == 0 })

	bus.outage(t)
	bus.start(t, t.TempDir()) // a new server that never had the stream
	m := newMessage(t, events.OrderCreated, requestSpan(t))
	insert(t, db, m)
	r.Notify()
	testwait.For(t, waitTimeout, "the row written after the stream was lost to be sent", func() bool { return pending(t, db) == 0 })
	if got, want := streamIDs(streamMessages(t, bus.js)), ids([]outbox.Message{m}); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids on the new server = %v, want %v", got, want)
	}
}

func TestRelayResendIsDeduplicated(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayResendIsDeduplicated)
}

func testRelayResendIsDeduplicated(t *testing.T, db *sqldb.DB) {
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js)
	if err := createStream(js)(t.Context()); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	m := newMessage(t, events.OrderCreated, requestSpan(t))
	insert(t, db, m)
	// A relay that crashed after publishing and before marking the row sent:
	// the message is in the stream and the row still pending.
	if _, err := js.Publish(t.Context(), m.Subject, m.Payload, jetstream.WithMsgID(m.ID)); err != nil {
		t.Fatalf("Publish(%s) error = %v", m.ID, err)
	}

	runRelay(t, newRelay(t, cfg))
	testwait.For(t, waitTimeout, "the re-sent row to be marked sent", func() bool { return pending(t, db) == 0 })

	s, err := js.Stream(t.Context(), events.Stream)
	if err != nil {
		t.Fatalf("Stream() error = %v", err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream messages after a re-send = %d, want 1", info.State.Msgs)
	}
}

func TestRelayRunReturnsOnCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// start runs a relay into the state under test and returns its stop.
		start func(t *testing.T, db *sqldb.DB) func()
	}{
		{"idle", func(t *testing.T, db *sqldb.DB) func() {
			_, js := natsbustest.Start(t)
			cfg, _ := newTestConfig(t, db, js)
			insert(t, db, newMessage(t, events.OrderCreated, requestSpan(t)))
			stop := runRelay(t, newRelay(t, cfg))
			testwait.For(t, waitTimeout, "the row to be sent", func() bool { return pending(t, db) == 0 })
			return stop
		}},
		{"retrying Prepare", func(t *testing.T, db *sqldb.DB) func() {
			_, js := natsbustest.Start(t)
			cfg, _ := newTestConfig(t, db, js)
			var calls atomic.Int32
			cfg.Prepare = func(context.Context) error { calls.Add(1); return errors.New("never ready") }
			stop := runRelay(t, newRelay(t, cfg))
			testwait.For(t, waitTimeout, "Prepare to be retried", func() bool { return calls.Load() >= 2 })
			return stop
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			eachBackend(t, func(t *testing.T, db *sqldb.DB) {
				// stop fails the test unless Run returns nil within 5 s.
				tt.start(t, db)()
			})
		})
	}
}

func TestPending(t *testing.T) {
	t.Parallel()
	eachBackend(t, testPending)
}

func testPending(t *testing.T, db *sqldb.DB) {
	if n := pending(t, db); n != 0 {
		t.Errorf("Pending() of an empty outbox = %d, want 0", n)
	}
	msgs := newMessages(t, 3, requestSpan(t))
	insert(t, db, msgs...)
	if n := pending(t, db); n != 3 {
		t.Errorf("Pending() after inserting 3 = %d, want 3", n)
	}
	// A rolled-back transaction leaves no row behind.
	err := db.InTx(t.Context(), func(ctx context.Context, tx *sql.Tx) error {
		if err := outbox.Insert(t.Context(), tx, newMessage(t, events.OrderCreated, requestSpan(t))); err != nil {
			return err
		}
		return errors.New("the state change failed")
	})
	if err == nil {
		t.Fatalf("InTx() error = nil, want the rollback's cause")
	}
	if n := pending(t, db); n != 3 {
		t.Errorf("Pending() after a rolled-back insert = %d, want 3", n)
	}
	// Headers round-trip as JSON.
	var raw string
	if err := db.QueryRowContext(t.Context(), `SELECT headers FROM outbox WHERE id = $1`, msgs[0].ID).Scan(&raw); err != nil {
		t.Fatalf("read headers: %v", err)
	}
	var headers map[string]string
	if err := json.Unmarshal([]byte(raw), &headers); err != nil || headers["traceparent"] != msgs[0].Headers["traceparent"] {
		t.Errorf("stored headers = %s (%v), want traceparent %q", raw, err, msgs[0].Headers["traceparent"])
	}
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}

// TestFailedPublishIsLoggedInItsTrace: the relay's batch warning covers
// many events, but each failed publish is also a debug line in the trace of
// the request that wrote the event.
func TestFailedPublishIsLoggedInItsTrace(t *testing.T) {
	t.Parallel()
	db := sqldbtest.OpenSQLite(t, orders.Migrations)
	_, js := natsbustest.Start(t)
	cfg, _ := newTestConfig(t, db, js)
	logs := &logtest.Buffer{}
	cfg.Logger = telemetry.NewLogger(logs, telemetry.LogJSON, false, slog.LevelDebug)
	sc := requestSpan(t)
	refused := newMessage(t, "nowhere.created", sc) // no stream takes it
	insert(t, db, refused)
	runRelay(t, newRelay(t, cfg))

	var line map[string]any
	testwait.For(t, waitTimeout, "the failed publish's log line", func() bool {
		for l := range strings.Lines(logs.String()) {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "outbox publish failed" {
				line = rec
				return true
			}
		}
		return false
	})
	if line["trace_id"] != sc.TraceID().String() || line["event_id"] != refused.ID || line["error_type"] != "no_responders" {
		t.Errorf("log line %v, want trace_id %s, event_id %s, error_type no_responders", line, sc.TraceID(), refused.ID)
	}
	if id, _ := line["span_id"].(string); len(id) != 16 || id == sc.SpanID().String() {
		t.Errorf("log line span_id = %q, want the publish span's own id", id)
	}
}

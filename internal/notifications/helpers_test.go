package notifications

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// worker, its consume loop, the embedded server and every connection must
// be gone once each test's cleanups have run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeDirectory stands in for the users service (the Directory seam): a map
// of user ids to emails. It can fail transiently a number of times first; an
// unknown user is NotFound, as the real directory reports a deleted user.
type fakeDirectory struct {
	mu       sync.Mutex
	emails   map[string]string
	failures int // transient failures left before it answers
	calls    []string
}

func newFakeDirectory(emails map[string]string) *fakeDirectory {
	return &fakeDirectory{emails: emails}
}

func (d *fakeDirectory) Email(_ context.Context, userID string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, userID)
	if d.failures > 0 {
		d.failures--
		return "", errors.New("users is unavailable (fake)")
	}
	email, ok := d.emails[userID]
	if !ok {
		return "", apperr.New(apperr.NotFound, "user_not_found", "no such user (fake)")
	}
	return email, nil
}

// Calls returns the user ids asked for so far.
func (d *fakeDirectory) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// fakeChannelName is what the fake reports as its channel, and so what the
// worker records in the notification's channel column.
const fakeChannelName = "fake"

// fakeChannel stands in for a delivery channel (the Channel seam). It
// records every attempt and every successful delivery; it can fail a number
// of times first, and with a gate it blocks each delivery until the gate is
// closed (or the delivery's context ends).
type fakeChannel struct {
	gate <-chan struct{} // nil: never blocks

	mu        sync.Mutex
	failures  int // failed attempts left before deliveries succeed
	attempts  []Message
	delivered []Message
	inFlight  int
}

func (*fakeChannel) Name() string { return fakeChannelName }

func (c *fakeChannel) Deliver(ctx context.Context, m Message) error {
	c.mu.Lock()
	c.attempts = append(c.attempts, m)
	fail := c.failures > 0
	if fail {
		c.failures--
	}
	c.inFlight++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail {
		return errors.New("channel is down (fake)")
	}
	c.mu.Lock()
	c.delivered = append(c.delivered, m)
	c.mu.Unlock()
	return nil
}

// Attempts returns every message Deliver was called with.
func (c *fakeChannel) Attempts() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.attempts...)
}

// Delivered returns the messages delivered successfully.
func (c *fakeChannel) Delivered() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.delivered...)
}

// InFlight is how many deliveries are inside Deliver right now.
func (c *fakeChannel) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight
}

// testEnv is one test's real infrastructure: an embedded JetStream server,
// a migrated database and the service's telemetry.
type testEnv struct {
	srv *natsbus.Embedded
	js  jetstream.JetStream
	db  *sqldb.DB
	tel *telemetry.Providers
}

// newTestEnv is a testEnv on SQLite.
func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnvOn(t, sqldbtest.SQLite)
}

func newTestEnvOn(t *testing.T, b sqldbtest.Backend) *testEnv {
	t.Helper()
	srv, js := natsbustest.Start(t)
	tel, err := telemetry.New(t.Context(), Name, "test", func(string) string { return "" })
	if err != nil {
		t.Fatalf("telemetry.New: %v", err)
	}
	return &testEnv{srv: srv, js: js, db: b.Open(t, Migrations), tel: tel}
}

// testLogger writes warnings and errors to the test's output, shown when it fails.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// workerConfig is the configuration most tests use; tests adjust it.
func (e *testEnv) workerConfig(t *testing.T, dir Directory, ch Channel) WorkerConfig {
	return WorkerConfig{
		JS: e.js, DB: e.db, Directory: dir, Channel: ch,
		StreamReplicas: 1, Concurrency: 4,
		Logger: testLogger(t), Tracer: e.tel.Tracer, Meter: e.tel.Meter, Propagator: e.tel.Propagator,
		Now: time.Now,
	}
}

func newTestWorker(t *testing.T, cfg WorkerConfig) *Worker {
	t.Helper()
	w, err := NewWorker(cfg)
	if err != nil {
		t.Fatalf("NewWorker: %v", err)
	}
	return w
}

// runWorker runs w until the test ends (or stop is called) and waits for the
// consumer to exist. stop cancels Run and returns its error; the cleanup
// does the same and fails the test if Run does not return.
func runWorker(t *testing.T, w *Worker) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }() // ends when ctx is cancelled: by stop or the cleanup
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return within 30s of cancel")
				runErr = errors.New("run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
	testwait.For(t, 10*time.Second, "the consumer to exist", func() bool {
		_, err := w.cfg.JS.Consumer(ctx, events.Stream, ConsumerName)
		return err == nil
	})
	return stop
}

// newEvent returns an orders.created event with a fresh event and order id.
func newEvent(userID string) events.Envelope[events.OrderCreatedData] {
	return events.NewOrderCreated(uuid.NewString(), events.OrderCreatedData{
		OrderID:   "ord-" + uuid.NewString(),
		UserID:    userID,
		SKU:       "SKU-1",
		Qty:       2,
		CreatedAt: time.Now().UTC(),
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return data
}

// publish puts data on orders.created with msgID as its Nats-Msg-Id (none
// when empty) and the given extra headers, and waits for the stream's ack.
func publish(t *testing.T, js jetstream.JetStream, data []byte, msgID string, hdr nats.Header) {
	t.Helper()
	msg := nats.NewMsg(events.OrderCreated)
	msg.Data = data
	for k, v := range hdr {
		msg.Header[k] = v
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := js.PublishMsg(t.Context(), msg, opts...); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// publishEvent publishes ev the way the outbox relay does: its id is the Nats-Msg-Id.
func publishEvent(t *testing.T, js jetstream.JetStream, ev events.Envelope[events.OrderCreatedData]) {
	t.Helper()
	publish(t, js, mustJSON(t, ev), ev.ID, nil)
}

// deliverOne declares w's consumer, publishes ev and fetches it as the
// consumer's next delivery, for tests that hand it to handle themselves.
func deliverOne(t *testing.T, w *Worker, js jetstream.JetStream, ev events.Envelope[events.OrderCreatedData]) jetstream.Msg {
	t.Helper()
	cons, err := w.setup(t.Context())
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	publishEvent(t, js, ev)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	for m := range batch.Messages() {
		return m
	}
	t.Fatalf("fetch returned no message: %v", batch.Error())
	return nil
}

// row is a notifications row as stored.
type row struct {
	ID, EventID, OrderID, UserID, Channel, Status string
	CreatedAt                                     time.Time
	SentAt                                        *time.Time
}

func rows(t *testing.T, db *sqldb.DB) []row {
	t.Helper()
	rs, err := db.QueryContext(t.Context(),
		`SELECT id, event_id, order_id, user_id, channel, status, created_at, sent_at FROM notifications ORDER BY id`)
	if err != nil {
		t.Fatalf("query notifications: %v", err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		var created sqldb.Time
		var sent sqldb.NullTime
		if err := rs.Scan(&r.ID, &r.EventID, &r.OrderID, &r.UserID, &r.Channel, &r.Status, &created, &sent); err != nil {
			t.Fatalf("scan notification: %v", err)
		}
		r.CreatedAt = created.Time
		if sent.Valid {
			r.SentAt = &sent.Time.Time
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		t.Fatalf("read notifications: %v", err)
	}
	return out
}

func rowCount(t *testing.T, db *sqldb.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM notifications`).Scan(&n); err != nil {
		t.Fatalf("count notifications: %v", err)
	}
	return n
}

// consumerInfo reads the worker's durable consumer from the server.
func consumerInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	cons, err := js.Consumer(t.Context(), events.Stream, ConsumerName)
	if err != nil {
		t.Fatalf("consumer %s: %v", ConsumerName, err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return info
}

// settled reports whether every event was delivered to the consumer and acked
// (or terminated): nothing pending, nothing awaiting an ack.
func settled(t *testing.T, js jetstream.JetStream) bool {
	info := consumerInfo(t, js)
	return info.NumPending == 0 && info.NumAckPending == 0
}

// deadLetters returns every message on the dead-letter stream, oldest first.
func deadLetters(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(t.Context(), DeadLetterStream)
	if err != nil {
		t.Fatalf("stream %s: %v", DeadLetterStream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s info: %v", DeadLetterStream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get dead letter %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// counter sums every series of a Prometheus counter in the service's registry
// (0 when it has not been created yet).
func counter(t *testing.T, tel *telemetry.Providers, name string) float64 {
	t.Helper()
	families, err := tel.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		if f.GetType() != dto.MetricType_COUNTER {
			t.Fatalf("metric %s is a %v, want a counter", name, f.GetType())
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// The counters the worker exports, by their Prometheus names.
const (
	metricSent         = "blueprint_notifications_sent_total"
	metricFailed       = "blueprint_notifications_failed_total"
	metricDeadLettered = "blueprint_notifications_dead_lettered_total"
)

func eventIDs(ms []Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.EventID
	}
	return out
}

func fmtRows(rs []row) string {
	s := ""
	for _, r := range rs {
		s += fmt.Sprintf("\n  %+v", r)
	}
	return s
}

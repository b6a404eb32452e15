package outbox_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus/natsbustest"
	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/testwait"
)

// startTCPNATS runs an embedded server that also listens on a loopback port,
// so a proxy can stand between it and a relay. It returns the server's
// host:port and a JetStream handle on an in-process connection, which sees
// the stream as it is whatever the proxy does.
func startTCPNATS(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	srv, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"}, discard)
	if err != nil {
		t.Fatalf("StartEmbedded() error = %v", err)
	}
	t.Cleanup(srv.Stop)
	return strings.TrimPrefix(srv.ClientURL(), "nats://"), natsbustest.Connect(t, srv)
}

// connectJS connects over TCP to url, as a service does to an external NATS.
func connectJS(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := natsbus.Connect(natsbus.ConnConfig{Name: t.Name(), URL: url}, discard)
	if err != nil {
		t.Fatalf("Connect(%s) error = %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() error = %v", err)
	}
	return js
}

// waitClosed waits until ch is closed.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("after %s: still waiting for %s", waitTimeout, what)
	}
}

// publishSpans are the recorded publish spans of the message with id.
func publishSpans(rec *tracetest.SpanRecorder, id string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if spanAttr(s, "messaging.message.id") == id {
			out = append(out, s)
		}
	}
	return out
}

// spanAttr is the value of the span's attribute key, as text; "" if unset.
func spanAttr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestRelayResendsAfterAnAckTimeout: the publish reaches the stream, but its
// PubAck never reaches the relay. That is an unknown outcome. The row stays
// pending, since nothing acknowledged it, and is sent again with the same
// Nats-Msg-Id; JetStream's duplicates window drops the copy, so the stream
// holds the event once.
func TestRelayResendsAfterAnAckTimeout(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayResendsAfterAnAckTimeout)
}

func testRelayResendsAfterAnAckTimeout(t *testing.T, db *sqldb.DB) {
	addr, direct := startTCPNATS(t)
	proxy := newAckProxy(t, addr, events.OrderCreated)
	cfg, rec := newTestConfig(t, db, connectJS(t, proxy.URL()))
	reader := sdkmetric.NewManualReader()
	cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	m := newMessage(t, events.OrderCreated, requestSpan(t))
	insert(t, db, m)
	runRelay(t, newRelay(t, cfg))

	waitClosed(t, proxy.Stalled(), "the relay to publish")
	testwait.For(t, waitTimeout, "the event to be stored", func() bool { return len(streamMessages(t, direct)) == 1 })
	testwait.For(t, waitTimeout, "the relay to stop waiting for the ack", func() bool {
		return slices.ContainsFunc(publishSpans(rec, m.ID), func(s sdktrace.ReadOnlySpan) bool {
			return spanAttr(s, "error.type") == "timeout"
		})
	})
	// Stored, but no PubAck said so: the row is not marked.
	if got := sentIDs(t, db); len(got) != 0 {
		t.Errorf("rows with sent_at after an ack timeout = %v, want none", got)
	}
	if got := publishCount(t, reader, events.OrderCreated, "timeout"); got < 1 {
		t.Errorf("messaging.client.operation.duration count with error.type=timeout = %d, want at least 1", got)
	}

	proxy.release()
	testwait.For(t, waitTimeout, "the row to be sent again", func() bool { return pending(t, db) == 0 })
	if got, want := streamIDs(streamMessages(t, direct)), []string{m.ID}; !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v (the event once)", got, want)
	}
	if got := minAttempts(t, db, []outbox.Message{m}); got < 2 {
		t.Errorf("attempts = %d, want at least 2 (sent again)", got)
	}
	// The ack that marked the row was JetStream's answer to a copy.
	if !slices.ContainsFunc(publishSpans(rec, m.ID), func(s sdktrace.ReadOnlySpan) bool {
		return spanAttr(s, "messaging.nats.duplicate") == "true"
	}) {
		t.Errorf("no publish span of %s with messaging.nats.duplicate=true, want the acknowledged re-send", m.ID)
	}
}

// The crashed relay runs in a process of its own, started from this test
// binary and told what to do through these variables.
const (
	envRelayDB    = "BLUEPRINT_OUTBOX_TEST_RELAY_DB"
	envRelayNATS  = "BLUEPRINT_OUTBOX_TEST_RELAY_NATS"
	envRelayOwner = "BLUEPRINT_OUTBOX_TEST_RELAY_OWNER"
)

// TestRelayProcess is the relay that TestRelayResendsRowsOfACrashedRelay
// starts in another process and kills. Run any other way, it skips.
func TestRelayProcess(t *testing.T) {
	dbURL := os.Getenv(envRelayDB)
	if dbURL == "" {
		t.Skip("runs only as the process TestRelayResendsRowsOfACrashedRelay starts")
	}
	db, err := sqldb.Open(t.Context(), dbURL, orders.Migrations)
	if err != nil {
		t.Fatalf("open %s: %v", dbURL, err)
	}
	defer db.Close()
	cfg, _ := newTestConfig(t, db, connectJS(t, os.Getenv(envRelayNATS)))
	cfg.Owner = os.Getenv(envRelayOwner) // and the default lease
	// It runs until killed, or until its stdin closes: should the test that
	// started it die first, it does not run on unowned.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }() // ends at EOF
	if err := newRelay(t, cfg).Run(ctx); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// TestRelayResendsRowsOfACrashedRelay: a relay process dies (SIGKILL) with a
// batch in flight: claimed under its lease, published, stored by JetStream,
// never marked sent. Another relay leaves the rows alone while the lease
// lasts, then, as the dead relay no longer renews it, claims them within a
// lease (3 s by default) and sends them again; JetStream drops the copies.
func TestRelayResendsRowsOfACrashedRelay(t *testing.T) {
	t.Parallel()
	// Two processes share the database, so it is opened by URL.
	eachBackendURL(t, testRelayResendsRowsOfACrashedRelay)
}

func testRelayResendsRowsOfACrashedRelay(t *testing.T, dbURL string) {
	db := openDB(t, dbURL)
	addr, direct := startTCPNATS(t)
	proxy := newAckProxy(t, addr, events.OrderCreated)
	msgs := newMessages(t, 3, requestSpan(t))
	insert(t, db, msgs...)

	// The doomed relay publishes through the proxy, which keeps its acks
	// from it: it dies waiting for them, as a relay killed between publish
	// and mark does.
	crashed := exec.Command(os.Args[0], "-test.run=^TestRelayProcess$")
	crashed.Env = append(os.Environ(),
		envRelayDB+"="+dbURL, envRelayNATS+"="+proxy.URL(),
		envRelayOwner+"=crashed")
	stdin, err := crashed.StdinPipe()
	if err != nil {
		t.Fatalf("stdin pipe: %v", err)
	}
	var out bytes.Buffer
	crashed.Stdout, crashed.Stderr = &out, &out
	if err := crashed.Start(); err != nil {
		t.Fatalf("start relay process: %v", err)
	}
	killed := false
	kill := func() {
		if killed {
			return
		}
		killed = true
		_ = crashed.Process.Kill()
		_ = crashed.Wait()
		_ = stdin.Close()
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			t.Logf("relay process output:\n%s", out.Bytes())
		}
	})

	waitClosed(t, proxy.Stalled(), "the relay process to publish")
	testwait.For(t, waitTimeout, "every event to be stored", func() bool { return len(streamMessages(t, direct)) == len(msgs) })
	kill()
	killedAt := time.Now()

	leases := map[string]time.Time{}
	rows, err := db.QueryContext(t.Context(), `SELECT id, claimed_by, claimed_until FROM outbox WHERE sent_at IS NULL`)
	if err != nil {
		t.Fatalf("read leases: %v", err)
	}
	for rows.Next() {
		var id, owner string
		var until sqldb.Time
		if err := rows.Scan(&id, &owner, &until); err != nil {
			t.Fatalf("scan lease: %v", err)
		}
		if owner != "crashed" {
			t.Errorf("row %s claimed_by = %q, want crashed", id, owner)
		}
		leases[id] = until.Time
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read leases: %v", err)
	}
	if len(leases) != len(msgs) {
		t.Fatalf("rows left claimed = %d, want %d", len(leases), len(msgs))
	}

	cfg, rec := newTestConfig(t, db, direct)
	reader := sdkmetric.NewManualReader()
	cfg.Owner, cfg.Meter = "survivor", sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg.Poll = 20 * time.Millisecond // rows whose lease ends wake nobody: the poll finds them
	runRelay(t, newRelay(t, cfg))
	// A lease that outlived the dead relay by far (it was 30 s) fails here.
	testwait.For(t, waitTimeout, "the survivor to send the rows", func() bool { return pending(t, db) == 0 })
	t.Logf("the survivor sent the dead relay's rows %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	if n := takenOver(t, reader); n != int64(len(msgs)) {
		t.Errorf("blueprint.outbox.taken_over = %d, want %d", n, len(msgs))
	}

	for _, m := range msgs {
		var by string
		var at sqldb.Time
		if err := db.QueryRowContext(t.Context(), `SELECT sent_by, sent_at FROM outbox WHERE id = $1`, m.ID).Scan(&by, &at); err != nil {
			t.Fatalf("read row %s: %v", m.ID, err)
		}
		if by != "survivor" {
			t.Errorf("row %s sent_by = %q, want survivor", m.ID, by)
		}
		if at.Before(leases[m.ID]) {
			t.Errorf("row %s sent_at = %s, before the crashed relay's lease ended at %s", m.ID, at, leases[m.ID])
		}
		for _, s := range publishSpans(rec, m.ID) {
			if spanAttr(s, "messaging.nats.duplicate") != "true" {
				t.Errorf("survivor's publish of %s: messaging.nats.duplicate = %q, want true", m.ID, spanAttr(s, "messaging.nats.duplicate"))
			}
		}
	}
	if got, want := streamIDs(streamMessages(t, direct)), ids(msgs); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v (each event once)", got, want)
	}
}

// TestRelayForgetsLostAcks: acks lost while the connection stays up (a
// stream leader that changed mid-publish loses them so) must not pile up in
// the NATS client, which holds at most a batch of unacknowledged publishes
// for the relay and then refuses every publish until the connection drops.
// Here a subject that no stream takes, with a subscriber that never answers,
// loses the acks of a whole batch; then a stream takes the subject and every
// row must go out.
func TestRelayForgetsLostAcks(t *testing.T) {
	t.Parallel()
	eachBackend(t, testRelayForgetsLostAcks)
}

func testRelayForgetsLostAcks(t *testing.T, db *sqldb.DB) {
	const subject = "silent.created"
	_, js := natsbustest.Start(t)
	sub, err := js.Conn().SubscribeSync(subject)
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	cfg, rec := newTestConfig(t, db, js)
	var prepares atomic.Int32
	cfg.Prepare = func(ctx context.Context) error {
		sc := events.StreamConfig(1)
		// Prepared again after the failed round, the stream takes the subject.
		if prepares.Add(1) > 1 {
			sc.Subjects = append(sc.Subjects, subject)
		}
		_, err := js.CreateOrUpdateStream(ctx, sc)
		return err
	}
	sc := requestSpan(t)
	msgs := make([]outbox.Message, cfg.Batch)
	for i := range msgs {
		msgs[i] = newMessage(t, subject, sc)
	}
	insert(t, db, msgs...)

	runRelay(t, newRelay(t, cfg))
	testwait.For(t, waitTimeout, "every row to be sent", func() bool { return pending(t, db) == 0 })

	timeouts := 0
	for _, s := range rec.Ended() {
		if spanAttr(s, "error.type") == "timeout" {
			timeouts++
		}
	}
	if timeouts != len(msgs) {
		t.Errorf("publish spans with error.type=timeout = %d, want %d (the first round's)", timeouts, len(msgs))
	}
	if got, want := streamIDs(streamMessages(t, js)), ids(msgs); !slices.Equal(got, want) {
		t.Errorf("stream Nats-Msg-Ids = %v, want %v", got, want)
	}
}

package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx", for the PostgreSQL databases
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	_ "modernc.org/sqlite" // "sqlite", to read the SQLite files the services write

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
)

// OpenDB opens a service's database by the URL the service was given, to
// read what it stored.
func OpenDB(t testing.TB, dbURL string) *sql.DB {
	t.Helper()
	driver, dsn := "pgx", dbURL
	if path, ok := strings.CutPrefix(dbURL, "sqlite:"); ok {
		// The services write while the test reads: wait on their locks.
		driver, dsn = "sqlite", "file:"+path+"?_pragma=busy_timeout(10000)"
	} else if u, err := url.Parse(dbURL); err == nil {
		q := u.Query()
		q.Del("pool_max_conns") // a sqldb parameter, not a PostgreSQL one
		u.RawQuery = q.Encode()
		dsn = u.String()
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dbURL, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Sources are where a run's outcome is read: the databases of orders and
// notifications and the NATS the streams live in.
type Sources struct {
	Orders, Notifications *sql.DB
	NATSURL               string
	// NATSNKey is the seed of a NATS user that may read the streams (the
	// cluster's admin), or empty for a NATS without users.
	NATSNKey string
}

// Report is the outcome of a run against the invariants of the event path.
type Report struct {
	Accepted int // orders answered 201
	// Missing: answered 201 but not in the orders database.
	Missing int
	// NoEvent: accepted orders with no event in the ORDERS stream.
	NoEvent int
	// Unsettled: accepted orders with neither a notification nor a dead letter.
	Unsettled int
	// DuplicateNotifications: notifications beyond one per order.
	DuplicateNotifications int
	// StreamMessages in ORDERS, and how many repeated an event id.
	StreamMessages, DuplicateEvents int
	Notified, DeadLettered          int
	// Pending outbox rows, and rows published more than once (their
	// first attempt failed or its outcome was unknown).
	Pending, Resent int
}

// Holds reports whether every invariant holds.
func (r Report) Holds() bool {
	return r.Missing == 0 && r.NoEvent == 0 && r.Unsettled == 0 && r.DuplicateNotifications == 0 &&
		r.DuplicateEvents == 0 && r.Pending == 0
}

func (r Report) String() string {
	return fmt.Sprintf("accepted %d, missing %d, without event %d, unsettled %d, notified %d, dead-lettered %d, "+
		"duplicate notifications %d, stream messages %d (duplicates %d), outbox pending %d, re-sent %d",
		r.Accepted, r.Missing, r.NoEvent, r.Unsettled, r.Notified, r.DeadLettered,
		r.DuplicateNotifications, r.StreamMessages, r.DuplicateEvents, r.Pending, r.Resent)
}

// Settle waits up to timeout for the run to settle — the outbox empty and
// every accepted order notified or dead-lettered — and returns the report
// and how long settling took. The caller checks the report.
func Settle(t testing.TB, s Sources, accepted map[string]string, timeout time.Duration) (Report, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		r := Measure(t, s, accepted)
		if (r.Pending == 0 && r.Unsettled == 0) || time.Since(start) > timeout {
			return r, time.Since(start)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// WaitDrained waits up to timeout for the outbox to empty and returns how
// long it took.
func WaitDrained(t testing.TB, orders *sql.DB, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	for {
		n, err := count(orders, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`)
		if err == nil && n == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("outbox pending %d after %s (%v)", n, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Measure reads the outcome once.
func Measure(t testing.TB, s Sources, accepted map[string]string) Report {
	t.Helper()
	r := Report{Accepted: len(accepted)}
	inDB, err := column(s.Orders, `SELECT id FROM orders`)
	if err != nil {
		t.Fatalf("read orders: %v", err)
	}
	if r.Pending, err = count(s.Orders, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	if r.Resent, err = count(s.Orders, `SELECT count(*) FROM outbox WHERE attempts > 1`); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	notified, err := column(s.Notifications, `SELECT order_id FROM notifications`)
	if err != nil {
		t.Fatalf("read notifications: %v", err)
	}
	perOrder := map[string]int{}
	for _, id := range notified {
		perOrder[id]++
	}
	for _, n := range perOrder {
		r.DuplicateNotifications += n - 1
	}
	r.Notified = len(perOrder)

	nc, err := ConnectNATS(s.NATSURL, s.NATSNKey)
	if err != nil {
		t.Fatalf("nats: %v", err)
	}
	defer nc.Close()
	streamed, ids, err := readStreamPatiently(t, nc, events.Stream, "")
	if err != nil {
		t.Fatalf("read stream %s: %v", events.Stream, err)
	}
	r.StreamMessages = ids.total
	r.DuplicateEvents = ids.total - len(ids.seen)
	dead, _, err := readStreamPatiently(t, nc, "DLQ", "dlq.notifications")
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("read stream DLQ: %v", err)
	}
	r.DeadLettered = len(dead)

	stored := map[string]bool{}
	for _, id := range inDB {
		stored[id] = true
	}
	for id := range accepted {
		if !stored[id] {
			r.Missing++
		}
		if streamed[id] == 0 {
			r.NoEvent++
		}
		if perOrder[id] == 0 && dead[id] == 0 {
			r.Unsettled++
		}
	}
	return r
}

// readStreamPatiently is readStream, tried again when a read fails: a
// NATS cluster that has just lost a node answers for a stream only once
// the stream's group has a leader again, and a read begun before that may
// wait out its whole deadline, or give up recreating its consumer. A
// stream that does not exist is an answer, not a failure.
func readStreamPatiently(t testing.TB, nc *nats.Conn, stream, subject string) (map[string]int, idCount, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		perOrder, ids, err := readStream(nc, stream, subject)
		if err == nil || attempt == 3 || errors.Is(err, jetstream.ErrStreamNotFound) {
			return perOrder, ids, err
		}
		t.Logf("read stream %s: %v; reading it again", stream, err)
	}
}

type idCount struct {
	seen  map[string]bool
	total int
}

// readStream reads every message of a stream (of one subject, when given)
// and counts them per order and per Nats-Msg-Id.
func readStream(nc *nats.Conn, stream, subject string) (map[string]int, idCount, error) {
	ids := idCount{seen: map[string]bool{}}
	perOrder := map[string]int{}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, ids, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return perOrder, ids, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, ids, err
	}
	if info.State.Msgs == 0 {
		return perOrder, ids, nil
	}
	// An ordered consumer recreates itself when it loses its place, by
	// default forever: bounded, a cluster that cannot serve it fails the
	// read instead of hanging the test.
	cfg := jetstream.OrderedConsumerConfig{MaxResetAttempts: 5}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, ids, err
	}
	for empty := 0; ; {
		// A cluster that lost a node may take a moment to serve the
		// consumer: wait for each batch, and give up only after a few
		// empty ones.
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, ids, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ids.total++
			ids.seen[m.Headers().Get(nats.MsgIdHdr)] = true
			if ev, err := events.ParseOrderCreated(m.Data()); err == nil {
				perOrder[ev.Data.OrderID]++
			}
			md, err := m.Metadata()
			if err == nil && md.NumPending == 0 {
				return perOrder, ids, batch.Error()
			}
		}
		if n == 0 {
			if empty++; empty == 5 {
				return perOrder, ids, errors.New("stream ended before its last message")
			}
		}
	}
}

// ConnectNATS connects to url as the NKey user of seedFile (none when empty).
func ConnectNATS(url, seedFile string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Timeout(5 * time.Second)}
	if seedFile != "" {
		nk, err := natsbus.NKeyOptions(seedFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nk...)
	}
	return nats.Connect(url, opts...)
}

func count(db *sql.DB, query string) (int, error) {
	var n int
	err := db.QueryRow(query).Scan(&n)
	return n, err
}

func column(db *sql.DB, query string) ([]string, error) {
	rows, err := db.Query(query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

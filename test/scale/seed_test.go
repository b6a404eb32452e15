//go:build scale

package scale

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sync/errgroup"

	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/users"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// The data is production's steady state. The orders were placed evenly
// over the 30 days before the seed: about 3.9 a second at 10 million, for
// about 333,000 idempotency keys and 13,900 outbox rows at any moment. One
// user placed 1 % of them (100,000 at 10 million), so that a deep page of
// one user's orders can be measured; 10,000 others share the rest. Every
// order was notified once. What production no longer keeps is left out:
// the outbox keeps an event for OUTBOX_RETENTION after it was sent, and the
// orders service an idempotency key for 24 hours.
const (
	span            = 30 * 24 * time.Hour
	heavyShare      = 100 // one order in heavyShare is the heavy user's
	otherUsers      = 10_000
	keyLife         = 24 * time.Hour
	outboxRetention = time.Hour // OUTBOX_RETENTION's default
	// batch is how many orders, or notifications, one transaction writes.
	batch = 50_000
	// password is every seeded user's.
	password = "scale-password"
)

// load says what a database is loaded with.
type load struct {
	orders int
	heavy  int // orders of the heavy user, among them
	users  int // other users, who place the rest
	// big says the tables are big enough that reading one whole is a
	// fault: on a few rows a planner rightly prefers to.
	big bool
}

// emptyLoad is the baseline: the heavy user alone, with two pages and a
// half of orders, enough for a full page at the cursor half way.
var emptyLoad = load{orders: 50, heavy: 50}

// fullLoad is n orders, the heavy user's share of them and the other
// users'.
func fullLoad(n int) load {
	return load{orders: n, heavy: n / heavyShare, users: otherUsers, big: true}
}

// seeded is what the measurement needs to know of the data.
type seeded struct {
	// now is the instant the data was made for: the newest order was
	// placed then, and the windows of the outbox and the keys end there.
	now                 time.Time
	heavyID, heavyEmail string
	// middle is the heavy user's order half way down its list.
	middle orders.Order
	want   counts
	took   time.Duration
}

// counts are the rows of each table, and the heavy user's orders.
type counts struct {
	users, orders, notifications, outbox, keys, heavy int
}

// The products ordered.
var skus = []string{"BLUEPRINT-MUG", "BLUEPRINT-TEE", "BLUEPRINT-CAP", "STICKER-PACK"}

// seed loads the databases at urls with l through each service's Seed: the
// users, then the orders and their notifications in transactions of batch
// rows, the two databases written at once.
func seed(t *testing.T, urls map[string]string, l load) seeded {
	ctx := t.Context()
	dbs := openAll(t, urls, nil)
	defer closeAll(t, dbs)
	usersSvc, err := users.NewService(dbs["users"], noop.NewMeterProvider(), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ordersSvc, err := orders.NewService(dbs["orders"], propagation.TraceContext{}, noop.NewMeterProvider(), func() {}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dbs["orders"].Dialect == sqldb.SQLite {
		// A bulk load: a page cache that holds the index pages being written
		// (a leaf per user in the indexes by user) spares reading them from
		// the kernel, and writing them out, for every row. It changes how
		// fast the data is written, not how it is laid out.
		for _, svc := range services {
			if _, err := dbs[svc].ExecContext(ctx, `PRAGMA cache_size = -131072`); err != nil {
				t.Fatalf("%s: cache size: %v", svc, err)
			}
		}
	}

	start := time.Now()
	h := newHistory(l, start)
	if err := usersSvc.Seed(ctx, h.users, password); err != nil {
		t.Fatalf("seed users: %v", err)
	}
	placed := make(chan []orders.Placed, 1)
	recorded := make(chan []notifications.Recorded, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return drain(gctx, placed, ordersSvc.Seed) })
	g.Go(func() error { return drain(gctx, recorded, notifications.NewService(dbs["notifications"]).Seed) })
	g.Go(func() error {
		defer close(placed)
		defer close(recorded)
		for i := 0; i < l.orders; i += batch {
			ps, ns := h.place(i, min(i+batch, l.orders))
			if err := send(gctx, placed, ps); err != nil {
				return err
			}
			if err := send(gctx, recorded, ns); err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatalf("seed: %v", err)
	}
	h.seeded.took = time.Since(start)

	if dbs["orders"].Dialect == sqldb.Postgres {
		// Production's tables have been vacuumed and analysed by autovacuum;
		// the planner needs their statistics to choose as it would there.
		// (SQLite keeps none unless told to, and Blueprint never tells it.)
		// On a connection of the test's: the services' cut statements off
		// after 5 s.
		for _, svc := range services {
			start := time.Now()
			if _, err := harness.OpenDB(t, urls[svc]).ExecContext(ctx, `VACUUM ANALYZE`); err != nil {
				t.Fatalf("%s: vacuum: %v", svc, err)
			}
			t.Logf("%s: VACUUM ANALYZE in %s", svc, time.Since(start).Round(time.Millisecond))
		}
	}
	return h.seeded
}

// history makes up the users and orders of a load, the same every run.
type history struct {
	l           load
	first, end  time.Time // the orders were placed between them
	rng         *rand.Rand
	users       []users.User
	heavy       string   // the heavy user's id
	others      []string // the other users' ids
	heavyPlaced int      // the heavy user's orders made so far
	seeded      seeded
}

func newHistory(l load, end time.Time) *history {
	h := &history{l: l, first: end.Add(-span), end: end, rng: rand.New(rand.NewPCG(1, 2))}
	registered := sqldb.NewTime(h.first.Add(-time.Hour)).Time
	heavy := users.User{ID: idAt(registered), Email: "heavy@scale.example.com", Name: "Heavy Buyer", Plan: "free", CreatedAt: registered}
	h.users, h.heavy = []users.User{heavy}, heavy.ID
	for i := range l.users {
		u := users.User{ID: idAt(registered), Email: fmt.Sprintf("user-%d@scale.example.com", i), Name: fmt.Sprintf("User %d", i), Plan: "free", CreatedAt: registered}
		h.users = append(h.users, u)
		h.others = append(h.others, u.ID)
	}
	h.seeded = seeded{now: end, heavyID: heavy.ID, heavyEmail: heavy.Email,
		want: counts{users: len(h.users), orders: l.orders, notifications: l.orders, heavy: l.heavy}}
	return h
}

// place makes orders from to to, each with its notification, and counts
// what the databases should then hold. The calls must follow each other
// in the order the orders were placed.
func (h *history) place(from, to int) ([]orders.Placed, []notifications.Recorded) {
	step := span / time.Duration(h.l.orders)
	ps := make([]orders.Placed, 0, to-from)
	ns := make([]notifications.Recorded, 0, to-from)
	for i := from; i < to; i++ {
		at := sqldb.NewTime(h.first.Add(step * time.Duration(i+1))).Time
		// Bresenham's spread: exactly l.heavy of the orders, evenly.
		user := h.heavy
		if (i+1)*h.l.heavy/h.l.orders == i*h.l.heavy/h.l.orders {
			user = h.others[h.rng.IntN(len(h.others))]
		}
		o := orders.Order{ID: idAt(at), UserID: user, SKU: skus[h.rng.IntN(len(skus))], Qty: 1 + h.rng.IntN(3), Status: "created", CreatedAt: at}
		p := orders.Placed{Order: o, EventID: idAt(at)}
		if h.end.Sub(at) < keyLife {
			p.Key = uuid.NewString()
			h.seeded.want.keys++
		}
		if h.end.Sub(at) < outboxRetention {
			p.SentAt = at.Add(5 * time.Millisecond) // the relay's publish and its ack
			h.seeded.want.outbox++
		}
		if user == h.heavy {
			if h.heavyPlaced == h.l.heavy/2 {
				h.seeded.middle = o
			}
			h.heavyPlaced++
		}
		notified := at.Add(10 * time.Millisecond) // the worker's lookup and delivery
		ps = append(ps, p)
		ns = append(ns, notifications.Recorded{EventID: p.EventID, Notification: notifications.Notification{
			ID: idAt(notified), OrderID: o.ID, UserID: user, Channel: "log", Status: "sent", CreatedAt: notified, SentAt: &notified,
		}})
	}
	return ps, ns
}

// drain writes each batch that arrives with write, until the channel
// closes or a write fails.
func drain[T any](ctx context.Context, batches <-chan []T, write func(context.Context, []T) error) error {
	for b := range batches {
		if err := write(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func send[T any](ctx context.Context, batches chan<- []T, b []T) error {
	select {
	case batches <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// idAt is a UUIDv7 made at t, as uuid.NewV7 would have made it then: seeded
// ids sort by time as the services' own do, which the lists' order and the
// outbox's pruning rely on.
func idAt(t time.Time) string {
	id := uuid.New() // random bits, with the variant set
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (8 * (5 - i)))
	}
	id[6] = 0x70 | id[6]&0x0f // version 7
	return id.String()
}

// openAll opens the databases at urls as the services do, applying their
// migrations, each with the options of its service (none when options is
// nil).
func openAll(t *testing.T, urls map[string]string, options func(service string) []sqldb.Option) map[string]*sqldb.DB {
	dbs := map[string]*sqldb.DB{}
	for _, s := range services {
		var opts []sqldb.Option
		if options != nil {
			opts = options(s)
		}
		db, err := sqldb.Open(t.Context(), urls[s], migrations[s], opts...)
		if err != nil {
			closeAll(t, dbs)
			t.Fatalf("open %s: %v", s, err)
		}
		dbs[s] = db
	}
	return dbs
}

func closeAll(t *testing.T, dbs map[string]*sqldb.DB) {
	for s, db := range dbs {
		if err := db.Close(); err != nil {
			t.Errorf("close %s: %v", s, err)
		}
	}
}

// migrations are each service's.
var migrations = map[string]fs.FS{
	"users":         users.Migrations,
	"orders":        orders.Migrations,
	"notifications": notifications.Migrations,
}

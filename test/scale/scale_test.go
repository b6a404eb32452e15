//go:build scale

// Package scale measures what Blueprint costs as its data grows. It loads
// the services' databases with N orders through the stores' own Seed
// functions, then times what users and the relay do on them — list the
// orders and page deep into them, read one, place one, list the
// notifications, claim and mark outbox rows — with the start-up, the
// migrations and the disk used, and the same on databases that hold a
// handful of orders. It prints the figures and asserts none of them. It
// asserts what does not depend on the machine: that the databases hold what
// was asked for, and that no statement of those operations reads the whole
// of a table that grows with the orders — the database's own plan for each
// statement, as the code ran it, uses an index.
//
// SQLite always, PostgreSQL too when BLUEPRINT_TEST_POSTGRES_URL is set.
// BLUEPRINT_SCALE_ORDERS is N, 100,000 unless set:
//
//	BLUEPRINT_SCALE_ORDERS=10000000 BLUEPRINT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//	  go test -tags=scale -v -timeout 0 ./test/scale/
package scale

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// envOrders names the variable that sets N.
const envOrders = "BLUEPRINT_SCALE_ORDERS"

// The operations measured, in the order the table lists them.
const (
	opFirstPage     = "GET /orders, first page"
	opDeepPage      = "GET /orders, cursor half way"
	opGet           = "GET /orders/{id}"
	opCreate        = "POST /orders"
	opNotifications = "GET /notifications"
	opClaim         = "outbox claim, 100 rows (store)"
	opMarkSent      = "outbox mark sent, 100 rows (store)"
	opStartup       = "start-up (startup_ms)"
	opMigrate       = "open 3 databases, migrations up to date"
)

var operations = []string{opFirstPage, opDeepPage, opGet, opCreate, opNotifications, opClaim, opMarkSent, opStartup, opMigrate}

// figures are what one measurement found.
type figures struct {
	orders int
	took   map[string]time.Duration // by operation
	disk   int64                    // bytes the databases take
}

func TestScale(t *testing.T) {
	n := ordersWanted(t)
	uuid.EnableRandPool() // millions of ids: a read of the system's randomness per batch of them, not per id
	bin := harness.Build(t, t.TempDir())
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			var empty, full figures
			t.Run("empty", func(t *testing.T) { empty = measure(t, bin, b, emptyLoad) })
			t.Run(fmt.Sprintf("%d orders", n), func(t *testing.T) { full = measure(t, bin, b, fullLoad(n)) })
			if empty.took != nil && full.took != nil {
				t.Logf("%s, %d orders (median of each operation; the API's through the running binary):\n%s", b.name, n, table(empty, full))
			}
		})
	}
}

// ordersWanted is N: enough orders that the heavy user has more than two
// pages of them.
func ordersWanted(t *testing.T) int {
	s := os.Getenv(envOrders)
	if s == "" {
		return 100_000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10_000 {
		t.Fatalf("%s=%q: want a number of orders of at least 10000", envOrders, s)
	}
	return n
}

// measure loads fresh databases with l, checks what they hold and the plans
// of the measured statements, and times the operations.
func measure(t *testing.T, bin string, b backend, l load) figures {
	urls := b.databases(t)
	s := seed(t, urls, l)
	f := figures{orders: l.orders, took: map[string]time.Duration{}, disk: b.disk(t, urls)}
	t.Logf("seeded %d orders (%d users, %d outbox rows, %d idempotency keys) in %s: %.0f orders/s; %s on disk",
		l.orders, s.want.users, s.want.outbox, s.want.keys, s.took.Round(time.Millisecond),
		float64(l.orders)/s.took.Seconds(), bytes(f.disk))
	inProcess(t, urls, s, l.big, &f)
	throughAPI(t, bin, urls, s, &f)
	return f
}

// backend is a kind of database the system runs on.
type backend struct {
	name string
	// databases makes an empty database for each service, dropped when the
	// test ends, and returns their URLs by service.
	databases func(t *testing.T) map[string]string
	// disk is the space the databases take, in bytes.
	disk func(t *testing.T, urls map[string]string) int64
}

var services = []string{"users", "orders", "notifications"}

func backends(t *testing.T) []backend {
	sqlite := backend{
		name: "sqlite",
		databases: func(t *testing.T) map[string]string {
			dir := t.TempDir()
			urls := map[string]string{}
			for _, s := range services {
				urls[s] = "sqlite:" + filepath.Join(dir, s+".db")
			}
			return urls
		},
		disk: func(t *testing.T, urls map[string]string) int64 {
			return dirSize(t, filepath.Dir(strings.TrimPrefix(urls["orders"], "sqlite:")))
		},
	}
	if os.Getenv(sqldbtest.EnvPostgresURL) == "" {
		t.Logf("PostgreSQL skipped: %s is not set", sqldbtest.EnvPostgresURL)
		return []backend{sqlite}
	}
	postgres := backend{
		name: "postgres",
		databases: func(t *testing.T) map[string]string {
			urls := map[string]string{}
			for _, s := range services {
				urls[s] = sqldbtest.CreatePostgresDatabase(t)
			}
			return urls
		},
		disk: func(t *testing.T, urls map[string]string) int64 {
			var total int64
			for _, s := range services {
				var n int64
				// Every table with its indexes and TOAST: the databases'
				// own catalogs are the same size whatever they hold.
				err := harness.OpenDB(t, urls[s]).QueryRow(`SELECT coalesce(sum(pg_total_relation_size(oid)), 0)
					FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace`).Scan(&n)
				if err != nil {
					t.Fatalf("%s: size: %v", s, err)
				}
				total += n
			}
			return total
		},
	}
	return []backend{sqlite, postgres}
}

// dirSize adds up the sizes of the files in dir: each SQLite database with
// its write-ahead log.
func dirSize(t *testing.T, dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += info.Size()
	}
	return total
}

// table lays the two measurements side by side.
func table(empty, full figures) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "operation\tempty (%d orders)\t%d orders\tratio\t\n", empty.orders, full.orders)
	for _, op := range operations {
		e, f := empty.took[op], full.took[op]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t\n", op, duration(e), duration(f), ratio(float64(f), float64(e)))
	}
	fmt.Fprintf(w, "disk, databases\t%s\t%s\t%s\t\n", bytes(empty.disk), bytes(full.disk), ratio(float64(full.disk), float64(empty.disk)))
	fmt.Fprintf(w, "disk per order\t\t%s\t\t\n", bytes(full.disk/int64(full.orders)))
	w.Flush()
	return b.String()
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// duration prints d to three significant digits or so.
func duration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}

func bytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

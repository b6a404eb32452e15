//go:build security

// Package security is Blueprint's attack suite: it runs the system as OS
// processes — all in one process on SQLite and embedded NATS, and one
// process per service on PostgreSQL and a NATS that admits only its users —
// and attacks it through the public API as a client on the internet would:
// forged and malformed tokens, other users' data, bytes a database cannot
// store, oversized and slow bodies, floods of registrations and logins,
// guessing and lockout, malformed events. Every case asserts the answer
// (never a 5xx), that it came fast, that other users did not notice where
// that is the point, and, at the end, that no secret reached a log.
//
//	go test -tags=security -v ./test/security/
//
// It prints a table of every case: what was expected, what was observed,
// how long the refusal took. SECURITY_REPORT names a file to write it to.
// The PostgreSQL mode runs when BLUEPRINT_TEST_POSTGRES_URL is set.
package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

var bin string

func TestMain(m *testing.M) {
	code := harness.Main(m, &bin)
	if path := os.Getenv("SECURITY_REPORT"); path != "" && code == 0 {
		if err := os.WriteFile(path, []byte(results.markdown()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// system is Blueprint under attack, in one of its two shapes.
type system struct {
	mode    string
	class   string // the class of attacks running now, for the report
	gateway string // the public API
	dir     string // where the processes log
	natsURL string
	keys    string // the keys' directory: an insider's view, for forging with real keys
}

// TestAttacks runs every attack against each shape of the system.
func TestAttacks(t *testing.T) {
	modes := []struct {
		name string
		cfg  func(t *testing.T) localcluster.Config
	}{
		{"embedded", func(*testing.T) localcluster.Config { return localcluster.Config{AllInOne: true} }},
		{"postgres", func(t *testing.T) localcluster.Config {
			url := os.Getenv(sqldbtest.EnvPostgresURL)
			if url == "" {
				t.Skipf("set %s to attack the PostgreSQL shape too: a NUL byte that SQLite stores, PostgreSQL refuses", sqldbtest.EnvPostgresURL)
			}
			return localcluster.Config{PostgresURL: url, DatabasePrefix: fmt.Sprintf("security_%d", time.Now().UnixNano()%1e6)}
		}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := m.cfg(t)
			cfg.Binary, cfg.Dir = bin, t.TempDir()
			// Every line a process can write is searched for secrets, the
			// services' own access lines (debug) included.
			cfg.Env = []string{"LOG_LEVEL=debug"}
			c := harness.StartCluster(t, cfg)
			s := &system{mode: m.name, gateway: harness.Gateways(c)[0], dir: cfg.Dir, natsURL: c.NATSURL,
				keys: filepath.Join(cfg.Dir, "keys")}
			for _, class := range attackClasses {
				s.class = class.name
				t.Run(class.name, func(t *testing.T) { class.run(t, s) })
			}
			s.class = "secrets"
			t.Run("logs hold no secret", func(t *testing.T) { logsHoldNoSecret(t, s) })
		})
	}
}

// attackClasses are the suite's groups of cases, run in this order on one
// system; each case records its outcome in results.
var attackClasses []struct {
	name string
	run  func(t *testing.T, s *system)
}

func addClass(name string, run func(t *testing.T, s *system)) bool {
	attackClasses = append(attackClasses, struct {
		name string
		run  func(t *testing.T, s *system)
	}{name, run})
	return true
}

// outcome is one case's line in the report.
type outcome struct {
	mode, class, name, expected, observed string
	took                                  time.Duration
}

type report struct {
	mu   sync.Mutex
	rows []outcome
}

var results report

func (r *report) add(o outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, o)
}

func (r *report) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("| mode | class | case | expected | observed | time |\n|---|---|---|---|---|---|\n")
	for _, o := range r.rows {
		took := "–"
		if o.took > 0 {
			took = o.took.Round(100 * time.Microsecond).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", o.mode, o.class, o.name, o.expected, o.observed, took)
	}
	return b.String()
}

// record logs a case's outcome and adds it to the report.
func record(t *testing.T, s *system, name, expected, observed string, took time.Duration) {
	t.Helper()
	results.add(outcome{mode: s.mode, class: s.class, name: name, expected: expected, observed: observed, took: took})
	t.Logf("%s: expected %s, observed %s in %v", name, expected, observed, took)
}

// refusedFast is the bound on how long a refusal may take: it proves the
// request was turned away, not left hanging or queued behind real work.
const refusedFast = 2 * time.Second

//go:build scale

package scale

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// A statement reads too much when its plan reads the whole of a table that
// grows with the orders, or the whole of one of its indexes — unless the
// index is partial, holding only the rows its WHERE names (outbox_pending
// holds the events waiting for the relay) — or when it sorts the rows it
// read from one, which means reading every row that matches before
// returning the first: all of a heavy user's orders for a page of twenty.

// bigTables grow with the orders.
var bigTables = []string{"orders", "outbox", "idempotency_keys", "notifications"}

// recorder keeps the statements the databases run while an operation runs.
type recorder struct {
	mu  sync.Mutex
	op  string // the operation running; "" when none is
	got []statement
}

// statement is one statement a service's database ran for an operation.
type statement struct {
	op, service, query string
	args               []any
}

// hook is the statement hook of service's database.
func (r *recorder) hook(service string) func(query string, args []any) {
	return func(query string, args []any) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.op != "" {
			r.got = append(r.got, statement{op: r.op, service: service, query: query, args: args})
		}
	}
}

// run runs fn as op, recording its statements, and returns how long it
// took; an error fails the test.
func (r *recorder) run(t *testing.T, op string, fn func() error) time.Duration {
	t.Helper()
	r.mu.Lock()
	r.op = op
	r.mu.Unlock()
	start := time.Now()
	err := fn()
	took := time.Since(start)
	r.mu.Lock()
	r.op = ""
	r.mu.Unlock()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	return took
}

// plan is what the database said it would do for one statement.
type plan struct {
	op, query string
	plan      string
	tooMuch   []string // the steps that read too much
}

// plans asks the databases (at urls) for the plans of each statement
// recorded that reads or writes rows, once per operation and text, with
// the values the statement was run with.
func (r *recorder) plans(t *testing.T, dbs map[string]*sqldb.DB, urls map[string]string) []plan {
	ctx := t.Context()
	partial := map[string]bool{}
	for _, s := range services {
		for _, name := range partialIndexes(t, dbs[s]) {
			partial[name] = true
		}
	}
	plain := map[string]*sql.DB{} // a pool of plain connections to each database, for generic plans
	var out []plan
	seen := map[string]bool{}
	for _, st := range r.got {
		verb, _, _ := strings.Cut(strings.TrimSpace(st.query), " ")
		if !slices.Contains([]string{"SELECT", "INSERT", "UPDATE", "DELETE"}, strings.ToUpper(verb)) || seen[st.op+st.query] {
			continue // transactions' own statements, savepoints, or a repeat
		}
		seen[st.op+st.query] = true
		p := plan{op: st.op, query: st.query}
		var err error
		if dbs[st.service].Dialect == sqldb.Postgres {
			if plain[st.service] == nil {
				plain[st.service] = harness.OpenDB(t, urls[st.service])
			}
			p.plan, p.tooMuch, err = explainPostgres(ctx, dbs[st.service], plain[st.service], st, partial)
		} else {
			p.plan, p.tooMuch, err = explainSQLite(ctx, dbs[st.service], st, partial)
		}
		if err != nil {
			t.Fatalf("explain %s: %v", st.query, err)
		}
		out = append(out, p)
	}
	return out
}

// partialIndexes names the database's indexes that hold only the rows
// their WHERE names.
func partialIndexes(t *testing.T, db *sqldb.DB) []string {
	q := `SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'`
	if db.Dialect == sqldb.Postgres {
		q = `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indpred IS NOT NULL`
	}
	rows, err := db.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatalf("partial indexes: %v", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// explainSQLite reads EXPLAIN QUERY PLAN, whose plan serves every value: a
// step "SCAN t" reads every row of t, "SCAN t USING [COVERING] INDEX i"
// every entry of i, "SEARCH" seeks; "USE TEMP B-TREE FOR ORDER BY" sorts.
func explainSQLite(ctx context.Context, db *sqldb.DB, st statement, partial map[string]bool) (string, []string, error) {
	rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+st.query, st.args...)
	if err != nil {
		return "", nil, err
	}
	defer rows.Close()
	var steps, tooMuch []string
	var sorts, big bool
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			return "", nil, err
		}
		steps = append(steps, detail)
		words := strings.Fields(detail)
		sorts = sorts || strings.HasPrefix(detail, "USE TEMP B-TREE FOR ORDER BY")
		if len(words) < 2 || !slices.Contains(bigTables, words[1]) {
			continue
		}
		big = true
		if i := slices.Index(words, "INDEX"); words[0] == "SCAN" && (i < 0 || i+1 >= len(words) || !partial[words[i+1]]) {
			tooMuch = append(tooMuch, detail)
		}
	}
	if sorts && big {
		tooMuch = append(tooMuch, "USE TEMP B-TREE FOR ORDER BY")
	}
	if len(steps) == 0 {
		steps = []string{"none: no rows read"} // an INSERT's
	}
	return strings.Join(steps, "; "), tooMuch, rows.Err()
}

// explainPostgres reads EXPLAIN (FORMAT JSON) twice: the custom plan,
// made for the values the statement ran with, as PostgreSQL makes for the
// first runs of a prepared statement and for every run of one that
// sqldb.QueryCustomPlan runs; and, for the others, the generic plan, made
// for no values in particular, which PostgreSQL usually settles on after
// five runs. Both must read no more than they need. generic is a pool of
// plain connections to the same database.
func explainPostgres(ctx context.Context, db *sqldb.DB, generic *sql.DB, st statement, partial map[string]bool) (string, []string, error) {
	perRun, values := pgxOptions(st.args)
	var js string
	if err := db.QueryRowContext(ctx, "EXPLAIN (FORMAT JSON) "+st.query, values...).Scan(&js); err != nil {
		return "", nil, err
	}
	steps, tooMuch, err := readPostgresPlan(js, partial)
	if err != nil {
		return "", nil, err
	}
	if perRun {
		return "custom: " + steps, tooMuch, nil
	}
	if js, err = genericPlan(ctx, generic, st.query, len(values)); err != nil {
		return "", nil, err
	}
	gsteps, gTooMuch, err := readPostgresPlan(js, partial)
	if err != nil {
		return "", nil, err
	}
	for _, s := range gTooMuch {
		tooMuch = append(tooMuch, "generic plan: "+s)
	}
	return "custom: " + steps + "; generic: " + gsteps, tooMuch, nil
}

// pgxOptions splits the arguments pgx was given into its options, which
// come first, and the statement's values. perRun says the statement is
// planned for its values at every run (a QueryExecMode other than the
// default, which keeps a prepared statement and its plans).
func pgxOptions(args []any) (perRun bool, values []any) {
	for ; len(args) > 0; args = args[1:] {
		switch o := args[0].(type) {
		case pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
		case pgx.QueryExecMode:
			perRun = o != pgx.QueryExecModeCacheStatement
		default:
			return perRun, args
		}
	}
	return perRun, args
}

// genericPlan prepares query, which has n parameters, on a connection of
// its own and explains the plan PostgreSQL makes for it when told to plan
// for no values. Prepared by name in SQL, not through the driver: its $n
// are the prepared statement's own.
func genericPlan(ctx context.Context, db *sql.DB, query string, n int) (string, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	nulls := strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
	var js string
	err = conn.Raw(func(driverConn any) error {
		results, err := driverConn.(*stdlib.Conn).Conn().PgConn().Exec(ctx,
			"SET LOCAL plan_cache_mode = force_generic_plan; PREPARE scale_generic AS "+query+
				"; EXPLAIN (FORMAT JSON) EXECUTE scale_generic("+nulls+"); DEALLOCATE scale_generic").ReadAll()
		if err != nil {
			return err
		}
		js = string(results[2].Rows[0][0])
		return nil
	})
	return js, err
}

// pgNode is a node of PostgreSQL's EXPLAIN (FORMAT JSON).
type pgNode struct {
	Type      string   `json:"Node Type"`
	Relation  string   `json:"Relation Name"`
	Index     string   `json:"Index Name"`
	IndexCond string   `json:"Index Cond"`
	Plans     []pgNode `json:"Plans"`
}

// readPostgresPlan lays out a plan's steps and finds those that read too
// much: a Seq Scan; an index scan with no Index Cond, over all of its
// index; a Sort of rows read from a big table.
func readPostgresPlan(js string, partial map[string]bool) (string, []string, error) {
	var out []struct{ Plan pgNode }
	if err := json.Unmarshal([]byte(js), &out); err != nil || len(out) != 1 {
		return "", nil, fmt.Errorf("EXPLAIN output %q: %v", js, err)
	}
	var steps, tooMuch []string
	// walk lays out n and reports whether it reads a big table.
	var walk func(n pgNode) bool
	walk = func(n pgNode) bool {
		step := n.Type
		if n.Index != "" {
			step += " using " + n.Index
		}
		if n.Relation != "" {
			step += " on " + n.Relation
		}
		steps = append(steps, step)
		big := slices.Contains(bigTables, n.Relation)
		if big && (n.Type == "Seq Scan" ||
			(n.Type == "Index Scan" || n.Type == "Index Only Scan") && n.IndexCond == "" && !partial[n.Index]) {
			tooMuch = append(tooMuch, step)
		}
		below := false
		for _, c := range n.Plans {
			below = walk(c) || below
		}
		if n.Type == "Sort" && below {
			tooMuch = append(tooMuch, "Sort")
		}
		return big || below
	}
	walk(out[0].Plan)
	return strings.Join(steps, " > "), tooMuch, nil
}

// short is a statement for the log: on one line, its long lists of
// placeholders cut.
func short(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 200 {
		return q[:200] + "…"
	}
	return q
}

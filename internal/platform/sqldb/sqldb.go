// Package sqldb opens a service's SQL database (SQLite or PostgreSQL), applies its embedded
// migrations and runs transactions. Services write one set of SQL that both
// dialects accept ($1 placeholders, RETURNING, ON CONFLICT); the few
// differences are chosen by Dialect.
//
// SQLite (the embedded default, pure Go) allows one writer at a time, so a
// DB keeps two pools there: one connection for writes, which queues writers
// in Go instead of in SQLite's sleeping busy handler, and several for reads,
// which WAL mode lets run beside the writer. Write transactions that queue
// up while one commits share the next commit (group commit, group.go).
//
// With WithTelemetry the pools are instrumented: database spans inside the
// traces of requests and messages, operation durations, pool usage.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Dialect names a SQL database family.
type Dialect string

// The supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is a service's database.
type DB struct {
	Dialect Dialect
	read    *sql.DB
	write   *sql.DB
	// group commits SQLite's write transactions; nil on PostgreSQL.
	group *groupCommit
	// unregister stops the pool metrics; nil without telemetry.
	unregister func() error
}

// Open opens the database at url and applies the migrations in
// migrations/<dialect>/ of fsys. url is "sqlite:<path>" (or a bare path) for
// SQLite.
func Open(ctx context.Context, url string, migrations fs.FS, opts ...Option) (*DB, error) {
	dialect, target, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var db *DB
	switch dialect {
	case SQLite:
		db, err = openSQLite(ctx, target, o)
	case Postgres:
		db, err = openPostgres(ctx, target, o)
	}
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx, migrations); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// ParseURL tells the dialect of a database URL and returns what its driver
// needs: a file path for SQLite, the URL itself for PostgreSQL.
func ParseURL(raw string) (Dialect, string, error) {
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			return "", "", errors.New("not a valid postgres:// URL")
		}
		return Postgres, raw, nil
	case strings.HasPrefix(raw, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(raw, "sqlite:"), "//")
		if path == "" {
			return "", "", errors.New("sqlite: URL names no file")
		}
		return SQLite, path, nil
	case raw == "" || strings.Contains(raw, "://"):
		return "", "", errors.New("want postgres://… or sqlite:<path>")
	default:
		return SQLite, raw, nil
	}
}

func openSQLite(ctx context.Context, path string, o options) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create database dir: %w", err)
	}
	// SQLite would create the file readable by everyone (0644), and its -wal
	// and -shm files with the file's own mode: made here first, all three
	// are the owner's alone. An empty file is an empty database to SQLite.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	f.Close()
	// WAL lets readers run beside the writer; synchronous(FULL) makes every
	// commit durable before the client hears 201, power loss included;
	// busy_timeout covers the moments the read pool and the write connection
	// meet; foreign keys are off by default in SQLite. cache_size bounds
	// each connection's page cache to 512 KiB instead of SQLite's 2 MiB:
	// fifteen connections in one process (three databases, a writer and
	// four readers each) held 10 MB more resident memory with the default,
	// and a page not cached is read from the kernel's page cache.
	// The path goes into a file: URI, where ?, # and % mean something.
	uriPath := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	dsn := "file:" + uriPath + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)&_pragma=cache_size(-512)"
	system := semconv.DBSystemNameSQLite
	writes, err := sqliteConnector(dsn+"&_txlock=immediate", o.hook)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	reads, err := sqliteConnector(dsn+"&_pragma=query_only(ON)", o.hook)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	write := o.openConnector(writes, system)
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	read := o.openConnector(reads, system)
	read.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	db := &DB{Dialect: SQLite, read: read, write: write}
	var sizes metric.Int64Histogram
	if o.instrumented() {
		if err := db.registerPoolMetrics(o.meter, map[string]*sql.DB{"write": write, "read": read}, system); err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlite pool metrics: %w", err)
		}
		if sizes, err = groupSizes(o.meter); err != nil {
			db.Close()
			return nil, err
		}
	}
	db.group = startGroupCommit(write, sizes)
	// The first write connection creates the file and switches it to WAL.
	if err := write.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

func (db *DB) migrate(ctx context.Context, migrations fs.FS) error {
	dir, err := fs.Sub(migrations, path.Join("migrations", string(db.Dialect)))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	gooseDialect, opts := goose.DialectSQLite3, []goose.ProviderOption(nil)
	if db.Dialect == Postgres {
		// Replicas start together: an advisory lock makes one of them apply
		// the migrations while the others wait and then find nothing to do.
		// Waiting replicas look again every second, for up to 5 minutes.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return fmt.Errorf("migrations lock: %w", err)
		}
		gooseDialect, opts = goose.DialectPostgres, append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(gooseDialect, db.write, dir, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

// Close closes both pools.
func (db *DB) Close() error {
	var errs []error
	if db.group != nil {
		db.group.close()
	}
	if db.unregister != nil {
		errs = append(errs, db.unregister())
	}
	return errors.Join(append(errs, db.read.Close(), db.write.Close())...)
}

// Ping checks that the database answers on both pools.
func (db *DB) Ping(ctx context.Context) error {
	return errors.Join(db.read.PingContext(ctx), db.write.PingContext(ctx))
}

// QueryContext runs a read query.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.read.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a read query that returns at most one row.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, query, args...)
}

// QueryCustomPlan runs a read query whose best plan depends on its
// arguments, such as "user $1's orders, newest first". PostgreSQL plans a
// prepared statement for the values of its first five runs, then usually
// settles on one generic plan for any values, made for the average row of
// the statistics: there, for the average user's handful of orders, a plan
// that reads them all and sorts them is as good as any, and it then reads
// and sorts every one of a user who has a hundred thousand. This query is
// planned for its values at every run instead (a custom plan, in
// PostgreSQL's words; pgx keeps the statement's description, not its
// plan), for a few tens of microseconds of planning. SQLite plans these
// queries one way for every value.
func (db *DB) QueryCustomPlan(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if db.Dialect == Postgres {
		args = append([]any{pgx.QueryExecModeCacheDescribe}, args...)
	}
	return db.read.QueryContext(ctx, query, args...)
}

// ExecContext runs one writing statement in a transaction of its own. On
// SQLite that transaction joins the group commit, like InTx's.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if db.group == nil {
		return db.write.ExecContext(ctx, query, args...)
	}
	var res sql.Result
	err := db.group.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, query, args...)
		return err
	})
	return res, err
}

// Execer runs a writing statement: a *DB, in a transaction of its own, or
// the *sql.Tx of InTx, in that transaction. A store function that writes a
// row takes one, so that a caller may write many rows in one transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// InTx runs fn in a write transaction: committed when fn returns nil, rolled
// back otherwise. fn must use tx and the ctx it is given for every
// statement: on SQLite the write pool has one connection, so a query on db
// inside fn would wait forever, and fn's work may share its transaction
// with other callers' (group commit), where ctx cannot be cancelled.
func (db *DB) InTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if db.group != nil {
		return db.group.inTx(ctx, fn)
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback() // the error from fn is the one that matters
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Pool limits for PostgreSQL. A service replica holds at most
// defaultMaxConns connections unless its URL says otherwise with
// pool_max_conns (the pgxpool convention): every replica of every service
// shares the server's max_connections (100 by default), so
// replicas × pool_max_conns must stay well below it.
const (
	defaultMaxConns = 10
	connMaxLifetime = 30 * time.Minute
	connMaxIdleTime = 5 * time.Minute
)

// Server-side limits added to the connection unless the URL sets them
// (postgres://…?statement_timeout=10s). A statement or an idle transaction
// that runs away is cut off by PostgreSQL itself, whatever the client does.
var defaultRuntimeParams = map[string]string{
	"statement_timeout":                   "5s",
	"idle_in_transaction_session_timeout": "30s",
	"lock_timeout":                        "5s",
}

func openPostgres(ctx context.Context, rawURL string, o options) (*DB, error) {
	// pool_max_conns is ours, not PostgreSQL's: take it out of the URL.
	maxConns := defaultMaxConns
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("postgres URL: %w", err)
	}
	q := u.Query()
	if v := q.Get("pool_max_conns"); v != "" {
		if maxConns, err = strconv.Atoi(v); err != nil || maxConns < 1 {
			return nil, fmt.Errorf("postgres URL: pool_max_conns=%q is not a positive number", v)
		}
		q.Del("pool_max_conns")
		u.RawQuery = q.Encode()
	}
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("postgres URL: %w", err)
	}
	for k, v := range defaultRuntimeParams {
		if _, set := cfg.RuntimeParams[k]; !set {
			cfg.RuntimeParams[k] = v
		}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if o.hook != nil {
		cfg.Tracer = statementTracer(o.hook)
	}
	attrs := []attribute.KeyValue{
		semconv.DBSystemNamePostgreSQL,
		semconv.ServerAddress(cfg.Host), semconv.ServerPort(int(cfg.Port)), semconv.DBNamespace(cfg.Database),
	}
	pool := o.openConnector(stdlib.GetConnector(*cfg), attrs...)
	pool.SetMaxOpenConns(maxConns)
	pool.SetMaxIdleConns(maxConns)
	pool.SetConnMaxLifetime(connMaxLifetime)
	pool.SetConnMaxIdleTime(connMaxIdleTime)
	// PostgreSQL runs readers and writers side by side: one pool serves both.
	db := &DB{Dialect: Postgres, read: pool, write: pool}
	if o.instrumented() {
		if err := db.registerPoolMetrics(o.meter, map[string]*sql.DB{"read-write": pool}, attrs...); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres pool metrics: %w", err)
		}
	}
	if err := pool.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to postgres %s@%s/%s: %w", cfg.User, cfg.Host, cfg.Database, err)
	}
	return db, nil
}

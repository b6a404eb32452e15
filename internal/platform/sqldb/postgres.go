package sqldb

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Pool limits for PostgreSQL. A service replica holds at most maxConns
// connections: with 3 orders replicas that is 60 of PostgreSQL's default
// 100, leaving room for the other services and for operators.
const (
	maxConns        = 20
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

func openPostgres(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgx.ParseConfig(url)
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
	pool := stdlib.OpenDB(*cfg)
	pool.SetMaxOpenConns(maxConns)
	pool.SetMaxIdleConns(maxConns)
	pool.SetConnMaxLifetime(connMaxLifetime)
	pool.SetConnMaxIdleTime(connMaxIdleTime)
	if err := pool.PingContext(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres %s@%s/%s: %w", cfg.User, cfg.Host, cfg.Database, err)
	}
	// PostgreSQL runs readers and writers side by side: one pool serves both.
	return &DB{Dialect: Postgres, read: pool, write: pool}, nil
}

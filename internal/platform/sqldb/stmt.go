package sqldb

import (
	"context"
	"database/sql/driver"

	"modernc.org/sqlite"
)

// maxCachedStatements bounds a connection's statement cache. Blueprint's
// queries are constants and a few shapes of list query, far fewer than
// this; past it, statements are prepared for each use as before.
const maxCachedStatements = 256

// sqliteConnector opens SQLite connections that keep their prepared
// statements. SQLite spends about as long preparing a primary-key SELECT as
// running it, and its driver prepares every statement run on a connection
// anew. (PostgreSQL needs none of this: pgx caches the statements of each
// connection itself.) hook, when not nil, is given every statement run
// (WithStatementHook).
func sqliteConnector(dsn string, hook func(query string, args []any)) (driver.Connector, error) {
	base, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return cachingConnector{base, hook}, nil
}

type cachingConnector struct {
	driver.Connector
	hook func(query string, args []any)
}

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return newCachingConn(conn, c.hook), nil
}

// sqliteConn is what every connection of the SQLite driver implements, and
// so what a wrapper must forward (sqlite.NewConnector says which).
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// cachingConn runs statements through prepared statements it keeps by
// their text. database/sql uses a connection from one goroutine at a time,
// so the cache needs no lock; a statement whose rows are still being read
// is busy, and the same text run meanwhile is prepared apart.
type cachingConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
	hook  func(query string, args []any) // nil: none
}

type cachedStmt struct {
	stmt preparedStmt
	busy bool
}

// preparedStmt is what the SQLite driver's statements implement.
type preparedStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

func newCachingConn(conn driver.Conn, hook func(query string, args []any)) driver.Conn {
	c, ok := conn.(sqliteConn)
	if !ok {
		return conn // not the driver this was written for: no cache
	}
	return &cachingConn{sqliteConn: c, stmts: map[string]*cachedStmt{}, hook: hook}
}

// Unwrap lets the SQLite driver's own functions (sqlite.Limit) reach the
// connection.
func (c *cachingConn) Unwrap() driver.Conn { return c.sqliteConn }

// ExecContext implements driver.ExecerContext.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.observe(query, args)
	s, err := c.statement(ctx, query)
	if err != nil || s == nil {
		if err != nil {
			return nil, err
		}
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return s.stmt.ExecContext(ctx, args)
}

// QueryContext implements driver.QueryerContext.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.observe(query, args)
	s, err := c.statement(ctx, query)
	if err != nil || s == nil {
		if err != nil {
			return nil, err
		}
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := s.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	s.busy = true
	return &releasingRows{Rows: rows, s: s}, nil
}

// observe gives a statement about to run to the hook, if there is one.
func (c *cachingConn) observe(query string, args []driver.NamedValue) {
	if c.hook == nil {
		return
	}
	values := make([]any, len(args))
	for i, a := range args {
		values[i] = a.Value
	}
	c.hook(query, values)
}

// statement is the cached statement of query, prepared the first time;
// nil when it is busy or the cache is full.
func (c *cachingConn) statement(ctx context.Context, query string) (*cachedStmt, error) {
	if s, ok := c.stmts[query]; ok {
		if s.busy {
			return nil, nil
		}
		return s, nil
	}
	if len(c.stmts) >= maxCachedStatements {
		return nil, nil
	}
	ds, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	st, ok := ds.(preparedStmt)
	if !ok {
		_ = ds.Close()
		return nil, nil
	}
	s := &cachedStmt{stmt: st}
	c.stmts[query] = s
	return s, nil
}

// Close closes the cached statements, then the connection.
func (c *cachingConn) Close() error {
	for q, s := range c.stmts {
		_ = s.stmt.Close() // the connection's close reports what matters
		delete(c.stmts, q)
	}
	return c.sqliteConn.Close()
}

// releasingRows frees its statement for the next use when closed. (Rows
// read by database/sql are always closed, by rows.Close or at the end of
// rows.Next.)
type releasingRows struct {
	driver.Rows
	s *cachedStmt
}

func (r *releasingRows) Close() error {
	r.s.busy = false
	return r.Rows.Close()
}

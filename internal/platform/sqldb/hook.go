package sqldb

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// WithStatementHook has fn called with the text and arguments of every
// statement the database runs, just before it runs, in the goroutine that
// runs it. The scale measurement (test/scale) records the statements of a
// store's operation this way, then asks the database for the plan of each:
// the very SQL the store ran, with the values it bound. Beside the stores'
// statements, fn sees the savepoints of SQLite's group commit and
// PostgreSQL's BEGIN and COMMIT. On PostgreSQL the arguments are those pgx
// was given: its options for the query come before the values (the result
// formats database/sql asks for; the pgx.QueryExecMode of QueryCustomPlan).
func WithStatementHook(fn func(query string, args []any)) Option {
	return func(o *options) { o.hook = fn }
}

// statementTracer gives each statement pgx runs to a hook.
type statementTracer func(query string, args []any)

func (fn statementTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	fn(data.SQL, data.Args)
	return ctx
}

func (statementTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

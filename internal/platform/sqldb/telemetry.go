package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"

	"github.com/XSAM/otelsql"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/dbconv"
	"go.opentelemetry.io/otel/trace"
)

// Option changes how Open opens a database.
type Option func(*options)

type options struct {
	tracer trace.TracerProvider
	meter  metric.MeterProvider
	hook   func(query string, args []any) // nil: none (hook.go)
}

// WithTelemetry instruments the database (github.com/XSAM/otelsql): a client
// span per statement, transaction begin, commit and rollback, named like
// "INSERT orders" and carrying the statement text with its $n placeholders
// (never the values bound to them); the db.client.operation.duration
// histogram; and the usage of each connection pool, read at every
// collection.
//
// Spans are made only for work that is already part of a trace: the
// statements of a request or a message. The relay's polling, readiness
// checks, migrations and metric callbacks run outside any trace and would
// otherwise start a new trace for every statement, burying the ones that
// matter.
func WithTelemetry(tracer trace.TracerProvider, meter metric.MeterProvider) Option {
	return func(o *options) { o.tracer, o.meter = tracer, meter }
}

func (o options) instrumented() bool { return o.tracer != nil && o.meter != nil }

// otelsqlOptions are the instrumentation settings of one pool.
func (o options) otelsqlOptions(attrs ...attribute.KeyValue) []otelsql.Option {
	return []otelsql.Option{
		otelsql.WithTracerProvider(o.tracer),
		otelsql.WithMeterProvider(o.meter),
		otelsql.WithAttributes(attrs...),
		otelsql.WithSpanNameFormatter(func(_ context.Context, method otelsql.Method, query string) string {
			if s := summarize(method, query); s.operation != "" {
				return s.name()
			}
			return string(method)
		}),
		otelsql.WithAttributesGetter(func(_ context.Context, method otelsql.Method, query string, _ []driver.NamedValue) []attribute.KeyValue {
			return summarize(method, query).spanAttrs()
		}),
		otelsql.WithInstrumentAttributesGetter(func(_ context.Context, method otelsql.Method, query string, _ []driver.NamedValue) []attribute.KeyValue {
			if s := summarize(method, query); s.operation != "" {
				return []attribute.KeyValue{semconv.DBQuerySummary(s.name())}
			}
			return nil
		}),
		otelsql.WithSpanOptions(otelsql.SpanOptions{
			DisableErrSkip:       true,
			OmitConnResetSession: true,
			OmitConnPrepare:      true,
			OmitRows:             true,
			OmitConnectorConnect: true,
			SpanFilter: func(ctx context.Context, _ otelsql.Method, _ string, _ []driver.NamedValue) bool {
				return trace.SpanContextFromContext(ctx).IsValid()
			},
		}),
	}
}

// openConnector opens a pool over c, instrumented when o says so.
func (o options) openConnector(c driver.Connector, attrs ...attribute.KeyValue) *sql.DB {
	if !o.instrumented() {
		return sql.OpenDB(c)
	}
	return otelsql.OpenDB(c, o.otelsqlOptions(attrs...)...)
}

// registerPoolMetrics reports the pools' connections at each collection, as
// the semantic conventions name them, and the time callers waited for one.
// Waits are what a pool too small for its load shows first.
func (db *DB) registerPoolMetrics(meter metric.MeterProvider, pools map[string]*sql.DB, attrs ...attribute.KeyValue) error {
	m := meter.Meter("github.com/ds-blueprint/blueprint/internal/platform/sqldb")
	count, err := dbconv.NewClientConnectionCountObservable(m)
	if err != nil {
		return err
	}
	maxOpen, err := dbconv.NewClientConnectionMaxObservable(m)
	if err != nil {
		return err
	}
	waits, err := m.Int64ObservableCounter("blueprint.db.client.connection.waits",
		metric.WithDescription("Times a caller waited for a free connection of the pool."),
		metric.WithUnit("{wait}"))
	if err != nil {
		return err
	}
	waited, err := m.Float64ObservableCounter("blueprint.db.client.connection.wait_time",
		metric.WithDescription("Total time callers waited for a free connection of the pool."),
		metric.WithUnit("s"))
	if err != nil {
		return err
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for name, pool := range pools {
			s := pool.Stats()
			base := append(attrs[:len(attrs):len(attrs)], count.AttrClientConnectionPoolName(name))
			with := func(extra ...attribute.KeyValue) metric.MeasurementOption {
				return metric.WithAttributes(append(base[:len(base):len(base)], extra...)...)
			}
			o.ObserveInt64(count.Inst(), int64(s.InUse), with(count.AttrClientConnectionState(dbconv.ClientConnectionStateUsed)))
			o.ObserveInt64(count.Inst(), int64(s.Idle), with(count.AttrClientConnectionState(dbconv.ClientConnectionStateIdle)))
			o.ObserveInt64(maxOpen.Inst(), int64(s.MaxOpenConnections), with())
			o.ObserveInt64(waits, s.WaitCount, with())
			o.ObserveFloat64(waited, s.WaitDuration.Seconds(), with())
		}
		return nil
	}, count.Inst(), maxOpen.Inst(), waits, waited)
	if err != nil {
		return err
	}
	db.unregister = reg.Unregister
	return nil
}

// statement is what a span and a measurement say about one database call.
type statement struct {
	operation string // SELECT, INSERT, COMMIT…; "" when unknown
	table     string // the first table the statement names; "" when none
}

// summarize names a call the way db.query.summary does: its operation and
// the first table it touches ("INSERT orders", "UPDATE outbox", "COMMIT").
// It reads the statement's first words only; that is enough for the SQL of
// Blueprint's stores and never looks at a bound value.
func summarize(method otelsql.Method, query string) statement {
	switch method {
	case otelsql.MethodConnBeginTx:
		return statement{operation: "BEGIN"}
	case otelsql.MethodTxCommit:
		return statement{operation: "COMMIT"}
	case otelsql.MethodTxRollback:
		return statement{operation: "ROLLBACK"}
	}
	op, rest := nextWord(query)
	if op == "" || !isKeyword(op) {
		return statement{}
	}
	s := statement{operation: strings.ToUpper(op)}
	// The word after the one that introduces the table.
	var before string
	switch s.operation {
	case "SELECT", "DELETE":
		before = "FROM"
	case "INSERT":
		before = "INTO"
	case "UPDATE":
		s.table, _ = nextWord(rest)
		return s
	default:
		return s
	}
	for w := ""; rest != ""; {
		w, rest = nextWord(rest)
		if strings.EqualFold(w, before) {
			s.table, _ = nextWord(rest)
			break
		}
	}
	return s
}

// nextWord returns the first word of s (letters, digits, _ and .) and what
// follows it.
func nextWord(s string) (word, rest string) {
	isWord := func(c byte) bool {
		return c == '_' || c == '.' || 'a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9'
	}
	i := 0
	for i < len(s) && !isWord(s[i]) {
		i++
	}
	j := i
	for j < len(s) && isWord(s[j]) {
		j++
	}
	return s[i:j], s[j:]
}

func isKeyword(w string) bool {
	for i := range len(w) {
		if c := w[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func (s statement) name() string {
	if s.table == "" {
		return s.operation
	}
	return s.operation + " " + s.table
}

func (s statement) spanAttrs() []attribute.KeyValue {
	if s.operation == "" {
		return nil
	}
	attrs := []attribute.KeyValue{semconv.DBOperationName(s.operation), semconv.DBQuerySummary(s.name())}
	if s.table != "" {
		attrs = append(attrs, semconv.DBCollectionName(s.table))
	}
	return attrs
}

package sqldb_test

import (
	"context"
	"database/sql"
	"maps"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// secretMigrations hold a table in the SQL both dialects accept.
var secretMigrations = fstest.MapFS{
	"migrations/sqlite/00001_secrets.sql":   {Data: []byte(secretsTable)},
	"migrations/postgres/00001_secrets.sql": {Data: []byte(secretsTable)},
}

const secretsTable = `-- +goose Up
CREATE TABLE secrets (id TEXT PRIMARY KEY, value TEXT NOT NULL);
-- +goose Down
DROP TABLE secrets;
`

// TestTelemetry: inside a trace every statement and transaction step is a
// client span of its own, named and described by the semantic conventions
// and never holding a bound value; outside a trace there are no spans; the
// operation duration and the pools' connections are measured either way.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		t.Parallel()
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		db := b.Open(t, secretMigrations, sqldb.WithTelemetry(tp, mp))
		ctx := t.Context()

		// Untraced work: the relay's polling, a scrape, a readiness check.
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM secrets`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if got := rec.Ended(); len(got) != 0 {
			t.Fatalf("spans outside a trace = %v, want none", spanNames(got))
		}

		const secret = "s3cr3t-value-never-on-a-span"
		ctx, parent := tp.Tracer("test").Start(ctx, "POST /secrets")
		err := db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO secrets (id, value) VALUES ($1, $2)`, "k1", secret)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if err := db.QueryRowContext(ctx, `SELECT value FROM secrets WHERE id = $1`, "k1").Scan(&got); err != nil {
			t.Fatal(err)
		}
		parent.End()

		wantSystem := map[sqldb.Dialect]string{sqldb.SQLite: "sqlite", sqldb.Postgres: "postgresql"}[db.Dialect]
		want := []struct{ name, operation, collection string }{
			{"BEGIN", "BEGIN", ""},
			{"INSERT secrets", "INSERT", "secrets"},
			{"COMMIT", "COMMIT", ""},
			{"SELECT secrets", "SELECT", "secrets"},
		}
		var spans []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() != "POST /secrets" {
				spans = append(spans, s)
			}
		}
		if names := spanNames(spans); !slices.Equal(names, []string{"BEGIN", "INSERT secrets", "COMMIT", "SELECT secrets"}) {
			t.Fatalf("database spans = %v, want %v", names, want)
		}
		for i, s := range spans {
			w := want[i]
			if s.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("%s parent = %v, want the request span %v", s.Name(), s.Parent().SpanID(), parent.SpanContext().SpanID())
			}
			if s.SpanKind() != trace.SpanKindClient {
				t.Errorf("%s kind = %v, want client", s.Name(), s.SpanKind())
			}
			attrs := attribute.NewSet(s.Attributes()...)
			for key, value := range map[string]string{
				"db.system.name": wantSystem, "db.operation.name": w.operation, "db.collection.name": w.collection,
			} {
				if v, _ := attrs.Value(attribute.Key(key)); v.String() != value {
					t.Errorf("%s %s = %q, want %q", s.Name(), key, v.String(), value)
				}
			}
			for _, kv := range s.Attributes() {
				if strings.Contains(kv.Value.String(), secret) {
					t.Errorf("%s attribute %s = %q holds a bound value", s.Name(), kv.Key, kv.Value.String())
				}
			}
		}
		insertAttrs := attribute.NewSet(spans[1].Attributes()...)
		if text, _ := insertAttrs.Value("db.query.text"); !strings.Contains(text.AsString(), "$2") {
			t.Errorf("INSERT db.query.text = %q, want the statement with its placeholders", text.String())
		}

		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		metrics := map[string]metricdata.Aggregation{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				metrics[m.Name] = m.Data
			}
		}
		if h, ok := metrics["db.client.operation.duration"].(metricdata.Histogram[float64]); !ok || !hasPoint(h.DataPoints, "db.query.summary", "INSERT secrets") {
			t.Errorf("db.client.operation.duration = %+v, want a histogram with a db.query.summary=INSERT secrets point", metrics["db.client.operation.duration"])
		}
		wantPools := map[sqldb.Dialect][]string{sqldb.SQLite: {"read", "write"}, sqldb.Postgres: {"read-write"}}[db.Dialect]
		count, ok := metrics["db.client.connection.count"].(metricdata.Sum[int64])
		if !ok {
			t.Fatalf("db.client.connection.count = %T, want an int64 sum", metrics["db.client.connection.count"])
		}
		for _, pool := range wantPools {
			for _, state := range []string{"used", "idle"} {
				if !hasPoint(count.DataPoints, "db.client.connection.pool.name", pool, "db.client.connection.state", state) {
					t.Errorf("db.client.connection.count has no point for pool %s, state %s: %+v", pool, state, count.DataPoints)
				}
			}
		}
		for _, name := range []string{"db.client.connection.max", "blueprint.db.client.connection.waits", "blueprint.db.client.connection.wait_time"} {
			if _, ok := metrics[name]; !ok {
				t.Errorf("no %s metric; have %v", name, slices.Sorted(maps.Keys(metrics)))
			}
		}

		// Closing the database stops its pool metrics.
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		rm = metricdata.ResourceMetrics{}
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatalf("collect after Close: %v", err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name == "db.client.connection.count" {
					t.Errorf("db.client.connection.count still observed after Close: %+v", m.Data)
				}
			}
		}
	})
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	return names
}

// hasPoint reports whether a data point has every key=value of kv.
func hasPoint[P interface {
	metricdata.DataPoint[int64] | metricdata.HistogramDataPoint[float64]
}](points []P, kv ...string) bool {
	for _, p := range points {
		var set attribute.Set
		switch p := any(p).(type) {
		case metricdata.DataPoint[int64]:
			set = p.Attributes
		case metricdata.HistogramDataPoint[float64]:
			set = p.Attributes
		}
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			if v, ok := set.Value(attribute.Key(kv[i])); !ok || v.String() != kv[i+1] {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// Retention. A sent row answers "was this event published, when, and by
// which relay" while someone may still ask — an operator after an incident,
// a test counting re-sends — and then only costs space: kept for ever, the
// outbox outgrows the orders it describes. The pruner deletes rows sent
// longer ago than the retention window, in small batches and vacuuming
// after them on PostgreSQL (sqldb.Purge), since every outbox row is
// inserted, updated twice and deleted. Rows not yet sent are never deleted.

// pruneEvery is how often the pruner runs: often enough that each round
// deletes a minute of events, not an hour's backlog at once.
const pruneEvery = time.Minute

// PrunerConfig configures a Pruner.
type PrunerConfig struct {
	DB *sqldb.DB
	// Retention is how long a sent row is kept. More than 0.
	Retention time.Duration
	Logger    *slog.Logger
	Meter     metric.MeterProvider
}

// Pruner deletes sent outbox rows past their retention; Run starts it.
type Pruner struct {
	cfg    PrunerConfig
	pruned metric.Int64Counter
	// rows is the table's row count after the last round, for the gauge;
	// -1 until one has counted it.
	rows atomic.Int64
	now  func() time.Time
}

// NewPruner returns a pruner and registers its metrics:
// blueprint.outbox.pruned (rows deleted) and blueprint.outbox.rows (the
// table's rows, sent and pending, after the last round).
func NewPruner(cfg PrunerConfig) (*Pruner, error) {
	if cfg.Retention <= 0 {
		return nil, fmt.Errorf("outbox retention must be more than 0, not %v", cfg.Retention)
	}
	p := &Pruner{cfg: cfg, now: time.Now}
	p.rows.Store(-1)
	m := cfg.Meter.Meter(scope)
	var err error
	if p.pruned, err = m.Int64Counter("blueprint.outbox.pruned",
		metric.WithDescription("Sent outbox rows deleted once older than the retention window."),
		metric.WithUnit("{row}")); err != nil {
		return nil, err
	}
	rows, err := m.Int64ObservableGauge("blueprint.outbox.rows",
		metric.WithDescription("Rows in the outbox table, sent and pending, after the pruner's last round."),
		metric.WithUnit("{row}"))
	if err != nil {
		return nil, err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if n := p.rows.Load(); n >= 0 {
			o.ObserveInt64(rows, n)
		}
		return nil
	}, rows)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Run prunes once at start and then every minute until ctx ends. A failed
// round is logged and tried again at the next.
func (p *Pruner) Run(ctx context.Context) error {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		if _, err := p.Prune(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Logger.WarnContext(ctx, "outbox prune failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Prune deletes every row sent before the retention window, in batches, and
// returns how many. Then it counts the rows left, for the gauge.
func (p *Pruner) Prune(ctx context.Context) (int64, error) {
	cutoff := p.now().Add(-p.cfg.Retention)
	// A row sent before the cutoff was written before it too, so its id, a
	// UUIDv7, sorts below the cutoff's: the scan reads the primary key from
	// its start up to there, not the rows kept after them.
	total, err := p.cfg.DB.Purge(ctx, "outbox", `
		DELETE FROM outbox WHERE id IN (
			SELECT id FROM outbox WHERE id < $1 AND sent_at < $2 ORDER BY id LIMIT $3)`,
		idsBefore(cutoff), sqldb.NewTime(cutoff))
	p.pruned.Add(ctx, total)
	if err != nil {
		return total, err
	}
	var rows int64
	if err := p.cfg.DB.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&rows); err != nil {
		return total, fmt.Errorf("count outbox rows: %w", err)
	}
	p.rows.Store(rows)
	if total > 0 {
		p.cfg.Logger.DebugContext(ctx, "outbox pruned", "rows", total, "left", rows)
	}
	return total, nil
}

// idsBefore is an id below every UUIDv7 made at or after t: its 48-bit
// millisecond timestamp, then zeros (a real id's version nibble is 7).
func idsBefore(t time.Time) string {
	var id uuid.UUID
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (8 * (5 - i)))
	}
	return id.String()
}

package outbox

import (
	"context"
	"database/sql"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// The scale measurement (test/scale) loads databases with millions of
// orders and times the relay's statements on them. The functions below are
// its way in; nothing in the services calls them.

// Seed writes m inside the caller's transaction as a relay leaves it once
// published: Insert, then the relay's mark-sent, at sentAt by the relay
// named sentBy. It exists to build large databases for the scale
// measurement.
func Seed(ctx context.Context, tx *sql.Tx, m Message, sentAt time.Time, sentBy string) error {
	if err := Insert(ctx, tx, m); err != nil {
		return err
	}
	return markSent(ctx, tx, sentBy, []string{m.ID}, sentAt)
}

// Claim is the relay's claim, for the scale measurement: up to limit
// pending rows, leased to owner for the default lease.
func Claim(ctx context.Context, db *sqldb.DB, owner string, limit int) ([]Message, error) {
	msgs, _, err := claim(ctx, db, owner, limit, defaultLease, time.Now())
	return msgs, err
}

// MarkSent is the relay's mark-sent of the rows with ids, for the scale
// measurement.
func MarkSent(ctx context.Context, db *sqldb.DB, owner string, ids []string) error {
	return markSent(ctx, db, owner, ids, time.Now())
}

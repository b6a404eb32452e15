package notifications

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// The SQL below runs unchanged on SQLite and PostgreSQL.

// recorded reports whether the event already produced a notification.
func recorded(ctx context.Context, db *sqldb.DB, eventID string) (bool, error) {
	var one int
	err := db.QueryRowContext(ctx, `SELECT 1 FROM notifications WHERE event_id = $1`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up notification: %w", err)
	}
	return true, nil
}

// record stores n for eventID with ex: the database, or a transaction of
// Seed's. It reports false when the event was already recorded (by a
// replica that raced this one): the unique event id decides.
func record(ctx context.Context, ex sqldb.Execer, eventID string, n Notification) (bool, error) {
	var sent sqldb.NullTime
	if n.SentAt != nil {
		sent = sqldb.NullTime{Time: sqldb.NewTime(*n.SentAt), Valid: true}
	}
	res, err := ex.ExecContext(ctx, `
		INSERT INTO notifications (id, event_id, order_id, user_id, channel, status, created_at, sent_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING`,
		n.ID, eventID, n.OrderID, n.UserID, n.Channel, n.Status, sqldb.NewTime(n.CreatedAt), sent)
	if err != nil {
		return false, fmt.Errorf("record notification: %w", err)
	}
	count, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record notification: %w", err)
	}
	return count == 1, nil
}

const notificationColumns = `id, order_id, user_id, channel, status, created_at, sent_at`

// listNotifications fetches req.Limit+1 rows so the page knows whether more
// follow. It is planned for the user at each run (QueryCustomPlan): one user
// may have many thousands of notifications, far more than the average.
func listNotifications(ctx context.Context, db *sqldb.DB, userID string, req pagination.Request) ([]Notification, error) {
	query, args := req.SQL(`SELECT `+notificationColumns+` FROM notifications WHERE user_id = $1`, []any{userID})
	rows, err := db.QueryCustomPlan(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		var n Notification
		var created sqldb.Time
		var sent sqldb.NullTime
		if err := rows.Scan(&n.ID, &n.OrderID, &n.UserID, &n.Channel, &n.Status, &created, &sent); err != nil {
			return nil, fmt.Errorf("list notifications: %w", err)
		}
		n.CreatedAt = created.Time
		if sent.Valid {
			n.SentAt = &sent.Time.Time
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

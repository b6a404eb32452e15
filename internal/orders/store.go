package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// The SQL below runs unchanged on SQLite and PostgreSQL.

func insertOrder(ctx context.Context, tx *sql.Tx, o Order) error {
	_, err := tx.ExecContext(ctx,
		`INSERT INTO orders (id, user_id, sku, qty, status, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		o.ID, o.UserID, o.SKU, o.Qty, o.Status, sqldb.NewTime(o.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	return nil
}

const orderColumns = `id, user_id, sku, qty, status, created_at`

func scanOrder(row interface{ Scan(...any) error }) (Order, error) {
	var o Order
	var created sqldb.Time
	if err := row.Scan(&o.ID, &o.UserID, &o.SKU, &o.Qty, &o.Status, &created); err != nil {
		return Order{}, err
	}
	o.CreatedAt = created.Time
	return o, nil
}

func orderByID(ctx context.Context, db *sqldb.DB, userID, id string) (Order, error) {
	o, err := scanOrder(db.QueryRowContext(ctx,
		`SELECT `+orderColumns+` FROM orders WHERE id = $1 AND user_id = $2`, id, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, errNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("read order: %w", err)
	}
	return o, nil
}

// listOrders fetches req.Limit+1 rows so the page knows whether more follow.
// It is planned for the user at each run (QueryCustomPlan): one user may
// have many thousands of orders, far more than the average.
func listOrders(ctx context.Context, db *sqldb.DB, userID string, req pagination.Request) ([]Order, error) {
	query, args := req.SQL(`SELECT `+orderColumns+` FROM orders WHERE user_id = $1`, []any{userID})
	rows, err := db.QueryCustomPlan(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("list orders: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// completeKey saves the answer to the key's first request, in the
// transaction that created the order, while h still holds the key. When the
// request outlived its lock and another took the key over, it returns a
// *keyInFlightError, which rolls the order back: the new holder makes it.
func completeKey(ctx context.Context, tx *sql.Tx, h keyHold, o Order) error {
	response, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode idempotent response: %w", err)
	}
	res, err := tx.ExecContext(ctx,
		`UPDATE idempotency_keys SET order_id = $1, response = $2, locked_until = NULL
			WHERE user_id = $3 AND key = $4 AND response IS NULL AND created_at = $5 AND locked_until = $6`,
		o.ID, string(response), h.userID, h.key, sqldb.NewTime(h.created), sqldb.NewTime(h.until))
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	} else if n == 0 {
		// The new holder's lock is not known here: answer with the shortest.
		return &keyInFlightError{left: keyLockMin}
	}
	return nil
}

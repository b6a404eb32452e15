package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

var (
	errKeyReused = apperr.New(apperr.Invalid, "idempotency_key_reused",
		"this Idempotency-Key was used with a different request body")
	errKeyInFlight = &apperr.Error{Kind: apperr.Conflict, Code: "idempotency_key_in_flight",
		Detail: "a request with this Idempotency-Key is still in progress", RetryAfter: 1}
)

// claimKey takes the idempotency key for this request, in its own
// transaction, before any work is done. It returns nil, nil when this
// request now holds the key, or the order an earlier request with the key
// created (a replay), or errKeyReused or errKeyInFlight.
//
// The key is committed as "in flight" before the order is written so that a
// concurrent duplicate sees it and answers 409 at once instead of creating a
// second order.
func (s *Service) claimKey(ctx context.Context, userID, key, hash string) (*Order, error) {
	// Compare at the precision the database keeps, as PurgeExpiredKeys does.
	now := sqldb.NewTime(s.now()).Time
	var prior *Order
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `
			INSERT INTO idempotency_keys (user_id, key, request_hash, locked_until, created_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key) DO NOTHING`,
			userID, key, hash, sqldb.NewTime(now.Add(keyLock)), sqldb.NewTime(now))
		if err != nil {
			return fmt.Errorf("claim idempotency key: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("claim idempotency key: %w", err)
		} else if n == 1 {
			return nil
		}

		lock := ""
		if s.db.Dialect == sqldb.Postgres {
			lock = " FOR UPDATE"
		}
		var storedHash string
		var response sql.NullString
		var lockedUntil sqldb.NullTime
		var created sqldb.Time
		err = tx.QueryRowContext(ctx, `
			SELECT request_hash, response, locked_until, created_at FROM idempotency_keys
			WHERE user_id = $1 AND key = $2`+lock, userID, key).Scan(&storedHash, &response, &lockedUntil, &created)
		if err != nil {
			return fmt.Errorf("read idempotency key: %w", err)
		}
		switch {
		case now.Sub(created.Time) > keyTTL:
			// Expired: the key starts a new life with this request.
			return relock(ctx, tx, userID, key, hash, now, true)
		case storedHash != hash:
			return errKeyReused
		case response.Valid:
			var o Order
			if err := json.Unmarshal([]byte(response.String), &o); err != nil {
				return fmt.Errorf("decode idempotent response: %w", err)
			}
			prior = &o
			return nil
		case lockedUntil.Valid && lockedUntil.Time.After(now):
			return errKeyInFlight
		default:
			// The request that held the key died before finishing; this
			// one takes over.
			return relock(ctx, tx, userID, key, hash, now, false)
		}
	})
	return prior, err
}

// relock gives the key to the current request; reset also restarts its 24 h.
func relock(ctx context.Context, tx *sql.Tx, userID, key, hash string, now time.Time, reset bool) error {
	q := `UPDATE idempotency_keys SET locked_until = $1 WHERE user_id = $2 AND key = $3`
	args := []any{sqldb.NewTime(now.Add(keyLock)), userID, key}
	if reset {
		q = `UPDATE idempotency_keys SET locked_until = $1, request_hash = $4, created_at = $5,
			order_id = NULL, response = NULL WHERE user_id = $2 AND key = $3`
		args = append(args, hash, sqldb.NewTime(now))
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("lock idempotency key: %w", err)
	}
	return nil
}

// releaseKey frees a key whose request failed, so a retry may run at once.
// Best effort: when it fails the lock's expiry frees the key instead.
func releaseKey(ctx context.Context, db *sqldb.DB, userID, key string) {
	_, _ = db.ExecContext(ctx,
		`DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND response IS NULL`, userID, key)
}

// PurgeExpiredKeys deletes keys past their 24 hours and returns how many.
func (s *Service) PurgeExpiredKeys(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx,
		`DELETE FROM idempotency_keys WHERE created_at < $1`, sqldb.NewTime(s.now().Add(-keyTTL)))
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	return res.RowsAffected()
}

package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

var errKeyReused = apperr.New(apperr.Invalid, "idempotency_key_reused",
	"this Idempotency-Key was used with a different request body")

// A request holds its key for as long as it can run: until its deadline,
// which its caller sent in Request-Timeout, plus keyLockMargin. A request
// whose replica died then blocks its key for no longer than the caller
// would have waited for it, not for a fixed time.
const (
	// keyLockMargin covers a commit sent just before the deadline, still
	// landing after it, and a small difference between the replicas' clocks.
	keyLockMargin = 500 * time.Millisecond
	// keyLockMin is the shortest lock: Retry-After's unit, and room for the
	// two commits of a request that arrives with almost no time left.
	keyLockMin = time.Second
	// keyLockMax is the lock of a request with no deadline (or a longer
	// one): each of its two transactions is bounded by the database's
	// statement timeout, so 15 s outlasts it in practice. A request that
	// runs longer loses its key (see keyHold) and commits nothing.
	keyLockMax = 15 * time.Second
)

// keyLockFor is how long a request with ctx may hold its key.
func keyLockFor(ctx context.Context) time.Duration {
	deadline, ok := ctx.Deadline()
	if !ok {
		return keyLockMax
	}
	// time.Until, not the service's clock: the deadline is real time.
	return min(max(time.Until(deadline)+keyLockMargin, keyLockMin), keyLockMax)
}

// keyHold is one request's hold on a key. Each claim writes a lock end
// later than the one before (a lock is taken over only once it has ended),
// or a new created_at (a key renewed after 24 h), so the pair names one
// request's hold and no other: completeKey and releaseKey act only while
// the row still carries it. A request that outlived its lock, whose key
// another request has taken over, can then neither save an answer nor free
// the key from under the new holder.
type keyHold struct {
	userID, key string
	created     time.Time
	until       time.Time
}

// keyInFlightError refuses a request whose key another request holds for
// left more. It is an apperr Conflict with Retry-After in whole seconds;
// the handler also sends left in milliseconds, for callers (the gateway)
// that wait for the lock to end and retry.
type keyInFlightError struct{ left time.Duration }

func (e *keyInFlightError) Error() string { return e.Unwrap().Error() }

// retryAfterMs is the time left in milliseconds, rounded up so that a
// caller who waits it out finds the lock ended.
func (e *keyInFlightError) retryAfterMs() int64 {
	return max(1, int64(math.Ceil(float64(e.left)/float64(time.Millisecond))))
}

func (e *keyInFlightError) Unwrap() error {
	return &apperr.Error{Kind: apperr.Conflict, Code: "idempotency_key_in_flight",
		Detail:     "a request with this Idempotency-Key is still in progress",
		RetryAfter: max(1, int(math.Ceil(e.left.Seconds())))}
}

// claimKey takes the idempotency key for this request, in its own
// transaction, before any work is done. It returns this request's hold on
// the key, or the order an earlier request with the key created (a
// replay), or errKeyReused or a *keyInFlightError.
//
// The key is committed as "in flight" before the order is written so that a
// concurrent duplicate sees it and answers 409 at once instead of creating a
// second order.
func (s *Service) claimKey(ctx context.Context, userID, key, hash string) (*keyHold, *Order, error) {
	// Compare at the precision the database keeps, as PurgeExpiredKeys does.
	now := sqldb.NewTime(s.now()).Time
	until := sqldb.NewTime(now.Add(keyLockFor(ctx))).Time
	hold := &keyHold{userID: userID, key: key, created: now, until: until}
	var prior *Order
	err := s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if inserted, err := insertKey(ctx, tx, *hold, hash); err != nil || inserted {
			return err
		}

		lock := ""
		if s.db.Dialect == sqldb.Postgres {
			lock = " FOR UPDATE"
		}
		var storedHash string
		var response sql.NullString
		var lockedUntil sqldb.NullTime
		var created sqldb.Time
		err := tx.QueryRowContext(ctx, `
			SELECT request_hash, response, locked_until, created_at FROM idempotency_keys
			WHERE user_id = $1 AND key = $2`+lock, userID, key).Scan(&storedHash, &response, &lockedUntil, &created)
		if err != nil {
			return fmt.Errorf("read idempotency key: %w", err)
		}
		switch {
		case now.Sub(created.Time) > keyTTL:
			// Expired: the key starts a new life with this request.
			return relock(ctx, tx, hold, hash, true)
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
			return &keyInFlightError{left: lockedUntil.Time.Sub(now)}
		default:
			// The request that held the key died, or outlived its deadline,
			// before finishing; this one takes over.
			hold.created = created.Time
			return relock(ctx, tx, hold, hash, false)
		}
	})
	if err != nil || prior != nil {
		return nil, prior, err
	}
	return hold, nil, nil
}

// insertKey writes a key not seen before, held by h for the request whose
// body has hash, and reports false, writing nothing, when the key exists.
func insertKey(ctx context.Context, tx *sql.Tx, h keyHold, hash string) (bool, error) {
	res, err := tx.ExecContext(ctx, `
		INSERT INTO idempotency_keys (user_id, key, request_hash, locked_until, created_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key) DO NOTHING`,
		h.userID, h.key, hash, sqldb.NewTime(h.until), sqldb.NewTime(h.created))
	if err != nil {
		return false, fmt.Errorf("claim idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim idempotency key: %w", err)
	}
	return n == 1, nil
}

// relock gives the key to h; reset also restarts its 24 h with h's body.
func relock(ctx context.Context, tx *sql.Tx, h *keyHold, hash string, reset bool) error {
	q := `UPDATE idempotency_keys SET locked_until = $1 WHERE user_id = $2 AND key = $3`
	args := []any{sqldb.NewTime(h.until), h.userID, h.key}
	if reset {
		q = `UPDATE idempotency_keys SET locked_until = $1, request_hash = $4, created_at = $5,
			order_id = NULL, response = NULL WHERE user_id = $2 AND key = $3`
		args = append(args, hash, sqldb.NewTime(h.created))
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("lock idempotency key: %w", err)
	}
	return nil
}

// releaseKey frees a key whose request failed, so a retry may run at once,
// unless another request has taken it over meanwhile. Best effort: when it
// fails the lock's expiry frees the key instead.
func releaseKey(ctx context.Context, db *sqldb.DB, h keyHold) {
	_, _ = db.ExecContext(ctx,
		`DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND response IS NULL
			AND created_at = $3 AND locked_until = $4`,
		h.userID, h.key, sqldb.NewTime(h.created), sqldb.NewTime(h.until))
}

// PurgeExpiredKeys deletes keys past their 24 hours, oldest first and a
// batch at a time (sqldb.Purge), and returns how many.
func (s *Service) PurgeExpiredKeys(ctx context.Context) (int64, error) {
	return s.db.Purge(ctx, "idempotency_keys", `
		DELETE FROM idempotency_keys WHERE (user_id, key) IN (
			SELECT user_id, key FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)`,
		sqldb.NewTime(s.now().Add(-keyTTL)))
}

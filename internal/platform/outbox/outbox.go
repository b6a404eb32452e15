// Package outbox implements the transactional outbox: a service writes the
// events it emits into an outbox table in the same transaction as the state
// change that causes them, and a relay publishes them to JetStream
// afterwards, marking each sent only once JetStream has acknowledged it.
//
// This is what makes "201 Created" a promise: if the row committed, so did
// its event, and the relay will publish it however long NATS is away. The
// original system published fire-and-forget after the write and lost every
// event of a NATS outage.
//
// Delivery is at least once. A publish that JetStream did not acknowledge
// (refused, timed out, or made by a relay that died before marking it) leaves
// the row pending, and it is sent again with the same Nats-Msg-Id: by the
// same relay at its next round, or by any relay once the dead one's lease
// has ended. JetStream drops such a copy within its duplicates window;
// consumers are idempotent by event id for anything older.
//
// The table (created by the owning service's migrations):
//
//	outbox(id, subject, payload, headers, created_at, sent_at, sent_by, claimed_by, claimed_until, attempts)
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// Message is one event in the outbox.
type Message struct {
	// ID is the event id, also sent as Nats-Msg-Id. UUIDv7, so ids sort in
	// the order events were written.
	ID      string
	Subject string
	Payload []byte
	// Headers carry the trace context of the request that wrote the event,
	// so publishing continues that request's trace.
	Headers   map[string]string
	CreatedAt time.Time
	Attempts  int
}

// Insert adds m to the outbox inside the caller's transaction.
func Insert(ctx context.Context, tx *sql.Tx, m Message) error {
	headers, err := json.Marshal(m.Headers)
	if err != nil {
		return fmt.Errorf("outbox headers: %w", err)
	}
	_, err = tx.ExecContext(ctx,
		`INSERT INTO outbox (id, subject, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5)`,
		m.ID, m.Subject, m.Payload, string(headers), sqldb.NewTime(m.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert outbox row: %w", err)
	}
	return nil
}

// claim leases up to limit pending messages to owner, oldest first. A row
// is pending until it is sent; a lease keeps other relays off it while this
// one publishes, and expires so a crashed relay's rows are picked up again.
func claim(ctx context.Context, db *sqldb.DB, owner string, limit int, lease time.Duration, now time.Time) ([]Message, error) {
	var msgs []Message
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		// PostgreSQL replicas skip rows another relay has locked this
		// instant; SQLite has one writer, so there is nothing to skip.
		lock := ""
		if db.Dialect == sqldb.Postgres {
			lock = " FOR UPDATE SKIP LOCKED"
		}
		rows, err := tx.QueryContext(ctx, `
			UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1
			WHERE id IN (
				SELECT id FROM outbox
				WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < $3 OR claimed_by = $1)
				ORDER BY id LIMIT $4`+lock+`)
			RETURNING id, subject, payload, headers, created_at, attempts`,
			owner, sqldb.NewTime(now.Add(lease)), sqldb.NewTime(now), limit)
		if err != nil {
			return fmt.Errorf("claim outbox rows: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var m Message
			var headers string
			var created sqldb.Time
			if err := rows.Scan(&m.ID, &m.Subject, &m.Payload, &headers, &created, &m.Attempts); err != nil {
				return fmt.Errorf("scan outbox row: %w", err)
			}
			if err := json.Unmarshal([]byte(headers), &m.Headers); err != nil {
				return fmt.Errorf("outbox row %s headers: %w", m.ID, err)
			}
			m.CreatedAt = created.Time
			msgs = append(msgs, m)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	// RETURNING gives no order guarantee; publish in id (write) order.
	slices.SortFunc(msgs, func(a, b Message) int { return strings.Compare(a.ID, b.ID) })
	return msgs, nil
}

// markSent records that JetStream acknowledged the messages and which relay
// published them. A row already marked by another relay keeps its mark.
func markSent(ctx context.Context, db *sqldb.DB, owner string, ids []string, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	args := []any{sqldb.NewTime(now), owner}
	marks := make([]string, len(ids))
	for i, id := range ids {
		args = append(args, id)
		marks[i] = fmt.Sprintf("$%d", i+3)
	}
	_, err := db.ExecContext(ctx,
		`UPDATE outbox SET sent_at = $1, sent_by = $2, claimed_by = NULL, claimed_until = NULL
		WHERE sent_at IS NULL AND id IN (`+strings.Join(marks, ",")+`)`,
		args...)
	if err != nil {
		return fmt.Errorf("mark outbox rows sent: %w", err)
	}
	return nil
}

// Pending counts the messages not yet sent.
func Pending(ctx context.Context, db *sqldb.DB) (int, error) {
	n, _, err := backlog(ctx, db)
	return n, err
}

// backlog counts the messages not yet sent and returns when the first of
// them in line was written (zero when none waits). The first in line is the
// lowest id, as the relay sends them: found through the pending index, it
// costs the same however long the backlog has grown.
func backlog(ctx context.Context, db *sqldb.DB) (int, time.Time, error) {
	var n int
	var first sqldb.NullTime
	err := db.QueryRowContext(ctx, `
		SELECT count(*), (SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1)
		FROM outbox WHERE sent_at IS NULL`).Scan(&n, &first)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count pending outbox rows: %w", err)
	}
	return n, first.Time.Time, nil
}

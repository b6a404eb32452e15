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
// the row pending, and it is sent again with the same Nats-Msg-Id: by any
// relay, at once when the relay that tried released the row, or once its
// lease has ended when it died. JetStream drops such a copy within its
// duplicates window; consumers are idempotent by event id for anything older.
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

// Leases. A relay claims a batch of rows under a lease of its own (claimed_by,
// claimed_until), renews it while it works on them, and releases the rows it
// did not publish when it is done, so other relays leave them alone exactly
// as long as it lives. claimed_until is always written and compared by one
// clock, the database's (see leaseClock): replicas whose own clocks disagree
// still agree on when a lease ends.

// claim leases up to limit pending messages to owner for lease, oldest
// first: rows never claimed, released, or whose lease has ended. A relay may
// also take back its own rows (claimed_by = owner) at once. asked is when
// the relay asked, by its own clock. It also returns how many rows it took
// from each other relay whose lease had ended: that relay died, or stopped
// renewing, holding them.
func claim(ctx context.Context, db *sqldb.DB, owner string, limit int, lease time.Duration, asked time.Time) ([]Message, map[string]int, error) {
	var msgs []Message
	takenOver := map[string]int{}
	clock := leaseClock{db.Dialect, asked}
	err := db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// PostgreSQL replicas skip rows another relay has locked this
		// instant; SQLite has one writer, so there is nothing to skip.
		lock := ""
		if db.Dialect == sqldb.Postgres {
			lock = " FOR UPDATE SKIP LOCKED"
		}
		now, nowArgs := clock.now(3)
		rows, err := tx.QueryContext(ctx, `
			SELECT id, subject, payload, headers, created_at, attempts, claimed_by FROM outbox
			WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < `+now+` OR claimed_by = $1)
			ORDER BY id LIMIT $2`+lock,
			append([]any{owner, limit}, nowArgs...)...)
		if err != nil {
			return fmt.Errorf("claim outbox rows: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			m, previous, err := scanClaimed(rows)
			if err != nil {
				return err
			}
			if previous != "" && previous != owner {
				takenOver[previous]++
			}
			msgs = append(msgs, m)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("claim outbox rows: %w", err)
		}
		if len(msgs) == 0 {
			return nil
		}
		until, untilArgs := clock.plus(lease, 2)
		in, inArgs := placeholders(messageIDs(msgs), 3)
		_, err = tx.ExecContext(ctx, `
			UPDATE outbox SET claimed_by = $1, claimed_until = `+until+`, attempts = attempts + 1
			WHERE id IN (`+in+`)`,
			slices.Concat([]any{owner}, untilArgs, inArgs)...)
		if err != nil {
			return fmt.Errorf("claim outbox rows: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return msgs, takenOver, nil
}

// scanClaimed reads a row the claim selected: the message as this claim
// makes it (one attempt more), and the relay that held it before ("" when
// none did).
func scanClaimed(rows *sql.Rows) (Message, string, error) {
	var m Message
	var headers string
	var created sqldb.Time
	var previous sql.NullString
	if err := rows.Scan(&m.ID, &m.Subject, &m.Payload, &headers, &created, &m.Attempts, &previous); err != nil {
		return Message{}, "", fmt.Errorf("scan outbox row: %w", err)
	}
	if err := json.Unmarshal([]byte(headers), &m.Headers); err != nil {
		return Message{}, "", fmt.Errorf("outbox row %s headers: %w", m.ID, err)
	}
	m.CreatedAt = created.Time
	m.Attempts++
	return m, previous.String, nil
}

// renew extends owner's lease on the rows with the given ids to lease after
// now, as the database counts it. Rows already sent, released or, once the
// lease had ended, taken by another relay are no longer owner's and are left
// alone.
func renew(ctx context.Context, db *sqldb.DB, owner string, ids []string, lease time.Duration, asked time.Time) error {
	until, untilArgs := leaseClock{db.Dialect, asked}.plus(lease, 2)
	in, inArgs := placeholders(ids, 3)
	_, err := db.ExecContext(ctx,
		`UPDATE outbox SET claimed_until = `+until+` WHERE claimed_by = $1 AND id IN (`+in+`)`,
		slices.Concat([]any{owner}, untilArgs, inArgs)...)
	if err != nil {
		return fmt.Errorf("renew outbox lease: %w", err)
	}
	return nil
}

// release ends owner's lease on the rows with the given ids, so any relay
// may claim them at once. Rows owner no longer holds are left alone.
func release(ctx context.Context, db *sqldb.DB, owner string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	in, inArgs := placeholders(ids, 2)
	_, err := db.ExecContext(ctx,
		`UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1 AND id IN (`+in+`)`,
		append([]any{owner}, inArgs...)...)
	if err != nil {
		return fmt.Errorf("release outbox rows: %w", err)
	}
	return nil
}

// markSent records that JetStream acknowledged the messages and which relay
// published them, with ex: the database, or a transaction of Seed's. A row
// already marked by another relay keeps its mark.
func markSent(ctx context.Context, ex sqldb.Execer, owner string, ids []string, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	in, inArgs := placeholders(ids, 3)
	_, err := ex.ExecContext(ctx,
		`UPDATE outbox SET sent_at = $1, sent_by = $2, claimed_by = NULL, claimed_until = NULL
		WHERE sent_at IS NULL AND id IN (`+in+`)`,
		append([]any{sqldb.NewTime(now), owner}, inArgs...)...)
	if err != nil {
		return fmt.Errorf("mark outbox rows sent: %w", err)
	}
	return nil
}

// leaseClock writes the instants of leases into SQL. On PostgreSQL they come
// from the database server's clock, which every replica shares: a lease
// written by one machine is judged by the clock that wrote it, however far
// the machines' own clocks drift apart. A SQLite database is a file on one
// host, whose processes share that host's clock; there they are parameters
// from this process, taken at asked.
type leaseClock struct {
	dialect sqldb.Dialect
	asked   time.Time
}

// now is the SQL for the current instant, as parameter $n when it takes
// one, and the arguments it adds.
func (c leaseClock) now(n int) (string, []any) {
	if c.dialect == sqldb.Postgres {
		return "now()", nil
	}
	return fmt.Sprintf("$%d", n), []any{sqldb.NewTime(c.asked)}
}

// plus is the SQL for d after the current instant, as parameter $n, and
// the argument it adds.
func (c leaseClock) plus(d time.Duration, n int) (string, []any) {
	if c.dialect == sqldb.Postgres {
		// now() is when the transaction began: never before asked.
		return fmt.Sprintf("now() + make_interval(secs => $%d)", n), []any{d.Seconds()}
	}
	return fmt.Sprintf("$%d", n), []any{sqldb.NewTime(c.asked.Add(d))}
}

// placeholders returns "$first, $first+1, …" for ids and ids as arguments.
func placeholders(ids []string, first int) (string, []any) {
	marks := make([]string, len(ids))
	args := make([]any, len(ids))
	for i, id := range ids {
		marks[i] = fmt.Sprintf("$%d", first+i)
		args[i] = id
	}
	return strings.Join(marks, ", "), args
}

// messageIDs lists the ids of msgs, in order.
func messageIDs(msgs []Message) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
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

package orders

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
)

// Placed is an order placed in the past, with what the database still
// keeps of it, for Seed. Its times must be at the database's precision
// (sqldb.NewTime).
type Placed struct {
	Order Order
	// EventID is the id of the order's orders.created event.
	EventID string
	// Key is the Idempotency-Key the order was placed with, or "" when the
	// key is past its 24 hours and purged.
	Key string
	// SentAt is when the relay published the event, or zero when its outbox
	// row is past OUTBOX_RETENTION and pruned.
	SentAt time.Time
}

// seedRelay is the relay Seed says published the events it writes.
const seedRelay = "seed"

// Seed writes orders placed in the past in one transaction, through the
// statements Create runs: each order; its event, when kept, in the outbox
// and marked sent; its key, when kept, claimed and holding the saved
// answer. It exists to build large databases for the scale measurement
// (test/scale); nothing in the service calls it.
func (s *Service) Seed(ctx context.Context, orders []Placed) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, p := range orders {
			if err := insertOrder(ctx, tx, p.Order); err != nil {
				return err
			}
			if !p.SentAt.IsZero() {
				msg, err := s.eventFor(ctx, p.EventID, p.Order)
				if err != nil {
					return err
				}
				if err := outbox.Seed(ctx, tx, msg, p.SentAt, seedRelay); err != nil {
					return err
				}
			}
			if p.Key != "" {
				if err := seedKey(ctx, tx, p); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// seedKey writes p's key as Create leaves it: claimed when the order was
// placed, then completed with the order as the answer to replay.
func seedKey(ctx context.Context, tx *sql.Tx, p Placed) error {
	o := p.Order
	h := keyHold{userID: o.UserID, key: p.Key, created: o.CreatedAt, until: o.CreatedAt.Add(keyLockMax)}
	inserted, err := insertKey(ctx, tx, h, NewOrder{SKU: o.SKU, Qty: o.Qty}.hash())
	if err != nil {
		return err
	}
	if !inserted {
		return fmt.Errorf("seed order %s: key %q is already used", o.ID, p.Key)
	}
	return completeKey(ctx, tx, h, o)
}

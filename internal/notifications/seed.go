package notifications

import (
	"context"
	"database/sql"
	"fmt"
)

// Recorded is a notification as the worker recorded it, with the id of the
// event it was made for.
type Recorded struct {
	EventID      string
	Notification Notification
}

// Seed writes notifications in one transaction, each through the worker's
// own record. It exists to build large databases for the scale measurement
// (test/scale); nothing in the service calls it.
func (s *Service) Seed(ctx context.Context, ns []Recorded) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, r := range ns {
			inserted, err := record(ctx, tx, r.EventID, r.Notification)
			if err != nil {
				return err
			}
			if !inserted {
				return fmt.Errorf("seed notification: event %s is already recorded", r.EventID)
			}
		}
		return nil
	})
}

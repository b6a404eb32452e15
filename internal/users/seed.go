package users

import (
	"context"
	"database/sql"
)

// Seed writes users in one transaction, each through Register's own insert,
// all with one password hashed once: hashing is deliberately slow, and
// thousands of hashes would take minutes. Each user can then log in with
// password. It exists to build large databases for the scale measurement
// (test/scale); nothing in the service calls it.
func (s *Service) Seed(ctx context.Context, users []User, password string) error {
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	return s.store.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, u := range users {
			if err := insertUser(ctx, tx, u, hash); err != nil {
				return err
			}
		}
		return nil
	})
}

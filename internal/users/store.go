package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// store keeps users in SQL. Its SQL runs unchanged on SQLite and PostgreSQL.
type store struct {
	db *sqldb.DB
}

var errNotFound = apperr.New(apperr.NotFound, "user_not_found", "no such user")

// insertUser inserts u with ex: the store's database, or a transaction of
// Seed's. Errors: Conflict "email_taken" when the lower-cased email is
// already registered. ON CONFLICT makes that a row count instead of a
// driver-specific error code.
func insertUser(ctx context.Context, ex sqldb.Execer, u User, passwordHash string) error {
	res, err := ex.ExecContext(ctx, `
		INSERT INTO users (id, email, email_lower, name, password_hash, plan, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (email_lower) DO NOTHING`,
		u.ID, u.Email, strings.ToLower(u.Email), u.Name, passwordHash, u.Plan, sqldb.NewTime(u.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("insert user: %w", err)
	} else if n == 0 {
		return apperr.New(apperr.Conflict, "email_taken", "an account with this email already exists")
	}
	return nil
}

const userColumns = `id, email, name, plan, created_at`

func scanUser(row interface{ Scan(...any) error }, extra ...any) (User, error) {
	var u User
	var created sqldb.Time
	if err := row.Scan(append([]any{&u.ID, &u.Email, &u.Name, &u.Plan, &created}, extra...)...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return User{}, errNotFound
		}
		return User{}, fmt.Errorf("read user: %w", err)
	}
	u.CreatedAt = created.Time
	return u, nil
}

// byID returns a user. Errors: NotFound.
func (s *store) byID(ctx context.Context, id string) (User, error) {
	return scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
}

// byEmail returns a user and its password hash, matching the email without
// regard to case. Errors: NotFound.
func (s *store) byEmail(ctx context.Context, email string) (User, string, error) {
	var hash string
	u, err := scanUser(s.db.QueryRowContext(ctx,
		`SELECT `+userColumns+`, password_hash FROM users WHERE email_lower = $1`, strings.ToLower(email)), &hash)
	return u, hash, err
}

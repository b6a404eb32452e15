package sqldb

import (
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// timeLayout stores instants as fixed-width UTC text with microseconds, the
// precision PostgreSQL keeps. Fixed width makes SQLite's text comparison
// order them correctly, which cursor pagination relies on; PostgreSQL parses
// the same text into timestamptz.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// Time is a time.Time that reads and writes the same instant in every dialect.
type Time struct{ time.Time }

// NewTime returns t in UTC truncated to what the database keeps, so the value
// a service returns before storing equals the one it reads back.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Microsecond)} }

// Value implements driver.Valuer.
func (t Time) Value() (driver.Value, error) {
	return t.UTC().Format(timeLayout), nil
}

// TimestamptzValue implements pgtype.TimestamptzValuer. pgx asks for it
// before Value: the instant goes to PostgreSQL as 8 bytes, instead of
// Value's text, which pgx first fails to encode in binary and then sends
// for the server to parse.
func (t Time) TimestamptzValue() (pgtype.Timestamptz, error) {
	return pgtype.Timestamptz{Time: t.Time, Valid: true}, nil
}

// Scan implements sql.Scanner for TEXT (SQLite) and timestamptz (PostgreSQL).
func (t *Time) Scan(src any) error {
	switch v := src.(type) {
	case time.Time:
		t.Time = v.UTC()
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	}
	return fmt.Errorf("scan time: unsupported type %T", src)
}

func (t *Time) parse(s string) error {
	parsed, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("scan time: %w", err)
	}
	t.Time = parsed.UTC()
	return nil
}

// NullTime is a Time that may be NULL.
type NullTime struct {
	Time  Time
	Valid bool
}

// Scan implements sql.Scanner.
func (n *NullTime) Scan(src any) error {
	if src == nil {
		n.Valid = false
		return nil
	}
	n.Valid = true
	return n.Time.Scan(src)
}

// TimestamptzValue implements pgtype.TimestamptzValuer, as Time's does.
func (n NullTime) TimestamptzValue() (pgtype.Timestamptz, error) {
	return pgtype.Timestamptz{Time: n.Time.Time, Valid: n.Valid}, nil
}

// Value implements driver.Valuer.
func (n NullTime) Value() (driver.Value, error) {
	if !n.Valid {
		return nil, nil
	}
	return n.Time.Value()
}

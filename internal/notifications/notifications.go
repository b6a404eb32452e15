package notifications

import (
	"context"
	"errors"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// Notification is a notification as every API shows it.
type Notification struct {
	ID        string     `json:"id"`
	OrderID   string     `json:"orderId"`
	UserID    string     `json:"userId"`
	Channel   string     `json:"channel"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"createdAt"`
	SentAt    *time.Time `json:"sentAt"`
}

// statusSent is the status of a delivered notification.
const statusSent = "sent"

// Message is what a channel delivers.
type Message struct {
	// EventID identifies the event behind the message; channels that call
	// out send it as an idempotency key so the receiver can drop a repeat.
	EventID string
	UserID  string
	OrderID string
	To      string
	Subject string
	Body    string
	// OccurredAt is when the event behind the message happened.
	OccurredAt time.Time
}

// Channel delivers messages to users. Deliver may be called more than once
// for one message (after a crash between delivery and record). Errors:
// ErrUndeliverable (wrapped) when a retry cannot succeed, and the event is
// dead-lettered at once; anything else is retried on the back-off schedule.
type Channel interface {
	Name() string
	Deliver(ctx context.Context, m Message) error
}

// ErrUndeliverable marks a delivery the receiver refused for good (a 4xx
// other than the throttling ones, say): redelivering the event would only
// be refused again.
var ErrUndeliverable = errors.New("undeliverable")

// Directory finds where to reach a user. Errors: NotFound when the user no
// longer exists (a permanent failure); anything else is worth a retry.
type Directory interface {
	Email(ctx context.Context, userID string) (string, error)
}

// Service lists notifications.
type Service struct {
	db *sqldb.DB
}

// NewService returns the service over db.
func NewService(db *sqldb.DB) *Service { return &Service{db: db} }

// List returns a page of the user's notifications, newest first.
func (s *Service) List(ctx context.Context, userID string, req pagination.Request) (pagination.Page[Notification], error) {
	rows, err := listNotifications(ctx, s.db, userID, req)
	if err != nil {
		return pagination.Page[Notification]{}, err
	}
	return pagination.NewPage(rows, req.Limit, func(n Notification) pagination.Cursor {
		return pagination.Cursor{CreatedAt: n.CreatedAt, ID: n.ID}
	}), nil
}

var errUserGone = apperr.New(apperr.NotFound, "user_not_found", "the user of this order no longer exists")

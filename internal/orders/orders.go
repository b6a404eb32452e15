package orders

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/outbox"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// Order is an order as every API shows it.
type Order struct {
	ID        string    `json:"id"`
	UserID    string    `json:"userId"`
	SKU       string    `json:"sku"`
	Qty       int       `json:"qty"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"createdAt"`
}

// statusCreated is the status of every new order.
const statusCreated = "created"

// NewOrder is a request to place an order. The user comes from the token,
// never from the body: the original let a body name someone else.
type NewOrder struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

var skuPattern = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,63}$`)

// Valid checks every rule and reports each broken one.
func (n NewOrder) Valid(context.Context) map[string]string {
	problems := map[string]string{}
	if !skuPattern.MatchString(n.SKU) {
		problems["sku"] = "must be 1 to 64 characters of A-Z, 0-9 and -, not starting with -"
	}
	if n.Qty < 1 || n.Qty > 1000 {
		problems["qty"] = "must be an integer from 1 to 1000"
	}
	return problems
}

// hash identifies the parsed body for idempotency: the same order written
// with other spacing or key order is the same request.
func (n NewOrder) hash() string {
	sum := sha256.Sum256([]byte(n.SKU + "\x00" + strconv.Itoa(n.Qty)))
	return hex.EncodeToString(sum[:])
}

// Idempotency keys are 1 to 255 characters and kept 24 hours; how long a
// request holds its key is keyLockFor's.
const (
	maxKeyLen = 255
	keyTTL    = 24 * time.Hour
)

// FaultAfterKeyClaim is the fault point between the claim of an order's
// Idempotency-Key and the order's transaction: a crash there leaves the key
// locked with no answer, for the client's retry to wait out and take over.
const FaultAfterKeyClaim = "orders.after_key_claim"

// FaultAfterCommit is the fault point between the commit of an order with
// its event and the relay's wake-up: a crash there leaves the event for the
// relay's next poll, in this replica once restarted or in another.
const FaultAfterCommit = "orders.after_commit"

// Service implements the orders use cases.
type Service struct {
	db         *sqldb.DB
	propagator propagation.TextMapPropagator
	// created counts orders committed, not the replays of a key.
	created metric.Int64Counter
	// written is called after a commit that wrote outbox rows: the relay's
	// wake-up.
	written func()
	now     func() time.Time
	faults  *chaos.Injector // nil: none
}

// NewService returns the service over db. faults, when not nil, injects
// faults at FaultAfterKeyClaim and FaultAfterCommit.
func NewService(db *sqldb.DB, propagator propagation.TextMapPropagator, meter metric.MeterProvider,
	written func(), now func() time.Time, faults *chaos.Injector,
) (*Service, error) {
	created, err := meter.Meter("github.com/ds-blueprint/blueprint/internal/orders").Int64Counter("blueprint.orders.created",
		metric.WithDescription("Orders committed (a replayed idempotency key is not a new order)."),
		metric.WithUnit("{order}"))
	if err != nil {
		return nil, err
	}
	return &Service{db: db, propagator: propagator, created: created, written: written, now: now, faults: faults}, nil
}

// Created is the outcome of Create.
type Created struct {
	Order Order
	// Replayed is true when the order was created by an earlier request
	// with the same idempotency key.
	Replayed bool
}

// Create places an order for the user. With a key, it is idempotent.
// Errors: Invalid "validation" when n breaks a rule; Invalid "idempotency_key_reused" when the key was used with
// another body; Conflict "idempotency_key_in_flight", with the time left on
// the key's lock, while a request with the key is still running.
func (s *Service) Create(ctx context.Context, userID, key string, n NewOrder) (Created, error) {
	if problems := n.Valid(ctx); len(problems) > 0 {
		return Created{}, apperr.Validation(problems)
	}
	var hold *keyHold
	if key != "" {
		h, prior, err := s.claimKey(ctx, userID, key, n.hash())
		if err != nil || prior != nil {
			return Created{Order: derefOrder(prior), Replayed: prior != nil}, err
		}
		hold = h
	}
	o, err := s.commitOrder(ctx, userID, n, hold)
	if err != nil {
		if hold != nil {
			// Free the key so the client's retry is not refused until the
			// lock expires. If this fails too, the lock's expiry frees it.
			releaseKey(context.WithoutCancel(ctx), s.db, *hold)
		}
		return Created{}, err
	}
	s.created.Add(ctx, 1)
	if err := s.faults.Hit(ctx, FaultAfterCommit); err != nil {
		return Created{}, err // committed all the same: the relay's poll publishes the event
	}
	s.written()
	return Created{Order: o}, nil
}

// commitOrder writes a new order of the user's. The order, its event and,
// when hold is not nil, the key's saved answer commit together or not at
// all: no order without its event, no event without its order.
func (s *Service) commitOrder(ctx context.Context, userID string, n NewOrder, hold *keyHold) (Order, error) {
	if hold != nil {
		if err := s.faults.Hit(ctx, FaultAfterKeyClaim); err != nil {
			return Order{}, err
		}
	}
	now := sqldb.NewTime(s.now()).Time
	o := Order{
		ID:        uuid.Must(uuid.NewV7()).String(),
		UserID:    userID,
		SKU:       n.SKU,
		Qty:       n.Qty,
		Status:    statusCreated,
		CreatedAt: now,
	}
	msg, err := s.eventFor(ctx, uuid.Must(uuid.NewV7()).String(), o)
	if err != nil {
		return Order{}, err
	}
	err = s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := insertOrder(ctx, tx, o); err != nil {
			return err
		}
		if err := outbox.Insert(ctx, tx, msg); err != nil {
			return err
		}
		if hold != nil {
			return completeKey(ctx, tx, *hold, o)
		}
		return nil
	})
	if err != nil {
		return Order{}, err
	}
	return o, nil
}

func derefOrder(o *Order) Order {
	if o == nil {
		return Order{}
	}
	return *o
}

// eventFor builds the outbox message of event id for a new order, carrying
// the trace context of the request so publishing continues its trace.
func (s *Service) eventFor(ctx context.Context, id string, o Order) (outbox.Message, error) {
	payload, err := json.Marshal(events.NewOrderCreated(id, events.OrderCreatedData{
		OrderID: o.ID, UserID: o.UserID, SKU: o.SKU, Qty: o.Qty, CreatedAt: o.CreatedAt,
	}))
	if err != nil {
		return outbox.Message{}, fmt.Errorf("encode event: %w", err)
	}
	headers := propagation.MapCarrier{}
	s.propagator.Inject(ctx, headers)
	return outbox.Message{ID: id, Subject: events.OrderCreated, Payload: payload, Headers: headers, CreatedAt: o.CreatedAt}, nil
}

// Get returns one of the user's orders. Errors: NotFound, also when the
// order exists but belongs to someone else.
func (s *Service) Get(ctx context.Context, userID, id string) (Order, error) {
	return orderByID(ctx, s.db, userID, id)
}

// List returns a page of the user's orders, newest first.
func (s *Service) List(ctx context.Context, userID string, req pagination.Request) (pagination.Page[Order], error) {
	rows, err := listOrders(ctx, s.db, userID, req)
	if err != nil {
		return pagination.Page[Order]{}, err
	}
	return pagination.NewPage(rows, req.Limit, func(o Order) pagination.Cursor {
		return pagination.Cursor{CreatedAt: o.CreatedAt, ID: o.ID}
	}), nil
}

var errNotFound = apperr.New(apperr.NotFound, "order_not_found", "no such order")

// Package events holds the only business code two services share: the names
// and payloads of the events that cross NATS. The orders service writes
// them into its outbox; the notifications worker reads them from JetStream.
// Changing a payload here is a change to a public contract between services
// that may run different versions during a rollout: add fields, never
// repurpose one.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Stream and subjects, kept from the original system.
const (
	Stream        = "ORDERS"
	StreamSubject = "orders.>"
	OrderCreated  = "orders.created"
)

// CloudEvents attributes of the events Blueprint emits.
const (
	specVersion      = "1.0"
	SourceOrders     = "blueprint/orders"
	TypeOrderCreated = "dev.blueprint.orders.created.v1"
	contentTypeJSON  = "application/json"
)

// Envelope is a CloudEvents 1.0 event in structured JSON mode. Its ID is
// also the message's Nats-Msg-Id, so JetStream drops a re-published copy.
type Envelope[T any] struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            T         `json:"data"`
}

// OrderCreatedData is the payload of orders.created.
type OrderCreatedData struct {
	OrderID   string    `json:"orderId"`
	UserID    string    `json:"userId"`
	SKU       string    `json:"sku"`
	Qty       int       `json:"qty"`
	CreatedAt time.Time `json:"createdAt"`
}

// NewOrderCreated builds the event for a new order.
func NewOrderCreated(id string, data OrderCreatedData) Envelope[OrderCreatedData] {
	return Envelope[OrderCreatedData]{
		SpecVersion:     specVersion,
		ID:              id,
		Source:          SourceOrders,
		Type:            TypeOrderCreated,
		Subject:         data.OrderID,
		Time:            data.CreatedAt,
		DataContentType: contentTypeJSON,
		Data:            data,
	}
}

// ErrMalformed marks an event that can never be processed, however often it
// is redelivered: the worker terminates it instead of retrying.
var ErrMalformed = errors.New("malformed event")

// ParseOrderCreated decodes and checks an orders.created event.
func ParseOrderCreated(body []byte) (Envelope[OrderCreatedData], error) {
	var e Envelope[OrderCreatedData]
	if err := json.Unmarshal(body, &e); err != nil {
		return e, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var missing []string
	for name, empty := range map[string]bool{
		"id": e.ID == "", "type": e.Type == "", "data.orderId": e.Data.OrderID == "",
		"data.userId": e.Data.UserID == "", "data.sku": e.Data.SKU == "",
	} {
		if empty {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return e, fmt.Errorf("%w: missing %v", ErrMalformed, missing)
	}
	if e.SpecVersion != specVersion || e.Type != TypeOrderCreated {
		return e, fmt.Errorf("%w: unexpected specversion %q or type %q", ErrMalformed, e.SpecVersion, e.Type)
	}
	if e.Data.Qty < 1 {
		return e, fmt.Errorf("%w: qty %d", ErrMalformed, e.Data.Qty)
	}
	// The ids are looked up and stored: only text a database and a URL
	// path can hold, as every id orders makes. Anything else is poison to
	// dead-letter now, not an error to retry until the attempts run out.
	for name, v := range map[string]string{"id": e.ID, "data.orderId": e.Data.OrderID, "data.userId": e.Data.UserID, "data.sku": e.Data.SKU} {
		if strings.ContainsFunc(v, unicode.IsControl) {
			return e, fmt.Errorf("%w: %s holds a control character", ErrMalformed, name)
		}
	}
	return e, nil
}

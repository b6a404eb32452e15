package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/ds-blueprint/blueprint/internal/events"
)

// FuzzParseOrderCreated checks that whatever arrives on the stream, the
// worker neither panics nor accepts an event it could not act on: every
// failure is ErrMalformed (terminated, never retried) and every success has
// the fields a notification needs.
func FuzzParseOrderCreated(f *testing.F) {
	valid, err := json.Marshal(validEvent())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	for _, seed := range []string{
		``, `null`, `[]`, `{}`, `{"data":null}`, `"x"`,
		`{"specversion":"1.0","id":"e","type":"dev.blueprint.orders.created.v1","data":{"orderId":"o","userId":"u","sku":"S","qty":1}}`,
		`{"specversion":"1.0","id":"e","type":"dev.blueprint.orders.created.v1","data":{"orderId":"o","userId":"u","sku":"S","qty":0}}`,
		`{"specversion":"1.0","id":"e","type":"dev.blueprint.orders.created.v1","data":{"orderId":"o","userId":"u","sku":"S","qty":1e30}}`,
		`{"ID":"e","Type":"dev.blueprint.orders.created.v1","SpecVersion":"1.0","Data":{"OrderID":"o","UserID":"u","SKU":"S","Qty":2}}`,
		`{"id":"e","id":"","type":"dev.blueprint.orders.created.v1"}`,
		`{"specversion":"1.0","id":"e","type":"dev.blueprint.orders.created.v1","data":{"orderId":"o\u0000","userId":"u","sku":"S","qty":1}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := events.ParseOrderCreated(body)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("ParseOrderCreated(%q) = %v, want an error wrapping ErrMalformed", body, err)
			}
			return
		}
		if e.ID == "" || e.Data.OrderID == "" || e.Data.UserID == "" || e.Data.SKU == "" || e.Data.Qty < 1 ||
			e.Type != events.TypeOrderCreated || e.SpecVersion != "1.0" {
			t.Fatalf("ParseOrderCreated(%q) = %+v, nil, want every required field set", body, e)
		}
		for _, id := range []string{e.ID, e.Data.OrderID, e.Data.UserID, e.Data.SKU} {
			if strings.ContainsFunc(id, unicode.IsControl) {
				t.Fatalf("ParseOrderCreated(%q) accepted %q, which holds a control character", body, id)
			}
		}
	})
}

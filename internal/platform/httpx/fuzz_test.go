package httpx_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// FuzzUnmarshal checks that no body, however hostile, panics the decoder or
// turns into anything but a 400 a client can act on.
func FuzzUnmarshal(f *testing.F) {
	for _, seed := range []string{
		`{"sku":"A-1","qty":2}`,
		`{"sku":"A","qty":"2"}`,
		`{"sku":5}`,
		`{"qty":1e400}`,
		`{"qty":-1.5}`,
		`{"price":3}`,
		`{"a\"b":1}`,
		`{"sku":"\ud800"}`,
		`{"sku":"A"`,
		`{"sku":"A"} x`,
		`{}{}`,
		`[]`,
		`"x"`,
		`null`,
		`1`,
		``,
		" \t\r\n{}",
		"\xef\xbb\xbf{}",
		`{"sku":null,"qty":null}`,
		`{"SKU":"case","QTY":3}`,
		`{"sku":"A","sku":"B"}`,
		`{"nested":{"deep":[1,2,{"x":true}]}}`,
		`{"sku":"A\u0000B"}`,
		`{"sku":"\\u0000"}`,
		`{"sku":"\u00"}`,
		"{\"sku\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v createOrder
		err := httpx.Unmarshal(body, &v)
		if err == nil {
			// Whatever is accepted, a database can store.
			if strings.ContainsRune(v.SKU, 0) || !utf8.ValidString(v.SKU) {
				t.Fatalf("Unmarshal(%q) accepted sku %q", body, v.SKU)
			}
			return
		}
		e, ok := errors.AsType[*apperr.Error](err)
		if !ok {
			t.Fatalf("Unmarshal(%q) = %v (%T), want nil or an *apperr.Error", body, err, err)
		}
		if e.Kind != apperr.BadRequest {
			t.Fatalf("Unmarshal(%q) = %v with kind %v, want kind BadRequest (%v)", body, err, e.Kind, apperr.BadRequest)
		}
		if e.Code == "" || e.Detail == "" {
			t.Fatalf("Unmarshal(%q) = code %q detail %q, want both set", body, e.Code, e.Detail)
		}
		for _, fe := range e.Fields {
			if fe.Message == "" {
				t.Fatalf("Unmarshal(%q) field %q has no message", body, fe.Field)
			}
		}
	})
}

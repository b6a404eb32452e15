package httpx_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// createOrder is a request type shaped like the public POST /orders body.
type createOrder struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

func (c createOrder) Valid(context.Context) map[string]string {
	problems := map[string]string{}
	if c.SKU == "" {
		problems["sku"] = "is required"
	}
	if c.Qty < 1 || c.Qty > 1000 {
		problems["qty"] = "must be from 1 to 1000"
	}
	return problems
}

// manyRules breaks many rules at once, to show errors[] comes out sorted.
type manyRules struct {
	Name string `json:"name"`
}

func (manyRules) Valid(context.Context) map[string]string {
	return map[string]string{
		"zeta": "z", "password": "p", "email": "e", "alpha": "a", "name": "n", "qty": "q", "sku": "s",
	}
}

func decodeBody[T httpx.Validator](body string) (T, error) {
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
	return httpx.Decode[T](httptest.NewRecorder(), r)
}

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		// wantStatus is the status the error maps to; 0 means no error.
		wantStatus int
		wantCode   string
		// wantField, when set, is the field the error must name.
		wantField string
		// wantMessage, when set, must appear in the field's message.
		wantMessage string
		want        createOrder
	}{
		{name: "valid", body: `{"sku":"A-1","qty":2}`, want: createOrder{SKU: "A-1", Qty: 2}},
		{name: "valid with surrounding whitespace", body: " \r\n\t{\"qty\":1000, \"sku\":\"B\"}\n\n ", want: createOrder{SKU: "B", Qty: 1000}},

		// What a database cannot store is refused before any service sees
		// it: a NUL in a string, bytes that are not UTF-8.
		{name: "NUL in a string", body: `{"sku":"A\u0000B","qty":1}`, wantStatus: 400, wantCode: "nul_character"},
		{name: "NUL as the whole string", body: `{"sku":"\u0000","qty":1}`, wantStatus: 400, wantCode: "nul_character"},
		{name: "escaped backslash before u0000", body: `{"sku":"\\u0000","qty":1}`, want: createOrder{SKU: `\u0000`, Qty: 1}},
		{name: "invalid UTF-8", body: "{\"sku\":\"A\xff\",\"qty\":1}", wantStatus: 400, wantCode: "invalid_utf8"},
		{name: "empty", body: ``, wantStatus: 400, wantCode: "malformed_json"},
		{name: "only whitespace", body: " \n\t ", wantStatus: 400, wantCode: "malformed_json"},
		{name: "array", body: `[]`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "array of objects", body: `[{"sku":"A","qty":1}]`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "string", body: `"x"`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "null", body: `null`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "number", body: `1`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "true", body: `true`, wantStatus: 400, wantCode: "malformed_json"},

		{name: "missing value", body: `{"sku":}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "unquoted key", body: `{sku:"A","qty":1}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "single quotes", body: `{'sku':'A'}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "trailing comma", body: `{"sku":"A","qty":1,}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "truncated after value", body: `{"sku":"A"`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "truncated inside string", body: `{"sku":"A`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "only an open brace", body: `{`, wantStatus: 400, wantCode: "malformed_json"},

		{name: "second object", body: `{"sku":"A","qty":1}{"sku":"B","qty":1}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "trailing word", body: `{"sku":"A","qty":1} x`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "trailing brace", body: `{"sku":"A","qty":1}}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "trailing number", body: `{"sku":"A","qty":1} 2`, wantStatus: 400, wantCode: "malformed_json"},

		{name: "unknown field", body: `{"sku":"A","qty":1,"price":3}`, wantStatus: 400, wantCode: "unknown_field", wantField: "price"},
		{name: "unknown field differing only by a symbol", body: `{"sku":"A","qty":1,"sku_":"B"}`, wantStatus: 400, wantCode: "unknown_field", wantField: "sku_"},
		{name: "unknown field with quote in name", body: `{"a\"b":1}`, wantStatus: 400, wantCode: "unknown_field", wantField: `a"b`},

		{name: "qty as string", body: `{"sku":"A","qty":"2"}`, wantStatus: 400, wantCode: "wrong_type", wantField: "qty", wantMessage: "integer"},
		{name: "qty as fraction", body: `{"sku":"A","qty":1.5}`, wantStatus: 400, wantCode: "wrong_type", wantField: "qty", wantMessage: "integer"},
		{name: "qty as bool", body: `{"sku":"A","qty":true}`, wantStatus: 400, wantCode: "wrong_type", wantField: "qty", wantMessage: "integer"},
		{name: "qty overflows int", body: `{"sku":"A","qty":1e400}`, wantStatus: 400, wantField: "qty", wantMessage: "integer"},
		{name: "sku as number", body: `{"sku":5,"qty":1}`, wantStatus: 400, wantCode: "wrong_type", wantField: "sku", wantMessage: "string"},
		{name: "sku as object", body: `{"sku":{},"qty":1}`, wantStatus: 400, wantCode: "wrong_type", wantField: "sku", wantMessage: "string"},
		{name: "sku as array", body: `{"sku":["A"],"qty":1}`, wantStatus: 400, wantCode: "wrong_type", wantField: "sku", wantMessage: "string"},

		{name: "broken rules", body: `{"sku":"","qty":0}`, wantStatus: 422, wantCode: "validation", wantField: "qty"},
		{name: "empty object breaks rules", body: `{}`, wantStatus: 422, wantCode: "validation", wantField: "qty"},
		{name: "qty over the maximum", body: `{"sku":"A","qty":1001}`, wantStatus: 422, wantCode: "validation", wantField: "qty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeBody[createOrder](tt.body)
			if tt.wantStatus == 0 {
				if err != nil || got != tt.want {
					t.Fatalf("Decode(%q) = %+v, %v, want %+v, nil", tt.body, got, err, tt.want)
				}
				return
			}
			e, ok := errors.AsType[*apperr.Error](err)
			if !ok {
				t.Fatalf("Decode(%q) = %v, want an *apperr.Error with status %d", tt.body, err, tt.wantStatus)
			}
			if status := httpx.StatusOf(e.Kind); status != tt.wantStatus {
				t.Errorf("Decode(%q) = %v (status %d), want status %d", tt.body, err, status, tt.wantStatus)
			}
			if tt.wantCode != "" && e.Code != tt.wantCode {
				t.Errorf("Decode(%q) code = %q, want %q", tt.body, e.Code, tt.wantCode)
			}
			if e.Detail == "" {
				t.Errorf("Decode(%q) = %v with no detail, want a detail a client can act on", tt.body, err)
			}
			if tt.wantField == "" {
				return
			}
			if len(e.Fields) == 0 || e.Fields[0].Field != tt.wantField {
				t.Fatalf("Decode(%q) fields = %v, want first field %q", tt.body, e.Fields, tt.wantField)
			}
			if !strings.Contains(e.Fields[0].Message, tt.wantMessage) {
				t.Errorf("Decode(%q) message = %q, want it to contain %q", tt.body, e.Fields[0].Message, tt.wantMessage)
			}
		})
	}
}

func TestDecodeBodySize(t *testing.T) {
	t.Parallel()
	// bodyOfSize returns a valid request of exactly n bytes.
	bodyOfSize := func(n int) string {
		prefix, suffix := `{"qty":1,"sku":"`, `"}`
		return prefix + strings.Repeat("A", n-len(prefix)-len(suffix)) + suffix
	}
	tests := []struct {
		name       string
		body       string
		wantStatus int // 0: accepted
	}{
		{name: "one byte under the cap", body: bodyOfSize(httpx.MaxBodyBytes - 1)},
		{name: "exactly at the cap", body: bodyOfSize(httpx.MaxBodyBytes)},
		{name: "one byte over the cap", body: bodyOfSize(httpx.MaxBodyBytes + 1), wantStatus: http.StatusRequestEntityTooLarge},
		{name: "far over the cap", body: bodyOfSize(16 * httpx.MaxBodyBytes), wantStatus: http.StatusRequestEntityTooLarge},
		{name: "whitespace padding over the cap", body: `{"qty":1,"sku":"A"}` + strings.Repeat(" ", httpx.MaxBodyBytes), wantStatus: http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := decodeBody[createOrder](tt.body)
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Decode(%d bytes) = %v, want nil", len(tt.body), err)
				}
				return
			}
			if got := apperr.KindOf(err); got != apperr.TooLarge {
				t.Fatalf("Decode(%d bytes) = %v (kind %v), want kind TooLarge (%v)", len(tt.body), err, got, apperr.TooLarge)
			}
			if got := httpx.StatusOf(apperr.KindOf(err)); got != tt.wantStatus {
				t.Errorf("StatusOf(KindOf(Decode(%d bytes))) = %d, want %d", len(tt.body), got, tt.wantStatus)
			}
		})
	}
}

func TestDecodeUnreadableBody(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodPost, "/orders", iotest.ErrReader(io.ErrUnexpectedEOF))
	_, err := httpx.Decode[createOrder](httptest.NewRecorder(), r)
	if got := apperr.KindOf(err); got != apperr.BadRequest {
		t.Errorf("Decode(unreadable body) = %v (kind %v), want kind BadRequest (%v)", err, got, apperr.BadRequest)
	}
}

// TestDecodeValidationProblem follows a body that breaks many rules all the
// way to the problem+json a client reads: 422 with errors[] sorted by field.
func TestDecodeValidationProblem(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	h := httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := httpx.Decode[manyRules](w, r); err != nil {
			return err
		}
		return httpx.Encode(w, http.StatusCreated, map[string]string{"ok": "yes"})
	})
	wantFields := []string{"alpha", "email", "name", "password", "qty", "sku", "zeta"}
	for range 10 { // map order is random; an unsorted list would show up
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/x", strings.NewReader(`{"name":"n"}`)))
		if rec.Code != http.StatusUnprocessableEntity {
			t.Fatalf("POST /x status = %d, want %d (body %s)", rec.Code, http.StatusUnprocessableEntity, rec.Body)
		}
		p := readProblem(t, rec.Code, rec.Header(), rec.Body.Bytes())
		var got []string
		for _, f := range p.Errors {
			got = append(got, f.Field)
			if f.Message == "" {
				t.Errorf("errors[] entry %q has no message", f.Field)
			}
		}
		if !slices.Equal(got, wantFields) {
			t.Fatalf("errors[] fields = %v, want %v", got, wantFields)
		}
	}
}

func TestEncode(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	if err := httpx.Encode(rec, http.StatusCreated, map[string]any{"id": "o1", "qty": 2}); err != nil {
		t.Fatalf("Encode(map) = %v, want nil", err)
	}
	if rec.Code != http.StatusCreated {
		t.Errorf("status = %d, want %d", rec.Code, http.StatusCreated)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
	if got, want := rec.Body.String(), "{\"id\":\"o1\",\"qty\":2}\n"; got != want {
		t.Errorf("body = %q, want %q", got, want)
	}
	if got, want := rec.Header().Get("Content-Length"), "20"; got != want {
		t.Errorf("Content-Length = %q, want %q", got, want)
	}
}

// TestEncodeFailureBecomesProblem shows why Encode buffers: a value that
// cannot be encoded leaves the response untouched, so it can still be a 500.
func TestEncodeFailureBecomesProblem(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger(t)
	h := httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		return httpx.Encode(w, http.StatusOK, map[string]any{"c": make(chan int)})
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want %d (body %s)", rec.Code, http.StatusInternalServerError, rec.Body)
	}
	readProblem(t, rec.Code, rec.Header(), rec.Body.Bytes())
	if !strings.Contains(logs.String(), "encode response") {
		t.Errorf("log = %q, want the encoding failure logged", logs.String())
	}
}

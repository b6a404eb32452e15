package apperr_test

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
)

func TestValidationSortsFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fields map[string]string
		want   []apperr.FieldError
	}{
		{name: "nil map", fields: nil, want: nil},
		{name: "empty map", fields: map[string]string{}, want: nil},
		{
			name:   "one field",
			fields: map[string]string{"email": "is required"},
			want:   []apperr.FieldError{{Field: "email", Message: "is required"}},
		},
		{
			name: "many fields come out sorted by name",
			fields: map[string]string{
				"sku": "bad sku", "qty": "too many", "email": "bad email", "name": "too long",
				"password": "too short", "a": "first", "zeta": "last", "Z": "upper case sorts first",
			},
			want: []apperr.FieldError{
				{Field: "Z", Message: "upper case sorts first"},
				{Field: "a", Message: "first"},
				{Field: "email", Message: "bad email"},
				{Field: "name", Message: "too long"},
				{Field: "password", Message: "too short"},
				{Field: "qty", Message: "too many"},
				{Field: "sku", Message: "bad sku"},
				{Field: "zeta", Message: "last"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Map iteration order is random: repeat so an unsorted
			// implementation cannot pass by luck.
			for range 20 {
				got := apperr.Validation(tt.fields)
				if got.Kind != apperr.Invalid {
					t.Fatalf("Validation(%v).Kind = %v, want %v", tt.fields, got.Kind, apperr.Invalid)
				}
				if got.Code == "" || got.Detail == "" {
					t.Fatalf("Validation(%v) = code %q detail %q, want both set", tt.fields, got.Code, got.Detail)
				}
				if !slices.Equal(got.Fields, tt.want) {
					t.Fatalf("Validation(%v).Fields = %v, want %v", tt.fields, got.Fields, tt.want)
				}
			}
		})
	}
}

func TestKindOfAndIs(t *testing.T) {
	t.Parallel()
	notFound := apperr.New(apperr.NotFound, "order_not_found", "no such order")
	tests := []struct {
		name string
		err  error
		want apperr.Kind
	}{
		{name: "nil", err: nil, want: apperr.Internal},
		{name: "plain error", err: errors.New("boom"), want: apperr.Internal},
		{name: "apperr itself", err: notFound, want: apperr.NotFound},
		{name: "wrapped once", err: fmt.Errorf("get order: %w", notFound), want: apperr.NotFound},
		{
			name: "wrapped twice",
			err:  fmt.Errorf("handler: %w", fmt.Errorf("get order: %w", notFound)),
			want: apperr.NotFound,
		},
		{name: "joined", err: errors.Join(io.EOF, notFound), want: apperr.NotFound},
		{
			name: "outermost apperr wins",
			err:  apperr.Wrap(apperr.BadGateway, "upstream", "orders answered badly", notFound),
			want: apperr.BadGateway,
		},
		{
			name: "apperr wrapping a plain cause",
			err:  apperr.Wrap(apperr.Unavailable, "db_down", "try again", io.ErrUnexpectedEOF),
			want: apperr.Unavailable,
		},
		{name: "formatted with %v loses the kind", err: fmt.Errorf("get order: %v", notFound), want: apperr.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := apperr.KindOf(tt.err); got != tt.want {
				t.Errorf("KindOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if got := apperr.Is(tt.err, tt.want); got != (tt.err != nil) {
				t.Errorf("Is(%v, %v) = %v, want %v", tt.err, tt.want, got, tt.err != nil)
			}
			other := apperr.Conflict
			if got := apperr.Is(tt.err, other); got {
				t.Errorf("Is(%v, %v) = %v, want false", tt.err, other, got)
			}
		})
	}
}

func TestErrorKeepsItsCause(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("store: %w", apperr.Wrap(apperr.Unavailable, "db_down", "the database is unreachable", io.ErrUnexpectedEOF))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("errors.Is(%v, io.ErrUnexpectedEOF) = false, want true", err)
	}
	e, ok := errors.AsType[*apperr.Error](err)
	if !ok {
		t.Fatalf("errors.AsType[*apperr.Error](%v) found nothing, want the wrapped *Error", err)
	}
	if e.Code != "db_down" {
		t.Errorf("Code = %q, want %q", e.Code, "db_down")
	}
	// The message is for logs: it names the code, the detail and the cause.
	for _, want := range []string{"db_down", "the database is unreachable", io.ErrUnexpectedEOF.Error()} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("Error() = %q, want it to contain %q", e.Error(), want)
		}
	}
	plain := apperr.New(apperr.NotFound, "not_found", "no route")
	if got, want := plain.Error(), "not_found: no route"; got != want {
		t.Errorf("New(NotFound, not_found, no route).Error() = %q, want %q", got, want)
	}
	if got := errors.Unwrap(plain); got != nil {
		t.Errorf("errors.Unwrap(New(...)) = %v, want nil", got)
	}
}

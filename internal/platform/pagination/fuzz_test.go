package pagination_test

import (
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
)

// FuzzParseCursor checks that a cursor a client made up never panics Parse,
// is refused as a 400 naming "cursor", and that any cursor Parse accepts
// survives another round trip unchanged. Each input is tried as it is and
// base64-encoded, so the fuzzer also reaches the JSON inside the cursor.
func FuzzParseCursor(f *testing.F) {
	f.Add(pagination.Cursor{CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC), ID: "o1"}.Encode())
	f.Add(pagination.Cursor{CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("", -7*3600)), ID: "ü"}.Encode())
	for _, seed := range []string{
		"", "!!!", "e30", "bnVsbA", "W10", "eyJ0IjoiMjAyNC0wMS0wMlQwMzowNDowNVoifQ", "' OR 1=1 --",
		"eyJ0IjoiMjAyNC0wMS0wMlQwMzowNDowNVoiLCJpZCI6Im8xIn0=",
		`{"t":"2024-01-02T03:04:05.123456789+14:00","id":"o1"}`,
		`{"T":"2024-01-02T03:04:05Z","ID":"o1","x":1}`,
		`{"t":"9999-12-31T23:59:59Z","id":"\u0000"}`,
		`{"t":null,"id":"o1"}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkCursor(t, s)
		checkCursor(t, base64.RawURLEncoding.EncodeToString([]byte(s)))
	})
}

func checkCursor(t *testing.T, cursor string) {
	t.Helper()
	req, err := pagination.Parse(url.Values{"cursor": {cursor}})
	if err != nil {
		e, ok := errors.AsType[*apperr.Error](err)
		if !ok || e.Kind != apperr.BadRequest || len(e.Fields) != 1 || e.Fields[0].Field != "cursor" {
			t.Fatalf("Parse(cursor=%q) = %v, want a BadRequest naming cursor", cursor, err)
		}
		return
	}
	if req.After == nil || req.After.ID == "" || req.After.CreatedAt.IsZero() || req.Limit != pagination.DefaultLimit ||
		strings.ContainsRune(req.After.ID, 0) {
		t.Fatalf("Parse(cursor=%q) = %+v (after %+v), want a complete cursor and the default limit", cursor, req, req.After)
	}
	again, err := pagination.Parse(url.Values{"cursor": {req.After.Encode()}})
	if err != nil {
		t.Fatalf("Parse(Encode(%+v)) = %v, want nil", *req.After, err)
	}
	if again.After.ID != req.After.ID || !again.After.CreatedAt.Equal(req.After.CreatedAt) {
		t.Fatalf("Parse(Encode(%+v)) = %+v, want the same cursor", *req.After, *again.After)
	}
}

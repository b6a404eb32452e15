package pagination_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

func TestParseLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		query   string
		want    int
		wantErr bool
	}{
		{query: "", want: pagination.DefaultLimit},
		{query: "cursor_x=1", want: pagination.DefaultLimit},
		{query: "limit=1", want: 1},
		{query: "limit=20", want: 20},
		{query: "limit=100", want: 100},
		{query: "limit=50&limit=7", want: 50},
		{query: "limit=0", wantErr: true},
		{query: "limit=101", wantErr: true},
		{query: "limit=-1", wantErr: true},
		{query: "limit=abc", wantErr: true},
		{query: "limit=", wantErr: true},
		{query: "limit", wantErr: true},
		{query: "limit=1.5", wantErr: true},
		{query: "limit=%201", wantErr: true},
		{query: "limit=99999999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			t.Parallel()
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatalf("ParseQuery(%q): %v", tt.query, err)
			}
			got, err := pagination.Parse(q)
			if tt.wantErr {
				checkBadParam(t, tt.query, err, "limit")
				return
			}
			if err != nil || got.Limit != tt.want || got.After != nil {
				t.Errorf("Parse(%q) = %+v, %v, want limit %d and no cursor", tt.query, got, err, tt.want)
			}
		})
	}
}

// checkBadParam checks err is a BadRequest naming the query parameter.
func checkBadParam(t *testing.T, query string, err error, param string) {
	t.Helper()
	e, ok := errors.AsType[*apperr.Error](err)
	if !ok {
		t.Fatalf("Parse(%q) = %v, want an *apperr.Error naming %q", query, err, param)
	}
	if e.Kind != apperr.BadRequest {
		t.Errorf("Parse(%q) kind = %v, want BadRequest (%v)", query, e.Kind, apperr.BadRequest)
	}
	if len(e.Fields) != 1 || e.Fields[0].Field != param || e.Fields[0].Message == "" {
		t.Errorf("Parse(%q) fields = %v, want one naming %q", query, e.Fields, param)
	}
	if !strings.Contains(e.Detail, param) {
		t.Errorf("Parse(%q) detail = %q, want it to name %q", query, e.Detail, param)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []pagination.Cursor{
		{CreatedAt: time.Date(2024, 2, 29, 23, 59, 59, 999999000, time.UTC), ID: "0190b5a2-7c1e-7e4e-9d6a-3f2b1c0d9e8f"},
		{CreatedAt: time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), ID: "x"},
		{CreatedAt: time.Date(2030, 6, 1, 12, 0, 0, 1000, time.FixedZone("CEST", 2*3600)), ID: "id with spaces/and+symbols?&="},
		{CreatedAt: sqldb.NewTime(time.Now()).Time, ID: "01J2Z3Y4X5W6V7T8S9R0QPNMKJ"},
	}
	for _, c := range tests {
		t.Run(c.ID, func(t *testing.T) {
			t.Parallel()
			enc := c.Encode()
			if strings.ContainsAny(enc, "+/=") || url.QueryEscape(enc) != enc {
				t.Errorf("Cursor%+v.Encode() = %q, want URL-safe base64 without padding", c, enc)
			}
			got, err := pagination.Parse(url.Values{"cursor": {enc}, "limit": {"5"}})
			if err != nil {
				t.Fatalf("Parse(cursor=%q) = %v, want nil", enc, err)
			}
			if got.After == nil || got.After.ID != c.ID || !got.After.CreatedAt.Equal(c.CreatedAt) || got.Limit != 5 {
				t.Errorf("Parse(cursor=%q) = %+v (after %+v), want limit 5 after %+v", enc, got, got.After, c)
			}
		})
	}
}

func TestParseBadCursor(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	valid := pagination.Cursor{CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), ID: "o1"}.Encode()
	tests := []struct {
		name   string
		cursor string
	}{
		{name: "empty but present", cursor: ""},
		{name: "not base64", cursor: "!!!"},
		{name: "base64 of junk", cursor: b64("hello")},
		{name: "standard base64 with padding", cursor: base64.StdEncoding.EncodeToString([]byte(`{"t":"2024-01-02T03:04:05Z","id":"o1"}`))},
		{name: "valid cursor with padding added", cursor: valid + "=="},
		{name: "truncated valid cursor", cursor: valid[:len(valid)-3]},
		{name: "json null", cursor: b64("null")},
		{name: "json array", cursor: b64("[]")},
		{name: "empty object", cursor: b64("{}")},
		{name: "no time", cursor: b64(`{"id":"o1"}`)},
		{name: "no id", cursor: b64(`{"t":"2024-01-02T03:04:05Z"}`)},
		{name: "empty id", cursor: b64(`{"t":"2024-01-02T03:04:05Z","id":""}`)},
		{name: "zero time", cursor: b64(`{"t":"0001-01-01T00:00:00Z","id":"o1"}`)},
		{name: "time not RFC 3339", cursor: b64(`{"t":"yesterday","id":"o1"}`)},
		{name: "id not a string", cursor: b64(`{"t":"2024-01-02T03:04:05Z","id":7}`)},
		{name: "sql injection", cursor: "' OR 1=1 --"},
		// Ids a database cannot hold never reach one.
		{name: "NUL in the id", cursor: b64(`{"t":"2024-01-02T03:04:05Z","id":"o\u0000"}`)},
		{name: "escape sequence in the id", cursor: b64(`{"t":"2024-01-02T03:04:05Z","id":"\u001b[2J"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := pagination.Parse(url.Values{"cursor": {tt.cursor}})
			checkBadParam(t, "cursor="+tt.cursor, err, "cursor")
		})
	}
}

type item struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"createdAt"`
}

func itemKey(it item) pagination.Cursor { return pagination.Cursor{CreatedAt: it.CreatedAt, ID: it.ID} }

func items(n int) []item {
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	var out []item
	for i := range n {
		out = append(out, item{ID: fmt.Sprintf("i%02d", n-i), CreatedAt: base.Add(-time.Duration(i) * time.Second)})
	}
	return out
}

func TestNewPage(t *testing.T) {
	t.Parallel()
	const limit = 3
	tests := []struct {
		name      string
		rows      []item
		wantItems int
		wantNext  bool
	}{
		{name: "nil rows", rows: nil, wantItems: 0},
		{name: "no rows", rows: []item{}, wantItems: 0},
		{name: "fewer than limit", rows: items(2), wantItems: 2},
		{name: "exactly limit", rows: items(limit), wantItems: limit},
		{name: "limit plus one", rows: items(limit + 1), wantItems: limit, wantNext: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			page := pagination.NewPage(tt.rows, limit, itemKey)
			if len(page.Items) != tt.wantItems {
				t.Errorf("NewPage(%d rows, %d).Items has %d, want %d", len(tt.rows), limit, len(page.Items), tt.wantItems)
			}
			if !slices.Equal(page.Items, tt.rows[:tt.wantItems]) {
				t.Errorf("NewPage(%d rows, %d).Items = %v, want the first %d rows in order", len(tt.rows), limit, page.Items, tt.wantItems)
			}
			raw, err := json.Marshal(page)
			if err != nil {
				t.Fatalf("Marshal(page): %v", err)
			}
			if !tt.wantNext {
				if page.NextCursor != nil {
					t.Errorf("NewPage(%d rows, %d).NextCursor = %q, want nil", len(tt.rows), limit, *page.NextCursor)
				}
				if !strings.Contains(string(raw), `"nextCursor":null`) {
					t.Errorf("page JSON = %s, want nextCursor null", raw)
				}
				if tt.wantItems == 0 && !strings.Contains(string(raw), `"items":[]`) {
					t.Errorf("page JSON = %s, want items [] (never null)", raw)
				}
				return
			}
			if page.NextCursor == nil {
				t.Fatalf("NewPage(%d rows, %d).NextCursor = nil, want a cursor", len(tt.rows), limit)
			}
			// The cursor names the last item returned, not the extra row.
			if want := itemKey(tt.rows[limit-1]).Encode(); *page.NextCursor != want {
				t.Errorf("NewPage(%d rows, %d).NextCursor = %q, want the last item's %q", len(tt.rows), limit, *page.NextCursor, want)
			}
			if !strings.Contains(string(raw), `"nextCursor":"`+*page.NextCursor+`"`) {
				t.Errorf("page JSON = %s, want nextCursor %q", raw, *page.NextCursor)
			}
		})
	}
}

func TestRequestSQL(t *testing.T) {
	t.Parallel()
	after := &pagination.Cursor{CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC), ID: "o9"}
	tests := []struct {
		name      string
		req       pagination.Request
		args      []any
		wantQuery string
		wantArgs  []any
	}{
		{
			name:      "first page",
			req:       pagination.Request{Limit: 20},
			args:      []any{"u1"},
			wantQuery: `SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 21`,
			wantArgs:  []any{"u1"},
		},
		{
			name:      "next page after one arg",
			req:       pagination.Request{Limit: 5, After: after},
			args:      []any{"u1"},
			wantQuery: `SELECT * FROM orders WHERE user_id = $1 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT 6`,
			wantArgs:  []any{"u1", sqldb.NewTime(after.CreatedAt), "o9"},
		},
		{
			name:      "next page after three args",
			req:       pagination.Request{Limit: 100, After: after},
			args:      []any{"u1", "created", 3},
			wantQuery: `SELECT * FROM orders WHERE user_id = $1 AND (created_at, id) < ($4, $5) ORDER BY created_at DESC, id DESC LIMIT 101`,
			wantArgs:  []any{"u1", "created", 3, sqldb.NewTime(after.CreatedAt), "o9"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			query := `SELECT * FROM orders WHERE user_id = $1`
			gotQuery, gotArgs := tt.req.SQL(query, tt.args)
			if gotQuery != tt.wantQuery {
				t.Errorf("SQL(%q, %v) query = %q, want %q", query, tt.args, gotQuery, tt.wantQuery)
			}
			if fmt.Sprint(gotArgs) != fmt.Sprint(tt.wantArgs) {
				t.Errorf("SQL(%q, %v) args = %v, want %v", query, tt.args, gotArgs, tt.wantArgs)
			}
		})
	}
}

// Package pagination implements the keyset ("cursor") pagination every list
// endpoint uses: newest first, ordered by (createdAt desc, id desc), with an
// opaque cursor naming the last item a client has seen. Unlike offsets, a
// cursor stays correct while new rows arrive and costs one index seek
// however deep the client pages.
package pagination

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// Limits from the public API contract.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Cursor is the position after which the next page starts.
type Cursor struct {
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"id"`
}

// Page is one page of a list, as every list endpoint returns it.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"nextCursor"`
}

// Request is a parsed limit and cursor. After is nil for the first page.
type Request struct {
	Limit int
	After *Cursor
}

// Parse reads limit and cursor from a query string. Errors: BadRequest
// naming the parameter.
func Parse(q url.Values) (Request, error) {
	req := Request{Limit: DefaultLimit}
	if s := q.Get("limit"); s != "" || q.Has("limit") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return req, badParam("limit", "must be an integer from 1 to 100")
		}
		req.Limit = n
	}
	if s := q.Get("cursor"); s != "" || q.Has("cursor") {
		c, err := decode(s)
		if err != nil {
			return req, badParam("cursor", "is not a cursor this API returned")
		}
		req.After = &c
	}
	return req, nil
}

func badParam(name, msg string) error {
	return &apperr.Error{
		Kind: apperr.BadRequest, Code: "invalid_query", Detail: name + " " + msg,
		Fields: []apperr.FieldError{{Field: name, Message: msg}},
	}
}

func decode(s string) (Cursor, error) {
	var c Cursor
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, err
	}
	if c.ID == "" || c.CreatedAt.IsZero() {
		return c, errors.New("incomplete cursor")
	}
	// The id goes into a query: only text a database can hold (no NUL, no
	// control characters, UTF-8), as every id the services make is.
	if !utf8.ValidString(c.ID) || strings.ContainsFunc(c.ID, unicode.IsControl) {
		return c, errors.New("cursor id is not text")
	}
	return c, nil
}

// Encode returns the opaque form of c.
func (c Cursor) Encode() string {
	raw, _ := json.Marshal(c) // a time and a string always encode
	return base64.RawURLEncoding.EncodeToString(raw)
}

// NewPage builds a page from rows fetched with limit+1: the extra row, when
// present, only proves there is a next page.
func NewPage[T any](rows []T, limit int, key func(T) Cursor) Page[T] {
	p := Page[T]{Items: rows}
	if len(rows) > limit {
		p.Items = rows[:limit]
		next := key(rows[limit-1]).Encode()
		p.NextCursor = &next
	}
	if p.Items == nil {
		p.Items = []T{}
	}
	return p
}

// SQL completes a query over a table with created_at and id columns whose
// WHERE clause uses the placeholders $1…$len(args): it adds the keyset
// condition, the newest-first order and a limit of one more row than the
// page holds (see NewPage).
func (r Request) SQL(query string, args []any) (string, []any) {
	if r.After != nil {
		query += fmt.Sprintf(` AND (created_at, id) < ($%d, $%d)`, len(args)+1, len(args)+2)
		args = append(args, sqldb.NewTime(r.After.CreatedAt), r.After.ID)
	}
	return query + fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT %d`, r.Limit+1), args
}

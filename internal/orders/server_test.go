package orders

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// testServer is the orders HTTP API over a real database, called with real
// internal tokens.
type testServer struct {
	*testService
	srv     *httptest.Server
	minters map[string]*auth.Minter
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	return newTestServerOn(t, sqldbtest.SQLite)
}

// newTestServerOn is newTestServer on the given database.
func newTestServerOn(t testing.TB, backend sqldbtest.Backend) *testServer {
	t.Helper()
	services := []string{"gateway", "users", "orders", "notifications"}
	kr, err := auth.GenerateKeyring(services)
	if err != nil {
		t.Fatalf("GenerateKeyring() error = %v", err)
	}
	v, err := auth.NewServiceVerifier(Name, TrustedCallers, kr.Bundle, time.Now)
	if err != nil {
		t.Fatalf("NewServiceVerifier() error = %v", err)
	}
	ts := newTestService(t, backend)
	srv := httptest.NewServer(NewServer(ts.Service, v, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	s := &testServer{testService: ts, srv: srv, minters: map[string]*auth.Minter{}}
	for _, name := range services {
		s.minters[name] = auth.NewMinter(name, kr.Identities[name], time.Now)
	}
	return s
}

// token mints an internal token from the service "from" to audience for
// subject ("" when the service acts for itself).
func (s *testServer) token(t testing.TB, from, audience, subject string) string {
	t.Helper()
	tok, err := s.minters[from].Token(audience, subject)
	if err != nil {
		t.Fatalf("Token(%s → %s, %q) error = %v", from, audience, subject, err)
	}
	return tok
}

// asUser is the gateway's token acting for userID.
func (s *testServer) asUser(t testing.TB, userID string) string {
	t.Helper()
	return s.token(t, "gateway", Name, userID)
}

// do sends one request; header may be nil, body "" sends none.
func (s *testServer) do(t *testing.T, method, path, token string, header http.Header, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.srv.URL+path, rd)
	if err != nil {
		t.Fatalf("NewRequest(%s %s) error = %v", method, path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s error = %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, data
}

func keyHeader(key string) http.Header {
	return http.Header{HeaderIdempotencyKey: {key}}
}

// problem decodes a problem+json body, failing the test if it is not one.
func problem(t *testing.T, resp *http.Response, body []byte) httpx.Problem {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != httpx.ContentTypeProblem {
		t.Errorf("Content-Type = %q, want %q (body %s)", ct, httpx.ContentTypeProblem, body)
	}
	var p httpx.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	return p
}

func hasField(p httpx.Problem, field string) bool {
	for _, e := range p.Errors {
		if e.Field == field {
			return true
		}
	}
	return false
}

func TestServerCreateOrder(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	tok := s.asUser(t, "user-1")

	resp, body := s.do(t, "POST", "/orders", tok, keyHeader("key-1"), `{"sku":"A-1","qty":2}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /orders status = %d, want 201 (body %s)", resp.StatusCode, body)
	}
	var o Order
	if err := json.Unmarshal(body, &o); err != nil {
		t.Fatalf("POST /orders body %s: %v", body, err)
	}
	if o.UserID != "user-1" || o.SKU != "A-1" || o.Qty != 2 || o.Status != "created" || o.ID == "" {
		t.Errorf("POST /orders body = %+v, want an order of user-1 for 2 A-1, status created", o)
	}
	if got, want := resp.Header.Get("Location"), "/orders/"+o.ID; got != want {
		t.Errorf("POST /orders Location = %q, want %q", got, want)
	}
	if got := resp.Header.Get(HeaderReplayed); got != "" {
		t.Errorf("POST /orders %s = %q, want absent on the first request", HeaderReplayed, got)
	}

	t.Run("replay", func(t *testing.T) {
		// Another spacing and key order is the same request.
		again, againBody := s.do(t, "POST", "/orders", tok, keyHeader("key-1"), `{ "qty": 2, "sku": "A-1" }`)
		if again.StatusCode != http.StatusCreated {
			t.Fatalf("POST /orders replay status = %d, want 201 (body %s)", again.StatusCode, againBody)
		}
		if got := again.Header.Get(HeaderReplayed); got != "true" {
			t.Errorf("POST /orders replay %s = %q, want %q", HeaderReplayed, got, "true")
		}
		if got, want := again.Header.Get("Location"), resp.Header.Get("Location"); got != want {
			t.Errorf("POST /orders replay Location = %q, want %q", got, want)
		}
		if !bytes.Equal(againBody, body) {
			t.Errorf("POST /orders replay body = %s, want %s", againBody, body)
		}
		if n := s.orderRows(t); n != 1 {
			t.Errorf("order rows = %d, want 1", n)
		}
	})

	t.Run("location is readable", func(t *testing.T) {
		got, gotBody := s.do(t, "GET", resp.Header.Get("Location"), tok, nil, "")
		if got.StatusCode != http.StatusOK || !bytes.Equal(gotBody, body) {
			t.Errorf("GET Location = %d %s, want 200 %s", got.StatusCode, gotBody, body)
		}
	})

	t.Run("same key, another body", func(t *testing.T) {
		got, gotBody := s.do(t, "POST", "/orders", tok, keyHeader("key-1"), `{"sku":"A-1","qty":3}`)
		if got.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("POST /orders reused key status = %d, want 422 (body %s)", got.StatusCode, gotBody)
		}
		if p := problem(t, got, gotBody); p.Code() != "idempotency_key_reused" {
			t.Errorf("POST /orders reused key code = %q, want %q", p.Code(), "idempotency_key_reused")
		}
	})

	t.Run("same key, another user", func(t *testing.T) {
		got, gotBody := s.do(t, "POST", "/orders", s.asUser(t, "user-2"), keyHeader("key-1"), `{"sku":"A-1","qty":2}`)
		if got.StatusCode != http.StatusCreated || got.Header.Get(HeaderReplayed) != "" || bytes.Equal(gotBody, body) {
			t.Errorf("POST /orders as user-2 = %d %s=%q %s, want 201, a new order, not replayed",
				got.StatusCode, HeaderReplayed, got.Header.Get(HeaderReplayed), gotBody)
		}
	})

	t.Run("without key", func(t *testing.T) {
		got, gotBody := s.do(t, "POST", "/orders", tok, nil, `{"sku":"A-1","qty":2}`)
		if got.StatusCode != http.StatusCreated || bytes.Equal(gotBody, body) {
			t.Errorf("POST /orders without key = %d %s, want 201 and a new order", got.StatusCode, gotBody)
		}
	})
}

// TestServerKeyInFlight: a request whose key another request holds is
// answered 409 with the time left on that request's lock: Retry-After in
// whole seconds rounded up, Retry-After-Ms for a caller that waits it out.
func TestServerKeyInFlight(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	n := NewOrder{SKU: "A", Qty: 1}
	// The holder has no deadline: it keeps the key for keyLockMax, 15 s.
	if _, _, err := s.claimKey(t.Context(), "user-1", "key-1", n.hash()); err != nil {
		t.Fatalf("claimKey() error = %v", err)
	}
	tests := []struct {
		since                  time.Duration // since the claim
		wantRetryAfter, wantMs string
	}{
		{0, "15", "15000"},
		{10*time.Second + 300*time.Millisecond, "5", "4700"},
		{14*time.Second + 999*time.Millisecond, "1", "1"},
	}
	var since time.Duration
	for _, tt := range tests {
		s.clock.Advance(tt.since - since)
		since = tt.since
		resp, body := s.do(t, "POST", "/orders", s.asUser(t, "user-1"), keyHeader("key-1"), `{"sku":"A","qty":1}`)
		if resp.StatusCode != http.StatusConflict {
			t.Fatalf("POST /orders %v after the claim: status = %d, want 409 (body %s)", tt.since, resp.StatusCode, body)
		}
		if p := problem(t, resp, body); p.Code() != "idempotency_key_in_flight" {
			t.Errorf("POST /orders %v after the claim: code = %q, want %q", tt.since, p.Code(), "idempotency_key_in_flight")
		}
		if got, gotMs := resp.Header.Get("Retry-After"), resp.Header.Get(HeaderRetryAfterMs); got != tt.wantRetryAfter || gotMs != tt.wantMs {
			t.Errorf("POST /orders %v after the claim: Retry-After %q, %s %q; want %q, %q",
				tt.since, got, HeaderRetryAfterMs, gotMs, tt.wantRetryAfter, tt.wantMs)
		}
	}
}

func TestServerIdempotencyKeyHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		values     []string
		wantStatus int
	}{
		{"1 char", []string{"k"}, http.StatusCreated},
		{"255 chars", []string{strings.Repeat("k", 255)}, http.StatusCreated},
		{"256 chars", []string{strings.Repeat("k", 256)}, http.StatusBadRequest},
		{"empty", []string{""}, http.StatusBadRequest},
		{"sent twice", []string{"a", "b"}, http.StatusBadRequest},
		{"not UTF-8", []string{"k\xff"}, http.StatusBadRequest},
		{"UTF-8 text", []string{"clé-été"}, http.StatusCreated},
	}
	s := newTestServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := "user-" + tt.name
			resp, body := s.do(t, "POST", "/orders", s.asUser(t, user),
				http.Header{HeaderIdempotencyKey: tt.values}, `{"sku":"A","qty":1}`)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("POST /orders with %s key status = %d, want %d (body %s)", tt.name, resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus == http.StatusCreated {
				return
			}
			if p := problem(t, resp, body); !hasField(p, HeaderIdempotencyKey) {
				t.Errorf("POST /orders with %s key errors = %+v, want one naming %s", tt.name, p.Errors, HeaderIdempotencyKey)
			}
			if n := s.count(t, `SELECT count(*) FROM idempotency_keys WHERE user_id = $1`, user); n != 0 {
				t.Errorf("idempotency keys of %s = %d, want 0", user, n)
			}
			if n := s.count(t, `SELECT count(*) FROM orders WHERE user_id = $1`, user); n != 0 {
				t.Errorf("orders of %s = %d, want 0", user, n)
			}
		})
	}
}

func TestServerInvalidBodyDoesNotRecordKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantStatus int
	}{
		{"lowercase sku", `{"sku":"a","qty":1}`, http.StatusUnprocessableEntity},
		{"qty 0", `{"sku":"A","qty":0}`, http.StatusUnprocessableEntity},
		{"qty 1001", `{"sku":"A","qty":1001}`, http.StatusUnprocessableEntity},
		{"malformed json", `{"sku":`, http.StatusBadRequest},
		{"not an object", `[]`, http.StatusBadRequest},
		{"unknown field", `{"sku":"A","qty":1,"userId":"someone-else"}`, http.StatusBadRequest},
		{"wrong type", `{"sku":"A","qty":"1"}`, http.StatusBadRequest},
	}
	s := newTestServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := s.asUser(t, "user-1")
			key := "key-" + tt.name
			resp, body := s.do(t, "POST", "/orders", tok, keyHeader(key), tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("POST /orders %s status = %d, want %d (body %s)", tt.body, resp.StatusCode, tt.wantStatus, body)
			}
			problem(t, resp, body)
			if n := s.count(t, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, key); n != 0 {
				t.Errorf("idempotency key rows after %s = %d, want 0", tt.body, n)
			}
			// The same key with a valid body is a first request, not a reuse.
			resp, body = s.do(t, "POST", "/orders", tok, keyHeader(key), `{"sku":"A","qty":1}`)
			if resp.StatusCode != http.StatusCreated || resp.Header.Get(HeaderReplayed) != "" {
				t.Errorf("POST /orders valid body after %s = %d %s=%q (body %s), want 201 not replayed",
					tt.body, resp.StatusCode, HeaderReplayed, resp.Header.Get(HeaderReplayed), body)
			}
		})
	}
}

func TestServerListOrders(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	mine := s.mustCreate(t, "user-1", "", NewOrder{SKU: "MINE", Qty: 1}).Order
	s.mustCreate(t, "user-2", "", NewOrder{SKU: "THEIRS", Qty: 1})
	tok := s.asUser(t, "user-1")

	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantField  string // for 400s
	}{
		{"default limit", "", http.StatusOK, ""},
		{"limit 1", "?limit=1", http.StatusOK, ""},
		{"limit 100", "?limit=100", http.StatusOK, ""},
		{"limit 0", "?limit=0", http.StatusBadRequest, "limit"},
		{"limit 101", "?limit=101", http.StatusBadRequest, "limit"},
		{"limit -1", "?limit=-1", http.StatusBadRequest, "limit"},
		{"limit not a number", "?limit=ten", http.StatusBadRequest, "limit"},
		{"limit empty", "?limit=", http.StatusBadRequest, "limit"},
		{"cursor garbage", "?cursor=not-a-cursor", http.StatusBadRequest, "cursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := s.do(t, "GET", "/orders"+tt.query, tok, nil, "")
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET /orders%s status = %d, want %d (body %s)", tt.query, resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus != http.StatusOK {
				if p := problem(t, resp, body); !hasField(p, tt.wantField) {
					t.Errorf("GET /orders%s errors = %+v, want one naming %s", tt.query, p.Errors, tt.wantField)
				}
				return
			}
			var page struct {
				Items      []Order `json:"items"`
				NextCursor *string `json:"nextCursor"`
			}
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatalf("GET /orders%s body %s: %v", tt.query, body, err)
			}
			if len(page.Items) != 1 || !sameOrder(page.Items[0], mine) || page.NextCursor != nil {
				t.Errorf("GET /orders%s = %s, want only %s and no next cursor", tt.query, body, mine.ID)
			}
		})
	}
}

func TestServerGetOrder(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	mine := s.mustCreate(t, "user-1", "", NewOrder{SKU: "MINE", Qty: 1}).Order
	theirs := s.mustCreate(t, "user-2", "", NewOrder{SKU: "THEIRS", Qty: 1}).Order

	tests := []struct {
		name       string
		id         string
		wantStatus int
	}{
		{"own order", mine.ID, http.StatusOK},
		{"another user's order", theirs.ID, http.StatusNotFound},
		{"unknown id", "01890000-0000-7000-8000-000000000000", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := s.do(t, "GET", "/orders/"+tt.id, s.asUser(t, "user-1"), nil, "")
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET /orders/%s status = %d, want %d (body %s)", tt.id, resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus == http.StatusNotFound {
				p := problem(t, resp, body)
				if strings.Contains(string(body), "user-2") || strings.Contains(string(body), "THEIRS") {
					t.Errorf("GET /orders/%s 404 body = %s, want nothing about the owner", tt.id, body)
				}
				if p.Status != http.StatusNotFound {
					t.Errorf("GET /orders/%s problem status = %d, want 404", tt.id, p.Status)
				}
			}
		})
	}
}

func TestServerAuth(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	own := s.mustCreate(t, "user-1", "", NewOrder{SKU: "A", Qty: 1}).Order

	routes := []struct {
		method, path, body string
		okStatus           int
	}{
		{"POST", "/orders", `{"sku":"A","qty":1}`, http.StatusCreated},
		{"GET", "/orders", "", http.StatusOK},
		{"GET", "/orders/" + own.ID, "", http.StatusOK},
	}
	tests := []struct {
		name  string
		token func(t *testing.T) string
		// wantStatus 0 means the route's success status.
		wantStatus int
	}{
		{"gateway acting for the user", func(t *testing.T) string { return s.asUser(t, "user-1") }, 0},
		{"gateway acting for itself", func(t *testing.T) string { return s.token(t, "gateway", Name, "") }, http.StatusForbidden},
		{"untrusted caller", func(t *testing.T) string { return s.token(t, "notifications", Name, "user-1") }, http.StatusUnauthorized},
		{"token for another audience", func(t *testing.T) string { return s.token(t, "gateway", "users", "user-1") }, http.StatusUnauthorized},
		{"own identity", func(t *testing.T) string { return s.token(t, "orders", Name, "user-1") }, http.StatusUnauthorized},
		{"no token", func(*testing.T) string { return "" }, http.StatusUnauthorized},
		{"garbage token", func(*testing.T) string { return "not.a.jwt" }, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		for _, rt := range routes {
			t.Run(tt.name+"/"+rt.method+" "+rt.path, func(t *testing.T) {
				want := tt.wantStatus
				if want == 0 {
					want = rt.okStatus
				}
				before := s.orderRows(t)
				resp, body := s.do(t, rt.method, rt.path, tt.token(t), nil, rt.body)
				if resp.StatusCode != want {
					t.Fatalf("%s %s status = %d, want %d (body %s)", rt.method, rt.path, resp.StatusCode, want, body)
				}
				if want == rt.okStatus {
					return
				}
				problem(t, resp, body)
				if want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s 401 WWW-Authenticate = \"\", want a Bearer challenge", rt.method, rt.path)
				}
				if after := s.orderRows(t); after != before {
					t.Errorf("order rows after a refused %s %s = %d, want %d", rt.method, rt.path, after, before)
				}
			})
		}
	}
}

package orders

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// FuzzServer sends the orders API what no client should — any path,
// Idempotency-Key and body, as the gateway passes them on — and checks that
// the answer is never a 5xx: a client's bytes are the client's problem, and
// a 5xx would count against this service in its callers' breakers, taking
// it away from everyone. On PostgreSQL (BLUEPRINT_TEST_POSTGRES_URL) it
// also proves that nothing reaches the database that the database refuses,
// such as a NUL, which SQLite stores without a word.
func FuzzServer(f *testing.F) {
	backend := sqldbtest.SQLite
	if os.Getenv(sqldbtest.EnvPostgresURL) != "" {
		backend = sqldbtest.Postgres
	}
	s := newTestServerOn(f, backend)
	handler := s.srv.Config.Handler
	token := s.asUser(f, "0190f5a4-7c1e-7000-8000-000000000001")
	for _, seed := range []struct {
		method          bool // POST, else GET
		path, key, body string
	}{
		{true, "/orders", "", `{"sku":"A-1","qty":2}`},
		{true, "/orders", "key-1", `{"sku":"A-1","qty":2}`},
		{true, "/orders", "key-1", `{"sku":"B","qty":3}`},
		{true, "/orders", "k\xff", `{"sku":"A","qty":1}`},
		{true, "/orders", "", `{"sku":"A\u0000","qty":1}`},
		{true, "/orders", "", "{\"sku\":\"A\xff\",\"qty\":1}"},
		{false, "/orders/\x00", "", ""},
		{false, "/orders/\xff\xfe", "", ""},
		{false, "/orders/0190f5a4-7c1e-7000-8000-000000000001", "", ""},
		{false, "/orders", "", ""},
		{false, "/orders/me", "", ""},
	} {
		f.Add(seed.method, seed.path, seed.key, seed.body, "")
	}
	f.Add(false, "/orders", "", "", "limit=5&cursor=eyJ0IjoiMjAyNC0wMS0wMlQwMzowNDowNVoiLCJpZCI6Im9cdTAwMDAifQ")
	f.Fuzz(func(t *testing.T, post bool, path, key, body, query string) {
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		req := &http.Request{
			Method: method, URL: &url.URL{Path: path, RawQuery: query},
			Header: http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(body)), Host: "orders",
		}
		if key != "" {
			req.Header.Set(HeaderIdempotencyKey, key)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req.WithContext(t.Context()))
		if rec.Code >= 500 {
			t.Fatalf("%s %q?%q key %q body %q = %d %s, want no 5xx", method, path, query, key, body, rec.Code, rec.Body)
		}
	})
}

package upstream_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// BenchmarkCall is one GET between services on loopback with every policy
// in the way: the bulkhead, the breaker's permit, the retry policy, a
// fresh internal token (cached by the minter), trace propagation and the
// client span.
func BenchmarkCall(b *testing.B) {
	c := newTestCaller(b)
	srv := newServer(b, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"u-1"}`))
	})
	cl := c.client(b, "users", 5*time.Second, srv.URL)
	for b.Loop() {
		if _, err := cl.Do(b.Context(), upstream.Request{Method: http.MethodGet, Path: "/users/u-1", Subject: "u-1"}); err != nil {
			b.Fatal(err)
		}
	}
}

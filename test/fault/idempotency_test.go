//go:build fault

package fault

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// Scenario 12: Idempotency-Key semantics through the gateway, with two
// orders replicas behind it sharing one database (PostgreSQL when
// BLUEPRINT_TEST_POSTGRES_URL is set, else one SQLite file).
func TestIdempotencyKeys(t *testing.T) {
	cfg := localcluster.Config{Orders: 2}
	backend := "SQLite"
	if pg := os.Getenv(sqldbtest.EnvPostgresURL); pg != "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.PostgresURL, cfg.DatabasePrefix, backend = pg, "bp_fault_"+hex.EncodeToString(b), "PostgreSQL"
	}
	s := start(t, cfg)
	c := s.client
	gw := c.Gateways[0] + "/orders"
	alice, bob := c.SignUp(t, 0), c.SignUp(t, 1)
	orders := func() int {
		var n int
		if err := s.src.Orders.QueryRow(`SELECT count(*) FROM orders`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	idOf := func(body []byte) string {
		var o struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(body, &o)
		return o.ID
	}
	requests := 0
	post := func(token, key, body string) (int, []byte) {
		requests++
		return c.Post(gw, token, key, body)
	}

	// The same key and body five times: one order, five identical answers.
	var first []byte
	for i := range 5 {
		status, body := post(alice, "key-same", `{"sku":"IDEM","qty":2}`)
		if status != http.StatusCreated {
			t.Fatalf("attempt %d: %d %s", i+1, status, body)
		}
		if first == nil {
			first = body
		} else if string(body) != string(first) {
			t.Errorf("attempt %d answered %s, want the first answer %s", i+1, body, first)
		}
	}
	if n := orders(); n != 1 {
		t.Errorf("orders after five identical requests = %d, want 1", n)
	}

	// The same key with another body is a client bug.
	if status, body := post(alice, "key-same", `{"sku":"IDEM","qty":3}`); status != http.StatusUnprocessableEntity {
		t.Errorf("same key, other body: %d %s, want 422", status, body)
	}

	// Twenty at once with one key, spread over both replicas: one order;
	// the others get it replayed or 409 while it is in progress.
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses, ids := map[int]int{}, map[string]bool{}
	for range 20 {
		wg.Go(func() {
			status, body := c.Post(gw, alice, "key-race", `{"sku":"RACE","qty":1}`)
			mu.Lock()
			defer mu.Unlock()
			statuses[status]++
			if status == http.StatusCreated {
				ids[idOf(body)] = true
			}
		})
	}
	wg.Wait()
	requests += 20
	if statuses[http.StatusCreated]+statuses[http.StatusConflict] != 20 || len(ids) != 1 {
		t.Errorf("20 concurrent requests with one key: statuses %v, order ids %v; want 201 or 409 and one order", statuses, ids)
	}
	if n := orders(); n != 2 {
		t.Errorf("orders after the race = %d, want 2", n)
	}

	// A key over 255 characters is refused.
	if status, body := post(alice, strings.Repeat("k", 256), `{"sku":"LONG","qty":1}`); status != http.StatusBadRequest {
		t.Errorf("256-character key: %d %s, want 400", status, body)
	}

	// Keys are per user: Bob's "key-same" is his own order.
	status, body := post(bob, "key-same", `{"sku":"IDEM","qty":2}`)
	if status != http.StatusCreated || idOf(body) == idOf(first) {
		t.Errorf("another user's same key: %d %s, want a new order (not %s)", status, body, idOf(first))
	}
	if n := orders(); n != 3 {
		t.Errorf("orders at the end = %d, want 3", n)
	}
	accepted := map[string]string{idOf(first): "key-same", idOf(body): "key-same"}
	for id := range ids {
		accepted[id] = "key-race"
	}
	rep, took := harness.Settle(t, s.src, accepted, settleTimeout)
	record(t, row{Scenario: "12. idempotency keys, 2 orders replicas on " + backend, Requests: requests, Accepted: len(accepted),
		FirstTry: 1, Report: rep, Recovery: took,
		Note: "×5 → 1 order, identical answers; other body → 422; 20 at once → " + itoa(statuses[http.StatusCreated]) + "×201, " + itoa(statuses[http.StatusConflict]) + "×409, 1 order; 256 chars → 400; per user"})
}

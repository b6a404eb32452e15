//go:build security

package security

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

var (
	_ = addClass("other users' data", attackOtherUsersData)
	_ = addClass("input", attackInput)
)

// attackOtherUsersData tries to read or write what belongs to another user.
func attackOtherUsersData(t *testing.T, s *system) {
	alice, mallory := newClient(t, s), newClient(t, s)
	aliceID, _ := alice.signUp("alice password 1")
	mallory.signUp("mallory password 1")
	order := alice.order("alice-first")

	expectRefused(t, s, "another user's order by id", mallory.send("GET", "/orders/"+order, ""), http.StatusNotFound)
	a := mallory.send("GET", "/orders", "")
	if a.status != http.StatusOK || strings.Contains(string(a.body), order) {
		t.Errorf("mallory's GET /orders = %v %s, want 200 without alice's order", a, a.body)
	}
	record(t, s, "another user's orders in one's list", "200 without them", fmt.Sprintf("%v, %t", a, !strings.Contains(string(a.body), order)), a.took)
	expectRefused(t, s, "an order for another user (userId in the body)", mallory.send("POST", "/orders",
		fmt.Sprintf(`{"sku":"SEC-1","qty":1,"userId":%q}`, aliceID)), http.StatusBadRequest)
	expectRefused(t, s, "a plan chosen at registration", newClient(t, s).send("POST", "/auth/register",
		`{"email":"plan@example.com","password":"password 1234","name":"P","plan":"enterprise"}`), http.StatusBadRequest)
	// The same Idempotency-Key is another user's own: no replay of alice's order.
	reused := mallory.send("POST", "/orders", `{"sku":"SEC-1","qty":1}`, "Idempotency-Key", "alice-first")
	if reused.status != http.StatusCreated || strings.Contains(string(reused.body), order) {
		t.Errorf("mallory reusing alice's Idempotency-Key = %v %s, want a new order of mallory's", reused, reused.body)
	}
	record(t, s, "another user's Idempotency-Key", "201, a new order", reused.String(), reused.took)
}

// attackInput sends what no client should: bytes a database cannot store,
// paths that try to escape, bodies too big or too deep. Every answer must be
// a 4xx: a 5xx would count against the breaker of a service that did
// nothing wrong and take it away from other users.
func attackInput(t *testing.T, s *system) {
	c := newClient(t, s)
	c.signUp("input password 1")
	cursorWith := func(id string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"t":"2024-01-02T03:04:05Z","id":%s}`, id)))
	}
	deep := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000) // under the 64 KiB cap
	anon := newClient(t, s)
	for _, tc := range []struct {
		name         string
		who          *client
		method, path string
		body         string
		headers      []string
		want         []int
	}{
		{"NUL in a login email", anon, "POST", "/auth/login", `{"email":"a\u0000@example.com","password":"password 1234"}`, nil, []int{400}},
		{"NUL in a registration name", anon, "POST", "/auth/register", `{"email":"nul@example.com","password":"password 1234","name":"A\u0000"}`, nil, []int{400}},
		{"not UTF-8 in a login email", anon, "POST", "/auth/login", "{\"email\":\"a\xff@example.com\",\"password\":\"password 1234\"}", nil, []int{400}},
		{"a terminal escape in a name", anon, "POST", "/auth/register", `{"email":"esc@example.com","password":"password 1234","name":"A\u001b[2J"}`, nil, []int{422}},
		{"a right-to-left override in a name", anon, "POST", "/auth/register", `{"email":"rtl@example.com","password":"password 1234","name":"A\u202egnp"}`, nil, []int{422}},
		{"NUL in an order id", c, "GET", "/orders/%00", "", nil, []int{404}},
		{"not UTF-8 in an order id", c, "GET", "/orders/%ff%fe", "", nil, []int{404}},
		{"NUL in a cursor", c, "GET", "/orders?cursor=" + cursorWith(`"o\u0000"`), "", nil, []int{400}},
		{"not UTF-8 in an Idempotency-Key", c, "POST", "/orders", `{"sku":"SEC-1","qty":1}`, []string{"Idempotency-Key", "k\xff"}, []int{400}},
		{"an Idempotency-Key of 256 characters", c, "POST", "/orders", `{"sku":"SEC-1","qty":1}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, []int{400}},
		{"a path up and out", c, "GET", "/orders/..%2f..%2fusers%2fme", "", nil, []int{404}},
		{"a dot-dot path", c, "GET", "/orders/../users/me", "", nil, []int{404}},
		{"a double slash", c, "GET", "//orders", "", nil, []int{404}},
		{"an internal route through the gateway", c, "POST", "/users/authenticate", `{"email":"a@example.com","password":"password 1234"}`, nil, []int{404, 405}},
		{"a body over 64 KiB", anon, "POST", "/auth/register", `{"email":"big@example.com","password":"password 1234","name":"` + strings.Repeat("x", 70<<10) + `"}`, nil, []int{413}},
		{"JSON nested 10,000 deep", anon, "POST", "/auth/register", deep, nil, []int{400}},
		{"a wrong JSON type", c, "POST", "/orders", `{"sku":"SEC-1","qty":"1"}`, nil, []int{400}},
		{"two JSON objects", c, "POST", "/orders", `{"sku":"SEC-1","qty":1}{"sku":"SEC-2","qty":1}`, nil, []int{400}},
		{"a quantity out of range", c, "POST", "/orders", `{"sku":"SEC-1","qty":100000}`, nil, []int{422}},
	} {
		expectRefused(t, s, tc.name, tc.who.send(tc.method, tc.path, tc.body, tc.headers...), tc.want...)
	}

	// The same key with another body must not replay the first order.
	c.order("input-key")
	expectRefused(t, s, "an Idempotency-Key reused with another body", c.send("POST", "/orders", `{"sku":"SEC-2","qty":2}`,
		"Idempotency-Key", "input-key"), http.StatusUnprocessableEntity)

	// Still a working account after all that.
	if a := c.send("GET", "/orders?limit=1", ""); a.status != http.StatusOK {
		t.Errorf("GET /orders after the attacks = %v %s", a, a.body)
	}
}

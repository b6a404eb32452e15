package boot

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/test/harness"
)

// Flow walks the public API through the gateway as a new user does:
// register and log in, read the profile, place an order (201 and its
// Location), read the order back, then wait until exactly one notification
// for it is listed.
func Flow(t testing.TB, gateway string) {
	t.Helper()
	c := harness.NewClient(1, gateway)
	token := c.SignUp(t, 0)

	if status, body := c.Get(gateway+"/users/me", token); status != http.StatusOK {
		t.Fatalf("GET /users/me: %d %s", status, body)
	}

	req, err := http.NewRequest(http.MethodPost, gateway+"/orders", strings.NewReader(`{"sku":"BLUEPRINT-MUG","qty":2}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "boot-flow-order")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("POST /orders: %v", err)
	}
	var order struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&order)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil || order.ID == "" {
		t.Fatalf("POST /orders: %d, id %q (%v)", resp.StatusCode, order.ID, err)
	}
	location := resp.Header.Get("Location")
	if location != "/orders/"+order.ID {
		t.Fatalf("POST /orders: Location %q, want /orders/%s", location, order.ID)
	}

	status, body := c.Get(gateway+location, token)
	var got struct {
		ID string `json:"id"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &got) != nil || got.ID != order.ID {
		t.Fatalf("GET %s: %d %s", location, status, body)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body := c.Get(gateway+"/notifications", token)
		var list struct {
			Items []struct {
				OrderID string `json:"orderId"`
			} `json:"items"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &list) != nil {
			t.Fatalf("GET /notifications: %d %s", status, body)
		}
		n := 0
		for _, item := range list.Items {
			if item.OrderID == order.ID {
				n++
			}
		}
		switch {
		case n == 1:
			return
		case n > 1:
			t.Fatalf("order %s notified %d times", order.ID, n)
		case time.Now().After(deadline):
			t.Fatalf("no notification for order %s after 30 s", order.ID)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

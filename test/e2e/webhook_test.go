package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWebhookChannel: with NOTIFY_WEBHOOK_URL set, an order's notification
// reaches an HTTP receiver as a signed POST in the order's trace, and is
// listed on the webhook channel.
func TestWebhookChannel(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	type received struct {
		header http.Header
		body   []byte
	}
	var (
		mu   sync.Mutex
		got  []received
		recv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			got = append(got, received{r.Header.Clone(), body})
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}))
	)
	t.Cleanup(recv.Close)

	sys := startInProcess(t, t.TempDir(), map[string]string{
		"NOTIFY_WEBHOOK_URL": recv.URL + "/hooks", "NOTIFY_WEBHOOK_SECRET": secret,
	})
	c := newClient(t, sys.url("gateway"))
	email := uniqueEmail("Webhook")
	u := c.signUp(email, "correct horse battery")
	var o order
	c.do("POST", "/orders", map[string]any{"sku": "BLUEPRINT-MUG", "qty": 1}).expect(t, http.StatusCreated).json(t, &o)

	ns := c.notificationsFor(o.ID, 15*time.Second)
	if len(ns) != 1 || ns[0].Channel != "webhook" || ns[0].Status != "sent" {
		t.Fatalf("notifications for order %s = %+v, want one sent on the webhook channel", o.ID, ns)
	}
	mu.Lock()
	reqs := append([]received(nil), got...)
	mu.Unlock()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	r := reqs[0]

	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(r.header.Get("webhook-id") + "." + r.header.Get("webhook-timestamp") + "."))
	mac.Write(r.body)
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.header.Get("webhook-signature") != want {
		t.Errorf("webhook-signature = %q, want %q", r.header.Get("webhook-signature"), want)
	}
	if id := r.header.Get("webhook-id"); id == "" || r.header.Get("Idempotency-Key") != id {
		t.Errorf("webhook-id %q, Idempotency-Key %q: want the same event id", id, r.header.Get("Idempotency-Key"))
	}
	if ua := r.header.Get("User-Agent"); !strings.HasPrefix(ua, "blueprint-notifications/") {
		t.Errorf("User-Agent = %q, want blueprint-notifications/<version>", ua)
	}
	var p struct {
		Type string `json:"type"`
		Data struct {
			OrderID string `json:"orderId"`
			UserID  string `json:"userId"`
			To      string `json:"to"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if p.Type != "blueprint.notification.v1" || p.Data.OrderID != o.ID || p.Data.UserID != u.ID || p.Data.To != u.Email {
		t.Errorf("payload = %s, want order %s of %s to %s", r.body, o.ID, u.ID, u.Email)
	}

	// The receiver is called in the trace of the request that made the order.
	var orderTrace string
	for _, l := range sys.logs.records("request") {
		if l["service"] == "gateway" && l["route"] == "POST /orders" {
			orderTrace, _ = l["trace_id"].(string)
		}
	}
	if orderTrace == "" || !strings.Contains(r.header.Get("Traceparent"), orderTrace) {
		t.Errorf("traceparent = %q, want the trace of POST /orders %q", r.header.Get("Traceparent"), orderTrace)
	}
}

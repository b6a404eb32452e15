package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// TestServicesStopAtTheCallersDeadline: a service called with
// Request-Timeout stops working for the call when that time is up — here
// users, made far slower than that by a chaos rule, answers after the
// caller's 300 ms instead of after the rule's 20 s, although its caller is
// still connected and waiting. The gateway, whose callers are clients,
// ignores the header: a client's 1 ms does not stop it waiting for users'
// 100 ms.
func TestServicesStopAtTheCallersDeadline(t *testing.T) {
	t.Parallel()
	const latency = 20 * time.Second
	keysDir, kr := keysOnDisk(t)
	sys := startInProcess(t, t.TempDir(), map[string]string{"BLUEPRINT_KEYS_DIR": keysDir, "BLUEPRINT_CHAOS": "true"})
	c := newClient(t, sys.url("gateway"))
	u := c.signUp(uniqueEmail("deadline"), "deadline-password")

	slowUsers := func(d time.Duration) {
		t.Helper()
		rule, _ := json.Marshal(map[string]any{"route": "GET /users/{id}", "latencyMs": d.Milliseconds()})
		resp, err := http.Post(sys.url("users_ops")+"/chaos", "application/json", bytes.NewReader(rule))
		if err != nil {
			t.Fatalf("set chaos rule: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("set chaos rule = %d, want 200", resp.StatusCode)
		}
	}

	slowUsers(100 * time.Millisecond)
	c.do("GET", "/users/me", nil, "Request-Timeout", "1").expect(t, http.StatusOK)

	slowUsers(latency)

	// Call users as the gateway does, with a client that would wait for
	// half the latency: only the header can end the call sooner.
	token, err := auth.NewMinter("gateway", kr.Identities["gateway"], time.Now).Token("users", u.ID)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, sys.url("users")+"/users/"+u.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Request-Timeout", "300")
	resp, err := (&http.Client{Timeout: latency / 2}).Do(req)
	if err != nil {
		t.Fatalf("GET /users/{id} with Request-Timeout 300: %v, want an answer once the 300 ms are up", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Errorf("GET /users/{id} with Request-Timeout 300 = %d, want the failure of work cut short", resp.StatusCode)
	}
	var cut bool
	for _, rec := range sys.logs.records("request failed") {
		if rec["service"] == "users" && strings.Contains(rec["error"].(string), "context deadline exceeded") {
			cut = true
		}
	}
	if !cut {
		t.Errorf("no users log line of work ended by its deadline; log:\n%s", sys.logs.text())
	}
}

//go:build security

package security

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// client talks to the gateway from an address of its own on the loopback
// network (127.0.1.x): per-IP limits see each client as a different host,
// so one case's attacker never spends another case's budget.
type client struct {
	t     *testing.T
	base  string
	ip    string
	http  *http.Client
	token string
}

var lastIP atomic.Int32

// newClient returns a client at a loopback address no other client uses.
func newClient(t *testing.T, s *system) *client {
	t.Helper()
	n := lastIP.Add(1)
	ip := fmt.Sprintf("127.0.%d.%d", 1+n/250, 1+n%250)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &client{t: t, base: s.gateway, ip: ip, http: &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64},
	}}
}

// answer is what a request got, and how long it took.
type answer struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
	err    error
}

func (a answer) String() string {
	if a.err != nil {
		return "no answer: " + a.err.Error()
	}
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(a.body, &p)
	if p.Code != "" {
		return fmt.Sprintf("%d %s", a.status, p.Code)
	}
	return fmt.Sprint(a.status)
}

// send makes one request with the client's token (if any) and the given
// headers, name-value pairs. A raw path is sent as written, unescaped.
func (c *client) send(method, path, body string, headers ...string) answer {
	req, err := http.NewRequestWithContext(context.Background(), method, c.base+"/", strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.URL.Opaque = strings.TrimPrefix(c.base, "http:") + path // exactly the bytes given
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: data, took: time.Since(start)}
}

// secrets collects every password and token the suite used, to look for
// them in the logs at the end.
var secrets struct {
	sync.Mutex
	values []string
}

func remember(values ...string) {
	secrets.Lock()
	defer secrets.Unlock()
	secrets.values = append(secrets.values, values...)
}

var userSeq atomic.Int64

// signUp registers a new user and logs the client in as them; it returns
// the user's id and email.
func (c *client) signUp(password string) (id, email string) {
	c.t.Helper()
	email = fmt.Sprintf("sec-%d-%d@example.com", time.Now().UnixNano(), userSeq.Add(1))
	remember(password)
	reg := c.send("POST", "/auth/register", fmt.Sprintf(`{"email":%q,"password":%q,"name":"Sec"}`, email, password))
	if reg.status != http.StatusCreated {
		c.t.Fatalf("register: %v %s", reg, reg.body)
	}
	var u struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(reg.body, &u); err != nil {
		c.t.Fatal(err)
	}
	c.logIn(email, password)
	return u.ID, email
}

func (c *client) logIn(email, password string) answer {
	c.t.Helper()
	c.token = ""
	a := c.send("POST", "/auth/login", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password))
	if a.status == http.StatusOK {
		var tok struct {
			AccessToken string `json:"accessToken"`
		}
		if err := json.Unmarshal(a.body, &tok); err != nil {
			c.t.Fatal(err)
		}
		c.token = tok.AccessToken
		remember(tok.AccessToken)
	}
	return a
}

// order places an order and returns its id.
func (c *client) order(key string) string {
	c.t.Helper()
	a := c.send("POST", "/orders", `{"sku":"SEC-1","qty":1}`, "Idempotency-Key", key)
	if a.status != http.StatusCreated {
		c.t.Fatalf("POST /orders: %v %s", a, a.body)
	}
	var o struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(a.body, &o); err != nil {
		c.t.Fatal(err)
	}
	return o.ID
}

// expectRefused checks that an attack got one of the wanted statuses,
// quickly, and records the case.
func expectRefused(t *testing.T, s *system, name string, a answer, want ...int) {
	t.Helper()
	expected := strings.Trim(strings.ReplaceAll(fmt.Sprint(want), " ", " or "), "[]")
	record(t, s, name, expected, a.String(), a.took)
	ok := a.err == nil
	if ok {
		ok = false
		for _, w := range want {
			ok = ok || a.status == w
		}
	}
	if !ok {
		t.Errorf("%s: got %v (%s), want %s", name, a, a.body, expected)
	}
	if a.took > refusedFast {
		t.Errorf("%s: answered after %v, want a refusal within %v", name, a.took, refusedFast)
	}
}

// Package e2e tests Blueprint the way its users meet it: the real program
// (app.Run, or the built binary in separate processes) on loopback ports and
// temp data dirs, driven through the public API.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/app"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// serviceNames are the four targets.
var serviceNames = []string{"gateway", "users", "orders", "notifications"}

// logSink collects a process's JSON log lines and signals the ready line.
type logSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []map[string]any
	raw   []string
	ready chan map[string]any
	once  sync.Once
}

func newLogSink() *logSink { return &logSink{ready: make(chan map[string]any, 1)} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	for {
		line, err := s.buf.ReadString('\n')
		if err != nil {
			s.buf.WriteString(line) // incomplete: keep for the next write
			break
		}
		s.raw = append(s.raw, line)
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		s.lines = append(s.lines, rec)
		if rec["msg"] == "blueprint ready" {
			s.once.Do(func() { s.ready <- rec })
		}
	}
	return len(p), nil
}

// text returns everything logged so far.
func (s *logSink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.raw, "")
}

// records returns the parsed lines whose msg is msg.
func (s *logSink) records(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range s.lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// waitReady waits for the ready line of a process.
func (s *logSink) waitReady(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	select {
	case rec := <-s.ready:
		return rec
	case <-time.After(timeout):
		t.Fatalf("no ready line after %s; log:\n%s", timeout, s.text())
		return nil
	}
}

// inProcess is a `blueprint run` running inside the test through app.Run.
type inProcess struct {
	logs   *logSink
	ready  map[string]any
	cancel context.CancelFunc
	done   chan error
}

// startInProcess runs app.Run with every listener on a free loopback port.
// env adds or overrides variables; args are extra flags.
func startInProcess(t *testing.T, dataDir string, env map[string]string, args ...string) *inProcess {
	t.Helper()
	base := []string{"run", "--data-dir", dataDir, "--log-format", "json"}
	for _, s := range serviceNames {
		base = append(base, "--"+s+"-addr", "127.0.0.1:0", "--"+s+"-ops-addr", "127.0.0.1:0")
	}
	base = append(base, "--console-addr", "127.0.0.1:0")
	getenv := func(k string) string { return env[k] }
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{logs: newLogSink(), cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- app.Run(ctx, append(base, args...), getenv, p.logs, io.Discard) }() // ends on cancel; stop waits
	select {
	case p.ready = <-p.logs.ready:
	case err := <-p.done:
		cancel()
		t.Fatalf("app.Run returned before ready: %v\nlog:\n%s", err, p.logs.text())
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("not ready after 30s; log:\n%s", p.logs.text())
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// url returns an address from the ready line ("gateway", "orders_ops", …).
func (p *inProcess) url(name string) string {
	s, _ := p.ready[name].(string)
	return s
}

// stop cancels the run and waits for a clean exit. Safe to call twice.
func (p *inProcess) stop(t *testing.T) {
	t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("app.Run after shutdown = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("app.Run did not return 30s after cancel")
	}
}

// client speaks to the public API as one user.
type client struct {
	t     *testing.T
	base  string
	token string
	http  *http.Client
}

func newClient(t *testing.T, base string) *client {
	return &client{t: t, base: base, http: &http.Client{Timeout: 30 * time.Second}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// problem is the RFC 9457 body of an error response.
type problem struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Status  int    `json:"status"`
	Detail  string `json:"detail"`
	TraceID string `json:"traceId"`
	Errors  []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

func (r response) problem(t *testing.T) problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (status %d, body %s)", ct, r.status, r.body)
	}
	var p problem
	r.json(t, &p)
	if p.Status != r.status {
		t.Errorf("problem status = %d, want the response status %d", p.Status, r.status)
	}
	if len(p.TraceID) != 32 {
		t.Errorf("problem traceId = %q, want 32 hex digits", p.TraceID)
	}
	return p
}

// do sends a request; body is JSON-encoded unless it is a string or []byte.
func (c *client) do(method, path string, body any, headers ...string) response {
	c.t.Helper()
	resp, err := c.send(context.Background(), method, path, body, headers...)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// send is do returning its error, for goroutines, which cannot fail the
// test; ctx reaches the client's transport.
func (c *client) send(ctx context.Context, method, path string, body any, headers ...string) (response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("read body: %w", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// expect fails the test unless the response has the status.
func (r response) expect(t *testing.T, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("status = %d, want %d; body: %s", r.status, want, r.body)
	}
	return r
}

type user struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	Name      string `json:"name"`
	Plan      string `json:"plan"`
	CreatedAt string `json:"createdAt"`
}

type order struct {
	ID        string `json:"id"`
	UserID    string `json:"userId"`
	SKU       string `json:"sku"`
	Qty       int    `json:"qty"`
	Status    string `json:"status"`
	CreatedAt string `json:"createdAt"`
}

type notification struct {
	ID        string  `json:"id"`
	OrderID   string  `json:"orderId"`
	UserID    string  `json:"userId"`
	Channel   string  `json:"channel"`
	Status    string  `json:"status"`
	CreatedAt string  `json:"createdAt"`
	SentAt    *string `json:"sentAt"`
}

type page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"nextCursor"`
}

var emailSeq struct {
	sync.Mutex
	n int
}

// uniqueEmail returns an address no other test uses.
func uniqueEmail(prefix string) string {
	emailSeq.Lock()
	defer emailSeq.Unlock()
	emailSeq.n++
	return fmt.Sprintf("%s-%d-%d@example.com", prefix, time.Now().UnixNano(), emailSeq.n)
}

// signUp registers a user and logs in; the client then acts as that user.
func (c *client) signUp(email, password string) user {
	c.t.Helper()
	var u user
	c.do("POST", "/auth/register", map[string]any{"email": email, "password": password, "name": "Test User"}).
		expect(c.t, http.StatusCreated).json(c.t, &u)
	c.logIn(email, password)
	return u
}

func (c *client) logIn(email, password string) {
	c.t.Helper()
	var tok struct {
		AccessToken string `json:"accessToken"`
		TokenType   string `json:"tokenType"`
		ExpiresIn   int    `json:"expiresIn"`
	}
	c.do("POST", "/auth/login", map[string]any{"email": email, "password": password}).
		expect(c.t, http.StatusOK).json(c.t, &tok)
	if tok.TokenType != "Bearer" || tok.ExpiresIn != 900 || tok.AccessToken == "" {
		c.t.Fatalf("login = %+v, want a Bearer token for 900 s", tok)
	}
	c.token = tok.AccessToken
}

// notificationsFor polls until the order has at least one notification or
// the timeout passes, then returns every notification of the order.
func (c *client) notificationsFor(orderID string, timeout time.Duration) []notification {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var p page[notification]
		c.do("GET", "/notifications?limit=100", nil).expect(c.t, http.StatusOK).json(c.t, &p)
		var found []notification
		for _, n := range p.Items {
			if n.OrderID == orderID {
				found = append(found, n)
			}
		}
		if len(found) > 0 || time.Now().After(deadline) {
			return found
		}
		<-tick.C
	}
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// status returns the HTTP status of a GET, or 0 when the request fails.
func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// keysOnDisk generates every service's keys into a temp dir, for a system
// started with BLUEPRINT_KEYS_DIR: the test can then sign tokens with the
// system's real keys (expired ones, wrong audiences, internal tokens where
// public ones belong).
func keysOnDisk(t *testing.T) (string, *auth.Keyring) {
	t.Helper()
	dir := t.TempDir()
	kr, err := auth.GenerateKeyring(serviceNames)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteKeyring(dir, kr); err != nil {
		t.Fatal(err)
	}
	return dir, kr
}

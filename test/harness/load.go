package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Client talks to one or more gateways, turn by turn.
type Client struct {
	Gateways []string
	HTTP     *http.Client
}

// NewClient returns a client with room for concurrency connections per gateway.
func NewClient(concurrency int, gateways ...string) *Client {
	return &Client{Gateways: gateways, HTTP: &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: concurrency},
	}}
}

// Post sends a JSON body; status 0 means the request got no answer.
func (c *Client) Post(url, token, key, body string) (int, []byte) {
	return c.do(http.MethodPost, url, token, key, strings.NewReader(body))
}

// Get sends a GET; status 0 means the request got no answer.
func (c *Client) Get(url, token string) (int, []byte) {
	return c.do(http.MethodGet, url, token, "", nil)
}

func (c *Client) do(method, url, token, key string, body io.Reader) (int, []byte) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, []byte(err.Error())
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// SignUp registers a fresh user through gateway i and returns its access token.
func (c *Client) SignUp(t testing.TB, i int) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	email := fmt.Sprintf("load-%d-%s@example.com", i, hex.EncodeToString(b))
	gw := c.Gateways[i%len(c.Gateways)]
	reg := fmt.Sprintf(`{"email":%q,"password":"load-password","name":"Load %d"}`, email, i)
	if status, body := c.Post(gw+"/auth/register", "", "", reg); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	return c.LogIn(t, gw, email, "load-password")
}

// LogIn logs the user with email in through gateway gw and returns its
// access token.
func (c *Client) LogIn(t testing.TB, gw, email, password string) string {
	t.Helper()
	status, body := c.Post(gw+"/auth/login", "", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password))
	if status != http.StatusOK {
		t.Fatalf("login %s: %d %s", email, status, body)
	}
	var tok struct {
		AccessToken string `json:"accessToken"`
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// Load describes a run of order POSTs.
type Load struct {
	// Orders in all, placed by Clients users at once.
	Orders, Clients int
	// Rate caps the POSTs started per second over all clients; 0 means as
	// fast as the clients go.
	Rate float64
	// Patience is how long a client keeps retrying one order.
	Patience time.Duration
}

// Result is what the clients saw.
type Result struct {
	// Accepted maps every order answered 201 to its Idempotency-Key.
	Accepted map[string]string
	// FirstTry counts orders accepted by their first request.
	FirstTry int
	// Requests counts every POST sent, retries included.
	Requests int
	// Refused tallies the answers other than 201 that clients got, by
	// status and problem code ("503 upstream_unavailable"; "0" for no
	// answer at all): what a client without retries would have seen.
	Refused map[string]int
	// GaveUp lists the keys of orders never accepted.
	GaveUp []string
	// LastAccepted is when the last 201 arrived.
	Started, LastAccepted time.Time
	Duration              time.Duration
	// Slowest is the longest any one request took to be answered.
	Slowest time.Duration
}

// Run places the load and returns when every order is accepted or given up.
// Accepted counts 201s as they come (progress for a test that waits to
// inject a fault at a point of the run).
func (c *Client) Run(ctx context.Context, t testing.TB, l Load, accepted *atomic.Int64) Result {
	t.Helper()
	l.Clients = max(1, l.Clients)
	if l.Patience == 0 {
		l.Patience = time.Minute
	}
	tokens := make([]string, l.Clients)
	for i := range tokens {
		tokens[i] = c.SignUp(t, i)
	}
	var tick <-chan time.Time
	if l.Rate > 0 {
		tk := time.NewTicker(time.Duration(float64(time.Second) / l.Rate))
		defer tk.Stop()
		tick = tk.C
	}
	jobs := make(chan int)
	go func() { // ends when every order has been handed out
		defer close(jobs)
		for n := range l.Orders {
			if tick != nil {
				select {
				case <-tick:
				case <-ctx.Done():
					return
				}
			}
			select {
			case jobs <- n:
			case <-ctx.Done():
				return
			}
		}
	}()

	res := Result{Accepted: map[string]string{}, Refused: map[string]int{}, Started: time.Now()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	runID := make([]byte, 4)
	_, _ = rand.Read(runID)
	for i := range l.Clients {
		wg.Go(func() {
			for n := range jobs {
				key := fmt.Sprintf("load-%s-%d", hex.EncodeToString(runID), n)
				body := fmt.Sprintf(`{"sku":"LOAD-%d","qty":%d}`, i, n%10+1)
				id, tries, slowest, refused := c.place(ctx, n, tokens[i], key, body, l.Patience)
				mu.Lock()
				res.Requests += tries
				for _, r := range refused {
					res.Refused[r]++
				}
				res.Slowest = max(res.Slowest, slowest)
				if id == "" {
					res.GaveUp = append(res.GaveUp, key)
				} else {
					res.Accepted[id] = key
					res.LastAccepted = time.Now()
					if tries == 1 {
						res.FirstTry++
					}
				}
				mu.Unlock()
				if id != "" && accepted != nil {
					accepted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	res.Duration = time.Since(res.Started)
	return res
}

// place posts one order until it is accepted, with the same key each time
// and a growing pause; it returns the order id ("" after giving up), the
// number of requests sent, the longest one and the answers refused.
func (c *Client) place(ctx context.Context, turn int, token, key, body string, patience time.Duration) (string, int, time.Duration, []string) {
	deadline := time.Now().Add(patience)
	var slowest time.Duration
	var refused []string
	for tries := 1; ; tries++ {
		sent := time.Now()
		status, resp := c.Post(c.Gateways[(turn+tries)%len(c.Gateways)]+"/orders", token, key, body)
		slowest = max(slowest, time.Since(sent))
		if status == http.StatusCreated {
			var o struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(resp, &o) == nil && o.ID != "" {
				return o.ID, tries, slowest, refused
			}
		}
		refused = append(refused, refusal(status, resp))
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", tries, slowest, refused
		}
		time.Sleep(min(time.Duration(tries)*50*time.Millisecond, time.Second))
	}
}

// refusal names an answer other than 201: its status and, for a problem,
// its code.
func refusal(status int, body []byte) string {
	var p struct{ Type string }
	if status == 0 || json.Unmarshal(body, &p) != nil || p.Type == "" {
		return strconv.Itoa(status)
	}
	return strconv.Itoa(status) + " " + strings.TrimPrefix(p.Type, "urn:blueprint:problem:")
}

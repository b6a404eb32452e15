package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"golang.org/x/sync/errgroup"
)

// system is the public API of the system under load, for what a bench does
// besides the load itself: accounts before, notifications after.
type system struct {
	base string
	http *http.Client
}

// account is one registered user the load acts as.
type account struct {
	id, email, password string
	// bearer is the Authorization header value.
	bearer string
}

// jsonBody is the header of a login. The headers of the load's requests
// are built once and shared read-only, as vegeta copies a target's headers
// into each request; only an order's, with its own Idempotency-Key, is
// built per request.
var jsonBody = http.Header{"Content-Type": {"application/json"}}

// accounts registers n users and logs each in. Registration is the
// system's most expensive request (a password hash) and is rate limited, so
// a refusal here ends the bench with the reason.
func (s *system) accounts(ctx context.Context, n int, keepPasswords bool) ([]account, error) {
	run := randomHex(4)
	out := make([]account, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range out {
		g.Go(func() error {
			a := account{email: fmt.Sprintf("bench-%s-%d@example.com", run, i), password: "bench-" + randomHex(12)}
			var user struct {
				ID string `json:"id"`
			}
			if err := s.call(ctx, http.MethodPost, "/auth/register", "", map[string]string{
				"email": a.email, "password": a.password, "name": "Bench User",
			}, http.StatusCreated, &user); err != nil {
				return fmt.Errorf("register an account: %w", err)
			}
			var login struct {
				AccessToken string `json:"accessToken"`
			}
			if err := s.call(ctx, http.MethodPost, "/auth/login", "", map[string]string{
				"email": a.email, "password": a.password,
			}, http.StatusOK, &login); err != nil {
				return fmt.Errorf("log in: %w", err)
			}
			a.id, a.bearer = user.ID, "Bearer "+login.AccessToken
			if !keepPasswords {
				a.password = ""
			}
			out[i] = a
			return nil
		})
	}
	return out, g.Wait()
}

// call sends one JSON request and decodes the answer, which must have the
// status want. A 429 says how to run the system for a load test.
func (s *system) call(ctx context.Context, method, path, bearer string, body any, want int, into any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%s %s: 429 %s: the gateway's rate limits are on; run the system with RATE_LIMITS_ENABLED=false to load it from one address",
			method, path, strings.TrimSpace(string(data)))
	case resp.StatusCode != want:
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if into != nil {
		return json.Unmarshal(data, into)
	}
	return nil
}

// order is what a 201 to POST /orders says, as far as the bench needs it.
type order struct {
	ID        string    `json:"id"`
	UserID    string    `json:"userId"`
	CreatedAt time.Time `json:"createdAt"`
}

// load makes a scenario's requests and keeps the orders they placed.
type load struct {
	base     string
	scenario string
	accounts []account
	// run makes this bench's idempotency keys unique among runs.
	run  string
	seq  atomic.Uint64
	body [][]byte      // per account: its login, for the login scenario
	auth []http.Header // per account: its Authorization header
	// measured are the orders accepted after the warm-up.
	measured []order
}

func newLoad(base, scenario string, accounts []account) *load {
	l := &load{base: base, scenario: scenario, accounts: accounts, run: randomHex(6)}
	for _, a := range accounts {
		l.auth = append(l.auth, http.Header{"Authorization": {a.bearer}})
		if scenario == "login" {
			b, _ := json.Marshal(map[string]string{"email": a.email, "password": a.password})
			l.body = append(l.body, b)
		}
	}
	return l
}

var orderBody = []byte(`{"sku":"BENCH-1","qty":1}`)

// The shares of the mixed scenario, in tenths: a reader's day on a shop.
const (
	mixedProfile = 7 // GET /users/me
	mixedOrder   = 2 // POST /orders
	// the last tenth lists the user's orders
)

// targeter returns the scenario's requests, spread over the accounts in
// turn. vegeta calls it from many goroutines.
func (l *load) targeter() vegeta.Targeter {
	return func(t *vegeta.Target) error {
		n := l.seq.Add(1) - 1
		i := n % uint64(len(l.accounts))
		switch l.kind(n) {
		case "me":
			t.Method, t.URL, t.Body, t.Header = http.MethodGet, l.base+"/users/me", nil, l.auth[i]
		case "orders":
			t.Method, t.URL, t.Body = http.MethodPost, l.base+"/orders", orderBody
			t.Header = http.Header{
				"Authorization":   {l.accounts[i].bearer},
				"Content-Type":    {"application/json"},
				"Idempotency-Key": {l.run + "-" + strconv.FormatUint(n, 10)},
			}
		case "list":
			t.Method, t.URL, t.Body, t.Header = http.MethodGet, l.base+"/orders?limit=20", nil, l.auth[i]
		case "login":
			t.Method, t.URL, t.Body, t.Header = http.MethodPost, l.base+"/auth/login", l.body[i], jsonBody
		}
		return nil
	}
}

// kind is what the n-th request of the scenario is.
func (l *load) kind(n uint64) string {
	if l.scenario != "mixed" {
		return l.scenario
	}
	switch tenth := n % 10; {
	case tenth < mixedProfile:
		return "me"
	case tenth < mixedProfile+mixedOrder:
		return "orders"
	default:
		return "list"
	}
}

func (l *load) placesOrders() bool { return l.scenario == "orders" || l.scenario == "mixed" }

// observe keeps the orders accepted in the measured run. vegeta hands
// results to one goroutine, so no lock is needed.
func (l *load) observe(r *vegeta.Result, measured bool) {
	if !measured || r.Code != http.StatusCreated || r.Method != http.MethodPost || !strings.HasSuffix(r.URL, "/orders") {
		return
	}
	var o order
	if json.Unmarshal(r.Body, &o) == nil && o.ID != "" {
		l.measured = append(l.measured, o)
	}
}

// Notifications is how the accepted orders of a run were notified:
// latency is the notification's createdAt minus the order's, both stamped
// by the system (one clock when it runs on one machine).
type Notifications struct {
	Orders   int     `json:"orders"`
	Notified int     `json:"notified"`
	Missing  int     `json:"missing"`
	Waited   float64 `json:"waitedSeconds"`
	Latency  Latency `json:"latencyMs"`
}

// awaitNotifications reads each account's notifications until every order
// has one, or wait has passed.
func (s *system) awaitNotifications(ctx context.Context, accounts []account, orders []order, wait time.Duration) (*Notifications, error) {
	start := time.Now()
	byUser := map[string][]order{}
	for _, o := range orders {
		byUser[o.UserID] = append(byUser[o.UserID], o)
	}
	seen := map[string]time.Time{} // order id → first notification's createdAt
	waiting := func(userID string) bool {
		return slices.ContainsFunc(byUser[userID], func(o order) bool { _, ok := seen[o.ID]; return !ok })
	}
	for {
		missing := false
		for _, a := range accounts {
			if !waiting(a.id) {
				continue // every order of this user seen: no need to read its pages again
			}
			if err := s.notifiedOrders(ctx, a.bearer, seen); err != nil {
				return nil, err
			}
			missing = missing || waiting(a.id)
		}
		if !missing || time.Since(start) > wait {
			return notificationSummary(orders, seen, time.Since(start)), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// notifiedOrders pages through one user's notifications, keeping the
// earliest createdAt of each order.
func (s *system) notifiedOrders(ctx context.Context, bearer string, seen map[string]time.Time) error {
	cursor := ""
	for {
		var page struct {
			Items []struct {
				OrderID   string    `json:"orderId"`
				CreatedAt time.Time `json:"createdAt"`
			} `json:"items"`
			NextCursor *string `json:"nextCursor"`
		}
		path := "/notifications?limit=100"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		if err := s.call(ctx, http.MethodGet, path, bearer, nil, http.StatusOK, &page); err != nil {
			return fmt.Errorf("read notifications: %w", err)
		}
		for _, n := range page.Items {
			if t, ok := seen[n.OrderID]; !ok || n.CreatedAt.Before(t) {
				seen[n.OrderID] = n.CreatedAt
			}
		}
		if page.NextCursor == nil {
			return nil
		}
		cursor = *page.NextCursor
	}
}

func notificationSummary(orders []order, seen map[string]time.Time, waited time.Duration) *Notifications {
	n := &Notifications{Orders: len(orders), Waited: waited.Seconds()}
	var lat []time.Duration
	for _, o := range orders {
		at, ok := seen[o.ID]
		if !ok {
			n.Missing++
			continue
		}
		n.Notified++
		lat = append(lat, at.Sub(o.CreatedAt))
	}
	n.Latency = distribution(lat)
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

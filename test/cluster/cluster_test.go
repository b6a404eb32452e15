// Package cluster tests Blueprint in its production shape: every service as
// several OS processes, PostgreSQL, a 3-node NATS cluster, and load through
// two gateways, with processes killed in the middle. It needs a PostgreSQL
// server (BLUEPRINT_TEST_POSTGRES_URL) and skips, saying so, without one.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// The load of the issue: 2,000 orders from 20 concurrent clients.
const (
	clients         = 20
	ordersPerClient = 100
	totalOrders     = clients * ordersPerClient
)

func TestClusterEveryOrderNotifiedOnce(t *testing.T) {
	t.Run("steady", func(t *testing.T) { runScenario(t, false) })
	t.Run("orders replica and NATS node killed", func(t *testing.T) { runScenario(t, true) })
}

func runScenario(t *testing.T, kill bool) {
	pgURL := os.Getenv(sqldbtest.EnvPostgresURL)
	if pgURL == "" {
		t.Skipf("cluster test skipped: %s is not set", sqldbtest.EnvPostgresURL)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "blueprint")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin,
		"github.com/ds-blueprint/blueprint/cmd/blueprint").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ctx := context.Background()
	c, err := localcluster.Start(ctx, localcluster.Config{
		Binary: bin, Dir: filepath.Join(dir, "cluster"), PostgresURL: pgURL,
		DatabasePrefix: "bp_cluster_" + hex.EncodeToString(b),
		NATSNodes:      3, Gateways: 2, Users: 2, Orders: 3, Notifications: 2,
		Env: []string{"RATE_LIMITS_ENABLED=false"},
	})
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				logTails(t, filepath.Join(dir, "cluster"))
			}
			if err := c.Stop(); err != nil {
				t.Errorf("cluster stop: %v", err)
			}
			if err := c.DropDatabases(context.Background()); err != nil {
				t.Errorf("drop databases: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	gateways := []string{c.Get("gateway-1").URL, c.Get("gateway-2").URL}
	http := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}

	tokens := make([]string, clients)
	for i := range clients {
		tokens[i] = signUp(t, http, gateways[i%2], i)
	}

	// Load: each client places its orders one after another, each with its
	// own Idempotency-Key, retrying the same key after any failure, as a
	// careful client does. Replies alternate between the gateways.
	var accepted sync.Map // order id → client key
	var created, retries atomic.Int64
	var gaveUp []string
	var mu sync.Mutex
	killed := make(chan struct{})
	if kill {
		go func() { // ends when the kills are done, before the load ends
			defer close(killed)
			for created.Load() < totalOrders*2/5 {
				time.Sleep(10 * time.Millisecond)
			}
			for _, name := range []string{"orders-2", "nats-2"} {
				if err := c.Get(name).Kill(); err != nil {
					t.Errorf("kill %s: %v", name, err)
				}
				t.Logf("killed %s (SIGKILL) after %d orders", name, created.Load())
			}
		}()
	} else {
		close(killed)
	}
	start := time.Now()
	var lastAccepted atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for j := range ordersPerClient {
				key := fmt.Sprintf("client-%d-order-%d", i, j)
				body := fmt.Sprintf(`{"sku":"LOAD-%d","qty":%d}`, i, j%10+1)
				id, n := placeOrder(http, gateways, i+j, tokens[i], key, body)
				retries.Add(int64(n))
				if id == "" {
					mu.Lock()
					gaveUp = append(gaveUp, key)
					mu.Unlock()
					continue
				}
				accepted.Store(id, key)
				created.Add(1)
				lastAccepted.Store(time.Now().UnixNano())
			}
		})
	}
	wg.Wait()
	<-killed
	loadTime := time.Since(start)
	if len(gaveUp) > 0 {
		t.Fatalf("%d orders never accepted after retries, e.g. %s", len(gaveUp), gaveUp[0])
	}

	ordersDB := openDB(t, c.Databases["orders"])
	notificationsDB := openDB(t, c.Databases["notifications"])
	count := func(db *sql.DB, query string) int {
		var n int
		if err := db.QueryRow(query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	deadline := time.Now().Add(2 * time.Minute)
	for count(notificationsDB, `SELECT count(*) FROM notifications`) < totalOrders ||
		count(ordersDB, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 2 min: %d notifications for %d orders, %d outbox rows pending",
				count(notificationsDB, `SELECT count(*) FROM notifications`), totalOrders,
				count(ordersDB, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`))
		}
		time.Sleep(100 * time.Millisecond)
	}
	var lastSent time.Time
	if err := notificationsDB.QueryRow(`SELECT max(sent_at) FROM notifications`).Scan(&lastSent); err != nil {
		t.Fatal(err)
	}

	// Every 201 order exists exactly once; there is no order nobody was told about.
	var n int
	accepted.Range(func(id, _ any) bool {
		if err := ordersDB.QueryRow(`SELECT count(*) FROM orders WHERE id = $1`, id).Scan(&n); err != nil || n != 1 {
			t.Errorf("accepted order %s: %d rows (%v), want 1", id, n, err)
		}
		return true
	})
	if got := count(ordersDB, `SELECT count(*) FROM orders`); got != totalOrders {
		t.Errorf("orders in PostgreSQL = %d, want %d", got, totalOrders)
	}
	// Exactly one notification per order, none twice.
	if got := count(notificationsDB, `SELECT count(DISTINCT order_id) FROM notifications`); got != totalOrders {
		t.Errorf("orders notified = %d, want %d", got, totalOrders)
	}
	if got := count(notificationsDB, `SELECT count(*) FROM notifications`); got != totalOrders {
		t.Errorf("notifications = %d, want %d (one per order)", got, totalOrders)
	}
	// One event per order in the stream: every re-send was de-duplicated.
	if got := streamMessages(t, c.NATSURL); got != totalOrders {
		t.Errorf("ORDERS stream messages = %d, want %d", got, totalOrders)
	}

	// How the work was spread.
	relays := groupCount(t, ordersDB, `SELECT sent_by, count(*) FROM outbox GROUP BY sent_by`)
	workers := map[string]int{}
	for _, p := range c.Named("notifications-") {
		if p.Running() {
			workers[p.Name] = metricSum(t, p.OpsURL, "blueprint_notifications_sent_total")
		}
	}
	sum := 0
	for name, n := range workers {
		sum += n
		if n == 0 {
			t.Errorf("%s recorded no notification; want the replicas to share the consumer", name)
		}
	}
	if sum != totalOrders {
		t.Errorf("notifications counted by the replicas = %d, want %d", sum, totalOrders)
	}
	if len(relays) < 2 {
		t.Errorf("events published by %d orders replicas, want them shared: %v", len(relays), relays)
	}
	last := time.Unix(0, lastAccepted.Load())
	t.Logf("%d orders in %s: %.0f orders/s; %d client retries; last notification %s after the last 201",
		totalOrders, loadTime.Round(time.Millisecond), float64(totalOrders)/loadTime.Seconds(),
		retries.Load(), lastSent.Sub(last).Round(time.Millisecond))
	t.Logf("events published per relay: %v", relays)
	t.Logf("notifications per worker: %v", workers)
}

// logTails shows the end of every process's log, to see why a run failed.
func logTails(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		var keep []string
		for _, l := range lines {
			if !strings.Contains(l, `"msg":"request"`) {
				keep = append(keep, l)
			}
		}
		t.Logf("--- %s (last lines other than access logs)\n%s", filepath.Base(f), strings.Join(keep[max(0, len(keep)-15):], "\n"))
	}
}

// signUp registers and logs in user i, returning an access token.
func signUp(t *testing.T, c *http.Client, gateway string, i int) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	email := fmt.Sprintf("load-%d-%s@example.com", i, hex.EncodeToString(b))
	creds := fmt.Sprintf(`{"email":%q,"password":"load-password"}`, email)
	reg := fmt.Sprintf(`{"email":%q,"password":"load-password","name":"Load %d"}`, email, i)
	if status, body := post(c, gateway+"/auth/register", "", "", reg); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	status, body := post(c, gateway+"/auth/login", "", "", creds)
	if status != http.StatusOK {
		t.Fatalf("login: %d %s", status, body)
	}
	var tok struct {
		AccessToken string `json:"accessToken"`
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// placeOrder posts one order until it is accepted, retrying the same key
// after failures with a growing pause; it returns the order id ("" after
// giving up) and how many retries it took.
func placeOrder(c *http.Client, gateways []string, turn int, token, key, body string) (string, int) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		status, resp := post(c, gateways[(turn+attempt)%len(gateways)]+"/orders", token, key, body)
		if status == http.StatusCreated {
			var o struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(resp, &o) == nil && o.ID != "" {
				return o.ID, attempt
			}
		}
		time.Sleep(min(time.Duration(attempt+1)*50*time.Millisecond, time.Second))
	}
	return "", maxAttempts
}

// maxAttempts bounds a client's patience: about a minute of retries.
const maxAttempts = 80

func post(c *http.Client, url, token, key, body string) (int, []byte) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func openDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func groupCount(t *testing.T, db *sql.DB, query string) map[string]int {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k sql.NullString
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out[k.String] = n
	}
	return out
}

// streamMessages counts the messages in the ORDERS stream.
func streamMessages(t *testing.T, urls string) int {
	t.Helper()
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatalf("nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatalf("stream ORDERS: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream ORDERS info: %v", err)
	}
	return int(info.State.Msgs)
}

// metricSum adds up every series of a counter on a /metrics page.
func metricSum(t *testing.T, opsURL, name string) int {
	t.Helper()
	resp, err := http.Get(opsURL + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return int(sum)
}

//go:build resilience

package resilience

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// attemptDeadline is the deadline of one attempt of the gateway's call to
// orders (UPSTREAM_ATTEMPT_TIMEOUT, set to its default): the Request-Timeout
// a request that crashes at orders carries, which its key's lock follows.
const attemptDeadline = 2 * time.Second

// orderedWithin is the goal: from the crash, a client has its order within
// the crashed request's deadline plus a second.
const orderedWithin = attemptDeadline + time.Second

// Two orders replicas under a steady load of keyed POST /orders from
// careful clients; orders-1 dies while it holds keys it claimed for orders
// it has not made yet: killed right after a claim by a crash rule at
// orders.after_key_claim, or SIGKILLed while requests wait there. The
// gateway's retries on orders-2 are refused 409 with the time left on each
// lock; the gateway waits it out and calls again, orders-2 takes the key
// over, and the clients get their orders — within the crashed request's
// deadline plus a second, without ever seeing the 409. Runs on PostgreSQL
// when BLUEPRINT_TEST_POSTGRES_URL is set, else on one SQLite file.
func TestKeyHolderCrashed(t *testing.T) {
	tests := []struct {
		name string
		// kill ends p while it holds keys and returns when it died.
		kill func(t *testing.T, c *localcluster.Cluster, p *localcluster.Process) time.Time
	}{
		{"crash rule at orders.after_key_claim", crashAfterKeyClaim},
		{"SIGKILL with requests held after their claims", killHoldingKeys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testKeyHolderCrashed(t, tt.kill) })
	}
}

func testKeyHolderCrashed(t *testing.T, kill func(*testing.T, *localcluster.Cluster, *localcluster.Process) time.Time) {
	cfg := localcluster.Config{Orders: 2}
	backend := "SQLite"
	if pg := os.Getenv(sqldbtest.EnvPostgresURL); pg != "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.PostgresURL, cfg.DatabasePrefix, backend = pg, "bp_crashkey_"+hex.EncodeToString(b), "PostgreSQL"
	}
	c, client := start(t, cfg, fmt.Sprintf("UPSTREAM_ATTEMPT_TIMEOUT=%s", attemptDeadline))
	tokens := make([]string, 10)
	for i := range tokens {
		tokens[i] = client.SignUp(t, i)
	}
	stop := make(chan struct{})
	placed := make(chan []keyedOrder, 1)
	go func() { placed <- placeOrders(client, tokens, 50, stop) }() // ends at stop, once every order is placed or given up

	time.Sleep(steadyWarmUp)
	crashed := kill(t, c, c.Get("orders-1"))
	time.Sleep(2 * orderedWithin) // the locks, the waits and the orders after them
	close(stop)
	all := <-placed

	// The orders caught by the crash: sent before it, answered after it.
	var caught, gaveUp int
	var slowest time.Duration
	var client409 []orderTry
	for _, o := range all {
		last := o.tries[len(o.tries)-1]
		if last.status != http.StatusCreated {
			gaveUp++
		}
		if o.tries[0].sent.Before(crashed) && last.answered.After(crashed) {
			caught++
			slowest = max(slowest, last.answered.Sub(crashed))
		}
		for _, tr := range o.tries {
			if tr.status == http.StatusConflict {
				client409 = append(client409, tr)
			}
		}
	}
	var refused []map[string]any // orders-2's 409s to the gateway
	for _, rec := range logRecords(t, c.Dir(), "orders-2", "request", "POST /orders") {
		if logTime(rec).After(crashed) && rec["status"] == float64(http.StatusConflict) {
			refused = append(refused, rec)
		}
	}
	waits := logRecords(t, c.Dir(), "gateway-1", "order's Idempotency-Key is held by another request; waiting for its lock to end", "")

	if gaveUp > 0 {
		t.Errorf("%d of %d orders never accepted", gaveUp, len(all))
	}
	if len(waits) == 0 {
		t.Errorf("the gateway never waited for a key: the crash left no key locked, or its 409 reached the client")
	}
	if slowest > orderedWithin {
		t.Errorf("the last order caught by the crash was accepted %s after it, want within %s (the deadline %s and a second)",
			slowest.Round(time.Millisecond), orderedWithin, attemptDeadline)
	}
	if len(client409) > 0 {
		t.Errorf("clients saw %d × 409 from %s to %s after the crash, want none: the gateway waits for the lock",
			len(client409), client409[0].answered.Sub(crashed).Round(time.Millisecond),
			client409[len(client409)-1].answered.Sub(crashed).Round(time.Millisecond))
	}
	checkOneOrderPerKey(t, c.Databases["orders"], all)

	var waited []any
	for _, w := range waits {
		waited = append(waited, w["wait_ms"])
	}
	window := "none"
	if len(refused) > 0 {
		window = fmt.Sprintf("%d × 409 from %s to %s after the crash", len(refused),
			logTime(refused[0]).Sub(crashed).Round(time.Millisecond), logTime(refused[len(refused)-1]).Sub(crashed).Round(time.Millisecond))
	}
	t.Logf("%s, %s of warm-up at 50 orders/s, %d orders: %d caught by the crash; the last of them accepted %s after it (goal %s); "+
		"clients saw %d × 409 and %s; orders-2 answered the gateway %s; the gateway waited %v ms",
		backend, steadyWarmUp, len(all), caught, slowest.Round(time.Millisecond), orderedWithin,
		len(client409), tallyTries(all, crashed), window, waited)
}

// crashAfterKeyClaim sets a crash rule at orders.after_key_claim on p: the
// next order it takes kills it right after its key is claimed. The crash is
// when p first logged it, just before the signal.
func crashAfterKeyClaim(t *testing.T, c *localcluster.Cluster, p *localcluster.Process) time.Time {
	t.Helper()
	setFault(t, p.OpsURL, map[string]any{"route": orders.FaultAfterKeyClaim, "crash": true, "errorRate": 1})
	for p.Running() {
		time.Sleep(5 * time.Millisecond)
	}
	// Two requests reaching the rule together may both log it before the
	// signal lands: the first is the crash.
	crashes := logRecords(t, c.Dir(), p.Name, "chaos crash: killing the process", "")
	if len(crashes) == 0 {
		t.Fatalf("%s died without logging its chaos crash", p.Name)
	}
	return logTime(crashes[0])
}

// killHoldingKeys holds every order p takes for a second after its key is
// claimed, and SIGKILLs p half a second later, from outside: the request it
// holds (the gateway steers the others to the replica with fewer in
// flight) dies with its key claimed up to half a second before, so its
// lock ends sooner after the kill.
func killHoldingKeys(t *testing.T, _ *localcluster.Cluster, p *localcluster.Process) time.Time {
	t.Helper()
	setFault(t, p.OpsURL, map[string]any{"route": orders.FaultAfterKeyClaim, "latencyMs": 1000})
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	if err := p.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.Name, err)
	}
	return killed
}

// keyedOrder is one order of a careful client: one Idempotency-Key, sent
// again after any answer but 201.
type keyedOrder struct {
	key   string
	tries []orderTry
}

// orderTry is one request of an order.
type orderTry struct {
	sent, answered time.Time
	status         int // 0: no answer
}

// placeOrders places orders at rate per second over the users of tokens
// until stop, each as test/harness's load does (the same key after any
// failure, a growing pause, a minute of patience), and returns them once
// every one is placed or given up.
func placeOrders(client *harness.Client, tokens []string, rate float64, stop <-chan struct{}) []keyedOrder {
	run := make([]byte, 4)
	_, _ = rand.Read(run)
	var mu sync.Mutex
	var out []keyedOrder
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			wg.Wait()
			return out
		case <-tick.C:
		}
		wg.Go(func() {
			o := placeOrder(client, n, tokens[n%len(tokens)], fmt.Sprintf("crashkey-%s-%d", hex.EncodeToString(run), n))
			mu.Lock()
			out = append(out, o)
			mu.Unlock()
		})
	}
}

// placeOrder posts one order until it is accepted or a minute has passed.
func placeOrder(client *harness.Client, n int, token, key string) keyedOrder {
	o := keyedOrder{key: key}
	body := fmt.Sprintf(`{"sku":"CRASHKEY","qty":%d}`, n%10+1)
	patience := time.Now().Add(time.Minute)
	for tries := 1; ; tries++ {
		tr := orderTry{sent: time.Now()}
		tr.status, _ = client.Post(client.Gateways[(n+tries)%len(client.Gateways)]+"/orders", token, key, body)
		tr.answered = time.Now()
		o.tries = append(o.tries, tr)
		if tr.status == http.StatusCreated || time.Now().After(patience) {
			return o
		}
		time.Sleep(min(time.Duration(tries)*50*time.Millisecond, time.Second))
	}
}

// tallyTries counts the answers clients got after at that were not 201.
func tallyTries(all []keyedOrder, at time.Time) string {
	counts := map[int]int{}
	for _, o := range all {
		for _, tr := range o.tries {
			if tr.status != http.StatusCreated && tr.answered.After(at) {
				counts[tr.status]++
			}
		}
	}
	if len(counts) == 0 {
		return "no other error"
	}
	b, _ := json.Marshal(counts)
	return "other errors (status: count) " + string(b)
}

// checkOneOrderPerKey checks that every accepted order exists once.
func checkOneOrderPerKey(t *testing.T, dbURL string, all []keyedOrder) {
	t.Helper()
	db := harness.OpenDB(t, dbURL)
	var stored int
	if err := db.QueryRow(`SELECT count(*) FROM orders WHERE sku = 'CRASHKEY'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != len(all) {
		t.Errorf("%d orders stored for %d keys, want one each", stored, len(all))
	}
}

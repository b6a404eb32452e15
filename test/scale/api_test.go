//go:build scale

package scale

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// Each request is timed this many times, after a tenth as many to warm up.
const (
	reads  = 200
	writes = 100
)

// throughAPI runs the all-in-one binary on the databases at urls, as a user
// runs it, reads how long it took to be ready, and times the heavy user's
// requests through the gateway, one at a time.
func throughAPI(t *testing.T, bin string, urls map[string]string, s seeded, f *figures) {
	dir := filepath.Join(t.TempDir(), "system")
	// The seed kept the events sent within the retention before s.now: a
	// retention longer by the time since then keeps the pruner from
	// deleting, at start, those that have aged past it meanwhile (minutes,
	// for millions of orders), as if the seed had just ended.
	retention := outboxRetention + time.Since(s.now).Truncate(time.Second) + time.Second
	c := harness.StartCluster(t, localcluster.Config{
		Binary: bin, Dir: dir, AllInOne: true,
		Env: []string{
			"RATE_LIMITS_ENABLED=false",
			"OUTBOX_RETENTION=" + retention.String(),
			"USERS_DATABASE_URL=" + urls["users"],
			"ORDERS_DATABASE_URL=" + urls["orders"],
			"NOTIFICATIONS_DATABASE_URL=" + urls["notifications"],
		},
	})
	f.took[opStartup] = startup(t, filepath.Join(dir, "blueprint.log"))

	client := harness.NewClient(1, harness.Gateways(c)...)
	gw := client.Gateways[0]
	token := client.LogIn(t, gw, s.heavyEmail, password)
	cursor := pagination.Cursor{CreatedAt: s.middle.CreatedAt, ID: s.middle.ID}.Encode()
	deep := "/orders?cursor=" + url.QueryEscape(cursor)
	if items := pageLen(t, client, gw+deep, token); items != pagination.DefaultLimit {
		t.Fatalf("GET %s: %d orders, want a full page of %d", deep, items, pagination.DefaultLimit)
	}
	get := func(path string) func() {
		return func() {
			if status, body := client.Get(gw+path, token); status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, status, body)
			}
		}
	}
	f.took[opFirstPage] = timeRepeated(reads, get("/orders"))
	f.took[opDeepPage] = timeRepeated(reads, get(deep))
	f.took[opGet] = timeRepeated(reads, get("/orders/"+s.middle.ID))
	f.took[opNotifications] = timeRepeated(reads, get("/notifications"))
	placed := 0
	f.took[opCreate] = timeRepeated(writes, func() {
		placed++
		key := fmt.Sprintf("scale-%d", placed)
		if status, body := client.Post(gw+"/orders", token, key, `{"sku":"BLUEPRINT-MUG","qty":1}`); status != http.StatusCreated {
			t.Fatalf("POST /orders: %d %s", status, body)
		}
	})
}

// timeRepeated runs fn n/10 times to warm up, then n times, and returns
// the median time it took.
func timeRepeated(n int, fn func()) time.Duration {
	for range n / 10 {
		fn()
	}
	took := make([]time.Duration, n)
	for i := range took {
		start := time.Now()
		fn()
		took[i] = time.Since(start)
	}
	return median(took)
}

// startup reads startup_ms from the ready line of the binary's log.
func startup(t *testing.T, log string) time.Duration {
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), `"msg":"blueprint ready"`) {
			continue
		}
		var ready struct {
			StartupMS int64 `json:"startup_ms"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ready); err != nil {
			t.Fatalf("ready line %s: %v", sc.Text(), err)
		}
		return time.Duration(ready.StartupMS) * time.Millisecond
	}
	t.Fatalf("no ready line in %s", log)
	return 0
}

// pageLen is how many items the page at url holds.
func pageLen(t *testing.T, c *harness.Client, url, token string) int {
	status, body := c.Get(url, token)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	return len(page.Items)
}

//go:build fault

package fault

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// Scenario 9: the network between orders and NATS black-holed for 20 s
// (a toxiproxy proxy on the link drops every byte both ways and keeps the
// connections open, as a partition does). Orders keep being accepted; the
// client notices the silent link by its pings, reconnects soon after the
// link heals, and the relay publishes the backlog.
func TestPartitionOrdersFromNATS(t *testing.T) {
	natsAddr := localcluster.FreeAddr()
	proxy := startProxy(t, natsAddr)
	s := start(t, localcluster.Config{
		NATSListen: []string{natsAddr},
		ServiceEnv: map[string][]string{"orders": {"NATS_URL=nats://" + proxy.Listen}},
	})
	ctx := t.Context()
	orders := s.Get("orders-1")
	var accepted atomic.Int64
	var reconnected, drained time.Duration
	done := afterAccepted(&accepted, 300, func() {
		for _, stream := range []string{"upstream", "downstream"} {
			if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(
				`{"name":"partition-` + stream + `","type":"timeout","stream":"` + stream + `","attributes":{"timeout":0}}`)); err != nil {
				t.Errorf("partition: %v", err)
			}
		}
		time.Sleep(20 * time.Second)
		proxy.Toxics.ResetToxics(context.Background())
		healed := time.Now()
		for !ready(orders.OpsURL) && time.Since(healed) < 30*time.Second {
			time.Sleep(50 * time.Millisecond)
		}
		reconnected = time.Since(healed)
		var err error
		if drained, err = harness.WaitDrained(t, s.src.Orders, 30*time.Second); err != nil {
			t.Errorf("after healing: %v", err)
		}
		drained += reconnected
	})
	res := s.client.Run(ctx, t, harness.Load{Orders: 2000, Clients: 20, Rate: 50}, &accepted)
	<-done
	rep, _ := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	record(t, row{Scenario: "9. orders–NATS partition 20 s", Requests: 2000, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / 2000, Report: rep, Recovery: drained,
		Note: "orders ready again " + reconnected.Round(10*time.Millisecond).String() + " after healing"})
}

// startProxy runs a toxiproxy proxy in the test, from a free loopback port
// to upstream.
func startProxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "nats", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// ready reports whether a service's /readyz answers 200.
func ready(opsURL string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(opsURL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

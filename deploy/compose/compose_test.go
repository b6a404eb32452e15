package compose

import (
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/test/harness"
)

// TestComposeStack runs the Compose deployment for real: it builds on the
// images of the run, brings the stack up, drives the public API through the
// published gateway port, then kills, partitions, scales and restarts it
// under load, checking after each that every order a client was told about
// exists once and is notified once.
func TestComposeStack(t *testing.T) {
	s := startStack(t)
	bin := harness.Build(t, t.TempDir()) // for `blueprint demo`
	ctx := t.Context()
	client := harness.NewClient(20, s.gateway)
	var all []map[string]string // accepted orders of every phase, checked again after the restart
	// The databases and the stream hold every phase's orders: a phase's
	// own figures are those of its accepted orders.
	report := func(name string, res harness.Result, rep harness.Report, recovery time.Duration, note string) {
		t.Logf("| %s | %d | %d | %d | %d | %d | %s | %s |", name, res.Requests, len(res.Accepted), rep.Missing,
			len(res.Accepted)-rep.Unsettled, rep.DuplicateNotifications+rep.DuplicateEvents,
			recovery.Round(100*time.Millisecond), note)
		all = append(all, res.Accepted)
	}
	settle := func(name string, res harness.Result) (harness.Report, time.Duration) {
		t.Helper()
		if len(res.GaveUp) > 0 {
			t.Errorf("%s: %d orders never accepted, e.g. %s", name, len(res.GaveUp), res.GaveUp[0])
		}
		rep, took := harness.Settle(t, s.sources(), res.Accepted, 2*time.Minute)
		if !rep.Holds() || rep.DeadLettered != 0 {
			t.Errorf("%s: %s; want every accepted order once in the database and notified once", name, rep)
		}
		return rep, took
	}
	t.Log("| scenario | requests | accepted | lost | notified | duplicated | recovery | notes |")
	t.Log("|---|---|---|---|---|---|---|---|")

	// The newcomer's flow through the published port.
	out, err := exec.CommandContext(ctx, bin, "demo", "--gateway", s.gateway).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "demo passed") {
		t.Fatalf("blueprint demo --gateway %s: %v\n%s", s.gateway, err, out)
	}
	res := client.Run(ctx, t, harness.Load{Orders: 300, Clients: 10, Rate: 100}, nil)
	rep, took := settle("steady", res)
	report("steady load", res, rep, took, "after `blueprint demo` passed through the published port; recovery = settled after the last 201")

	// An orders container killed under load, with a second replica serving.
	s.up("--scale", "orders=2")
	var accepted atomic.Int64
	killed := make(chan time.Time, 1)
	go func() { // ends once it has killed
		for accepted.Load() < 150 && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		victim := s.containers("orders")[0]
		if out, err := exec.Command("docker", "kill", victim).CombinedOutput(); err != nil {
			t.Errorf("docker kill %s: %v: %s", victim, err, out)
		}
		killed <- time.Now()
	}()
	res = client.Run(ctx, t, harness.Load{Orders: 600, Clients: 20, Rate: 100}, &accepted)
	<-killed
	rep, took = settle("orders killed", res)
	notes := fmt.Sprintf("%d accepted on the first try", res.FirstTry)
	if len(res.Refused) > 0 {
		notes += fmt.Sprintf(", the others after retries with their key; answers refused meanwhile: %v", res.Refused)
	}
	report("orders container killed (docker kill) under load, 2 replicas", res, rep, took, notes)

	// orders cut off from NATS for 20 s: orders keep being accepted into the
	// outbox and are published once the network is back.
	accepted.Store(0)
	healed := make(chan time.Time, 1)
	var duringCut atomic.Int64
	go func() { // ends once the network is back
		for accepted.Load() < 100 && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		orders := s.containers("orders")
		for _, c := range orders {
			if out, err := exec.Command("docker", "network", "disconnect", s.project+"_orders-nats", c).CombinedOutput(); err != nil {
				t.Errorf("disconnect %s from NATS: %v: %s", c, err, out)
			}
		}
		before := accepted.Load()
		time.Sleep(20 * time.Second)
		duringCut.Store(accepted.Load() - before)
		for _, c := range orders {
			if out, err := exec.Command("docker", "network", "connect", s.project+"_orders-nats", c).CombinedOutput(); err != nil {
				t.Errorf("reconnect %s to NATS: %v: %s", c, err, out)
			}
		}
		healed <- time.Now()
	}()
	res = client.Run(ctx, t, harness.Load{Orders: 1500, Clients: 20, Rate: 50}, &accepted)
	at := <-healed
	rep, _ = settle("partition", res)
	if duringCut.Load() == 0 {
		t.Errorf("no order was accepted while orders was cut off from NATS; want the outbox to take them")
	}
	report("orders cut off from NATS for 20 s", res, rep, time.Since(at),
		fmt.Sprintf("%d orders accepted during the cut; recovery = settled, from the reconnect", duringCut.Load()))

	// Three orders replicas and two workers: the gateway finds the new
	// orders replicas by DNS and spreads the load over all of them; the
	// workers share the durable consumer.
	scaled := []string{"--scale", "orders=3", "--scale", "notifications=2"}
	s.up(scaled...)
	since := time.Now()
	res = client.Run(ctx, t, harness.Load{Orders: 1200, Clients: 20, Rate: 30}, nil) // 40 s: past the 30 s re-resolution
	rep, took = settle("scaled", res)
	share := func(service, msg string, want int) string {
		var counts []string
		for _, c := range s.containers(service) {
			n := logged(t, c, since, msg)
			counts = append(counts, fmt.Sprint(n))
			if n == 0 {
				t.Errorf("%s container %.12s logged no %q after scaling", service, c, msg)
			}
		}
		if len(counts) != want {
			t.Errorf("%d %s containers after scaling, want %d", len(counts), service, want)
		}
		return strings.Join(counts, " / ")
	}
	orders := share("orders", "POST /orders 201", 3)
	workers := share("notifications", "notification delivered", 2)
	report("scaled to 3 orders replicas and 2 workers", res, rep, took, "201s per orders replica: "+orders+
		" (the gateway re-resolves the name every 30 s); notifications per worker: "+workers)

	// Everything restarted: the containers go, the volumes stay.
	s.compose("down", "--timeout", "20")
	restart := time.Now()
	s.up(scaled...)
	back := time.Since(restart)
	merged := map[string]string{}
	for _, a := range all {
		for id, key := range a {
			merged[id] = key
		}
	}
	rep = harness.Measure(t, s.sources(), merged)
	if !rep.Holds() || rep.DeadLettered != 0 {
		t.Errorf("after restarting everything: %s; want all %d orders and notifications kept", rep, len(merged))
	}
	out, err = exec.CommandContext(ctx, bin, "demo", "--gateway", s.gateway).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "demo passed") {
		t.Errorf("blueprint demo after the restart: %v\n%s", err, out)
	}
	t.Logf("| everything restarted (down, up) | – | %d kept | %d | %d | %d | %s | recovery = healthy again; then `blueprint demo` passed |",
		len(merged), rep.Missing, len(merged)-rep.Unsettled, rep.DuplicateNotifications+rep.DuplicateEvents,
		back.Round(100*time.Millisecond))

	// Nothing but the gateway is published.
	ports := s.publishedPorts()
	if len(ports) != 1 || len(ports["gateway"]) != 1 || !strings.HasSuffix(ports["gateway"][0], "->3001") {
		t.Errorf("published ports = %v, want only the gateway's 3001", ports)
	}
	internalPortsClosed(t)
	t.Logf("published: %v", ports)

}

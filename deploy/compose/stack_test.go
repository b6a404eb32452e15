package compose

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// stack is one Compose project of compose.yaml and compose.observability.yaml
// under test: its own name, keys, published ports and volumes.
type stack struct {
	t       *testing.T
	project string
	env     []string
	keys    string
	gateway string // the published gateway, http://127.0.0.1:port
}

// started lists what the test runs: every service but the third-party
// observability images (Prometheus, Tempo, Loki, Grafana), which no
// registry here can give and which the compose-go tests validate instead.
var started = []string{
	"nats-1", "nats-2", "nats-3", "users-db", "orders-db", "notifications-db", "redis",
	"users", "orders", "notifications", "gateway", "otel-collector",
}

// startStack makes the project's keys with the image itself and brings the
// stack up, waiting for every health check. It is taken down, volumes and
// all, when the test ends.
func startStack(t *testing.T) *stack {
	t.Helper()
	image := os.Getenv("BLUEPRINT_IMAGE")
	if image == "" {
		t.Skip("BLUEPRINT_IMAGE not set: build the image (BLUEPRINT_IMAGE=$(deploy/docker/build.sh)) with a Docker engine " +
			"and `docker compose` running to run the Compose stack; where no registry is reachable, also set " +
			"BLUEPRINT_OTELCOL_IMAGE=$(tools/otelcol/image.sh) and the BLUEPRINT_POSTGRES_IMAGE and " +
			"BLUEPRINT_REDIS_IMAGE deploy/compose/local-images/build.sh prints")
	}
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err != nil {
		t.Skipf("docker compose unavailable (tools/compose/build.sh installs it): %v: %s", err, out)
	}
	if os.Geteuid() != 0 {
		t.Skip("the keys are handed to the image's user (65532); reading the NATS admin seed back needs root")
	}
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	s := &stack{t: t, project: "blueprint-test-" + hex.EncodeToString(id), keys: filepath.Join(t.TempDir(), "keys")}
	port := localcluster.FreeAddr()
	s.gateway = "http://" + port
	s.env = append(os.Environ(),
		"BLUEPRINT_KEYS="+s.keys,
		"BLUEPRINT_GATEWAY_PUBLISH="+port,
		"BLUEPRINT_GRAFANA_PUBLISH="+localcluster.FreeAddr(),
		// One client address sends the whole load: per-IP limits would
		// refuse most of it.
		"RATE_LIMITS_ENABLED=false",
		// The orders replicas' access lines, which count each replica's
		// share of the load, are debug lines.
		"LOG_LEVEL=debug",
	)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of the failed run:\n%s", tail(s.composeOut("logs", "--no-color", "--tail", "30"), 200))
		}
		s.composeOut("down", "--volumes", "--remove-orphans", "--timeout", "5")
	})
	s.compose("run", "--rm", "keys")
	s.up()
	return s
}

// compose runs docker compose on the project and fails the test if it fails.
func (s *stack) compose(args ...string) string {
	s.t.Helper()
	out, err := s.run(args...)
	if err != nil {
		s.t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, tail(out, 60))
	}
	return out
}

// composeOut runs docker compose and returns its output, whatever happens.
func (s *stack) composeOut(args ...string) string {
	out, _ := s.run(args...)
	return out
}

func (s *stack) run(args ...string) (string, error) {
	cmd := exec.Command("docker", append([]string{"compose", "--project-name", s.project,
		"--file", "compose.yaml", "--file", "compose.observability.yaml"}, args...)...)
	cmd.Env = s.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// up starts (or restarts) the services the test runs and waits until
// every one is healthy.
func (s *stack) up(extra ...string) {
	s.t.Helper()
	s.compose(append(append([]string{"up", "--detach", "--wait", "--pull", "never", "--no-recreate"}, extra...), started...)...)
}

// containers lists the IDs of a service's running containers.
func (s *stack) containers(service string) []string {
	s.t.Helper()
	return strings.Fields(s.compose("ps", "--quiet", service))
}

// address is a container's address on one of the project's networks. The
// engine's host reaches it directly; nothing is published for it.
func (s *stack) address(service, network string) string {
	s.t.Helper()
	ids := s.containers(service)
	if len(ids) == 0 {
		s.t.Fatalf("no container of %s", service)
	}
	out, err := exec.Command("docker", "inspect", "--format",
		fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, s.project+"_"+network), ids[0]).Output()
	if err != nil {
		s.t.Fatalf("address of %s on %s: %v", service, network, err)
	}
	return strings.TrimSpace(string(out))
}

// sources are where the invariants are read: the orders and notifications
// databases and the NATS cluster, at their container addresses, as the
// NATS admin user.
func (s *stack) sources() harness.Sources {
	s.t.Helper()
	db := func(service string) string {
		return fmt.Sprintf("postgres://%s:%s@%s:5432/%s?sslmode=disable", service, service, s.address(service+"-db", service+"-db"), service)
	}
	var nats []string
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		nats = append(nats, "nats://"+s.address(n, "nats")+":4222") // the cluster's own network
	}
	return harness.Sources{
		Orders:        harness.OpenDB(s.t, db("orders")),
		Notifications: harness.OpenDB(s.t, db("notifications")),
		NATSURL:       strings.Join(nats, ","),
		NATSNKey:      filepath.Join(s.keys, "nats-admin.nk"),
	}
}

// publishedPorts maps each running service to the ports it publishes.
func (s *stack) publishedPorts() map[string][]string {
	s.t.Helper()
	out := s.compose("ps", "--format", "json")
	ports := map[string][]string{}
	for line := range strings.Lines(out) {
		var c struct {
			Service    string
			Publishers []struct {
				URL           string
				TargetPort    int
				PublishedPort int
			}
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			s.t.Fatalf("docker compose ps: %v: %s", err, line)
		}
		for _, p := range c.Publishers {
			if p.PublishedPort != 0 {
				ports[c.Service] = append(ports[c.Service], fmt.Sprintf("%s:%d->%d", p.URL, p.PublishedPort, p.TargetPort))
			}
		}
	}
	return ports
}

// logged counts a container's log records since a time: those whose msg
// is what, or, for "<route> <status>", its access-log lines of that route
// and status.
func logged(t *testing.T, container string, since time.Time, what string) int {
	t.Helper()
	out, err := exec.Command("docker", "logs", "--since", since.Format(time.RFC3339Nano), container).CombinedOutput()
	if err != nil {
		t.Fatalf("docker logs %s: %v", container, err)
	}
	n := 0
	for line := range strings.Lines(string(out)) {
		var rec struct {
			Msg, Route string
			Status     int
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec.Msg == what || (rec.Msg == "request" && fmt.Sprintf("%s %d", rec.Route, rec.Status) == what) {
			n++
		}
	}
	return n
}

// internalPortsClosed dials every port a container listens on, at every
// address of this host outside the engine's networks: none may answer.
func internalPortsClosed(t *testing.T) {
	t.Helper()
	ports := []int{3002, 3003, 3004, 9101, 9102, 9103, 9104, 4222, 6222, 8222, 5432, 6379, 4317, 4318, 8889, 13133}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _, _ := net.ParseCIDR(a.String())
		if ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() || onEngineBridge(ip) {
			continue
		}
		for _, p := range ports {
			addr := net.JoinHostPort(ip.String(), fmt.Sprint(p))
			if c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond); err == nil {
				c.Close()
				t.Errorf("%s answers from outside the engine's networks", addr)
			}
		}
	}
}

// onEngineBridge reports whether ip is the host's own address on one of the
// engine's bridges (the host is their gateway, not a way in from outside).
func onEngineBridge(ip net.IP) bool {
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		if !strings.HasPrefix(iface.Name, "br-") && iface.Name != "docker0" {
			continue
		}
		addrs, _ := iface.Addrs()
		if slices.ContainsFunc(addrs, func(a net.Addr) bool { return strings.HasPrefix(a.String(), ip.String()+"/") }) {
			return true
		}
	}
	return false
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

package deploy

import (
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/users"
)

// composeDir is deploy/compose, as an absolute path: loadCompose moves the
// test there.
var composeDir = must(filepath.Abs("../../deploy/compose"))

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// loadCompose loads the Compose project as `docker compose` run in
// deploy/compose does, with compose-go, the loader Compose itself uses:
// files empty means what .env names (COMPOSE_FILE). env is the environment
// the files are interpolated with. The test runs in deploy/compose from
// then on, as a user there would.
func loadCompose(t *testing.T, files []string, env ...string) *types.Project {
	t.Helper()
	t.Chdir(composeDir)
	opts, err := cli.NewProjectOptions(files,
		cli.WithEnv(env),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load %v: %v", files, err)
	}
	return p
}

// blueprintServices are the project's services that run Blueprint's image,
// by name.
func blueprintServices(p *types.Project) map[string]types.ServiceConfig {
	out := map[string]types.ServiceConfig{}
	for name, s := range p.Services {
		if strings.HasPrefix(s.Image, "blueprint:") {
			out[name] = s
		}
	}
	return out
}

// TestComposeRunsEverythingByDefault: `docker compose up` in deploy/compose
// (what .env names) runs the system and its observability stack, the
// services sending their telemetry to the collector; compose.yaml alone is
// the system without it.
func TestComposeRunsEverythingByDefault(t *testing.T) {
	full := loadCompose(t, nil)
	for _, want := range []string{"gateway", "users", "orders", "notifications", "nats-1", "nats-2", "nats-3",
		"users-db", "orders-db", "notifications-db", "redis", "otel-collector", "prometheus", "tempo", "loki", "grafana"} {
		if _, ok := full.Services[want]; !ok {
			t.Errorf("docker compose up runs no %s; services: %v", want, slices.Sorted(maps.Keys(full.Services)))
		}
	}
	for name := range blueprintServices(full) {
		if strings.HasPrefix(name, "nats-") {
			continue
		}
		if got := deref(full.Services[name].Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]); got != "http://otel-collector:4318" {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT = %q, want the collector's", name, got)
		}
	}
	light := loadCompose(t, []string{"compose.yaml"})
	for _, name := range []string{"otel-collector", "prometheus", "grafana"} {
		if _, ok := light.Services[name]; ok {
			t.Errorf("compose.yaml alone runs %s, want the system only", name)
		}
	}
	if _, ok := light.Services["gateway"].Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; ok {
		t.Error("compose.yaml alone sets OTEL_EXPORTER_OTLP_ENDPOINT, with no collector to receive")
	}
}

// TestComposePublishesOnlyTheGatewayAndGrafana: nothing but the API and
// Grafana is reachable from outside the engine, and both only on loopback
// unless asked.
func TestComposePublishesOnlyTheGatewayAndGrafana(t *testing.T) {
	p := loadCompose(t, nil)
	want := map[string]string{"gateway": "127.0.0.1:3001->3001", "grafana": "127.0.0.1:3000->3000"}
	got := map[string]string{}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			got[name] += fmt.Sprintf("%s:%s->%d", port.HostIP, port.Published, port.Target)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("published ports = %v, want %v", got, want)
	}
}

// TestComposeImagesArePinned: every third-party image names a version, and
// the ones the Compose test must build here can be swapped for stand-ins.
func TestComposeImagesArePinned(t *testing.T) {
	versioned := regexp.MustCompile(`^[a-z0-9./-]+:v?[0-9]+\.[0-9]+(\.[0-9]+)?(-[a-z0-9]+)?$`)
	for name, s := range loadCompose(t, nil).Services {
		if strings.HasPrefix(s.Image, "blueprint") {
			continue // built from this repository
		}
		if !versioned.MatchString(s.Image) {
			t.Errorf("%s: image %q is not pinned to a version", name, s.Image)
		}
	}
	p := loadCompose(t, nil, "BLUEPRINT_POSTGRES_IMAGE=pg-here", "BLUEPRINT_REDIS_IMAGE=redis-here",
		"BLUEPRINT_IMAGE=blueprint:test", "BLUEPRINT_OTELCOL_IMAGE=otelcol-here")
	for name, want := range map[string]string{"users-db": "pg-here", "orders-db": "pg-here", "notifications-db": "pg-here",
		"redis": "redis-here", "gateway": "blueprint:test", "nats-1": "blueprint:test", "otel-collector": "otelcol-here"} {
		if got := p.Services[name].Image; got != want {
			t.Errorf("%s: image = %q with its variable set, want %q", name, got, want)
		}
	}
}

// TestComposeContainersRunRestricted: every Blueprint container runs
// read-only as the image's user, without capabilities or privilege
// escalation, and has a health check the image can run without a shell;
// each waits for what it needs to be healthy.
func TestComposeContainersRunRestricted(t *testing.T) {
	p := loadCompose(t, nil)
	for name, s := range blueprintServices(p) {
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") ||
			!slices.Contains(s.Tmpfs, "/tmp") || s.User != "" {
			t.Errorf("%s: read_only %t, cap_drop %v, security_opt %v, tmpfs %v, user %q; want read-only, no capabilities, "+
				"no-new-privileges, a tmpfs on /tmp and the image's user", name, s.ReadOnly, s.CapDrop, s.SecurityOpt, s.Tmpfs, s.User)
		}
		hc := s.HealthCheck
		if hc == nil || len(hc.Test) < 5 || !slices.Equal(hc.Test[:4], []string{"CMD", "/blueprint", "health", "--url"}) {
			t.Errorf("%s: health check %v, want CMD /blueprint health --url <its ops listener>", name, hc)
		}
		for dep, d := range s.DependsOn {
			if d.Condition != types.ServiceConditionHealthy || p.Services[dep].HealthCheck == nil {
				t.Errorf("%s depends on %s with condition %q, want service_healthy on a health check", name, dep, d.Condition)
			}
		}
	}
}

// TestComposeMountsOnlyEachServicesKeys: each service gets its own private
// key and NATS seed and the public bundle, nothing else; the NATS nodes get
// the users' public keys.
func TestComposeMountsOnlyEachServicesKeys(t *testing.T) {
	p := loadCompose(t, nil)
	keys := generateKeys(t)
	for name, s := range blueprintServices(p) {
		var got []string
		for _, sec := range s.Secrets {
			got = append(got, sec.Source)
			if sec.Target != "" && sec.Target != "/run/secrets/"+sec.Source {
				t.Errorf("%s: secret %s mounted at %s, want /run/secrets/%[2]s (BLUEPRINT_KEYS_DIR)", name, sec.Source, sec.Target)
			}
		}
		want := []string{"nats-auth.conf"}
		if !strings.HasPrefix(name, "nats-") {
			want = []string{name + ".pem", "trust.json"}
			if name == "gateway" {
				want = append(want, "access.pem")
			}
			if _, ok := keys["nats-"+name+".nk"]; ok {
				want = append(want, "nats-"+name+".nk")
			}
			if got := deref(s.Environment["BLUEPRINT_KEYS_DIR"]); got != "/run/secrets" {
				t.Errorf("%s: BLUEPRINT_KEYS_DIR = %q, want /run/secrets", name, got)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s mounts %v, want %v", name, got, want)
		}
	}
	for name, sec := range p.Secrets {
		if _, ok := keys[name]; !ok || filepath.Base(sec.File) != name {
			t.Errorf("secret %s is file %s, not a file of `blueprint keys generate`", name, sec.File)
		}
	}
}

// TestComposeNetworksAllowExactlyTheTrustedCalls: containers can reach each
// other only over a network they share. Among the services, the pairs that
// share one must be exactly the callers and callees of the trust lists;
// each database is shared with its service alone, NATS with orders and
// notifications, Redis with the gateway.
func TestComposeNetworksAllowExactlyTheTrustedCalls(t *testing.T) {
	p := loadCompose(t, []string{"compose.yaml"})
	edges := map[string]bool{}
	names := slices.Sorted(maps.Keys(p.Services))
	for i, a := range names {
		for _, b := range names[i+1:] {
			for n := range p.Services[a].Networks {
				if _, ok := p.Services[b].Networks[n]; ok {
					edges[a+" — "+b] = true
				}
			}
		}
	}
	want := map[string]bool{}
	pair := func(a, b string) {
		if a > b {
			a, b = b, a
		}
		want[a+" — "+b] = true
	}
	for callee, callers := range map[string][]string{
		users.Name: users.TrustedCallers, orders.Name: orders.TrustedCallers, notifications.Name: notifications.TrustedCallers,
	} {
		for _, c := range callers {
			pair(c, callee)
		}
	}
	for _, s := range []string{"users", "orders", "notifications"} {
		pair(s, s+"-db")
	}
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		pair(n, "orders")
		pair(n, "notifications")
		for _, m := range []string{"nats-1", "nats-2", "nats-3"} {
			if n < m {
				pair(n, m)
			}
		}
	}
	pair("gateway", "redis")
	for e := range edges {
		if !want[e] {
			t.Errorf("%s share a network, and should not", e)
		}
	}
	for e := range want {
		if !edges[e] {
			t.Errorf("%s share no network, and must", e)
		}
	}
	for name, n := range p.Networks {
		if name != "edge" && !n.Internal {
			t.Errorf("network %s is not internal: its containers could reach out", name)
		}
	}
	t.Logf("pairs sharing a network: %v", slices.Sorted(maps.Keys(edges)))
}

// composeListen are the addresses a Compose service's process listens on,
// from its settings (*_ADDR) and flags (--listen and the like).
func composeListen(s types.ServiceConfig) []string {
	var out []string
	for k, v := range s.Environment {
		if strings.HasSuffix(k, "_ADDR") && v != nil {
			out = append(out, *v)
		}
	}
	for i, a := range s.Command {
		if strings.HasSuffix(a, "-listen") && i+1 < len(s.Command) {
			out = append(out, s.Command[i+1])
		}
	}
	return out
}

// healthURL is the URL a Blueprint service's health check asks.
func healthURL(t *testing.T, name string, s types.ServiceConfig) *url.URL {
	t.Helper()
	if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
		t.Fatalf("%s has no health check", name)
	}
	raw := s.HealthCheck.Test[len(s.HealthCheck.Test)-1]
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s: health check URL %q: %v", name, raw, err)
	}
	return u
}

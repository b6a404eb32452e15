package deploy

import (
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to make the databases' owners

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
	"github.com/ds-blueprint/blueprint/test/deploy/boot"
)

// TestComposeBootsTheSystem checks that the configuration compose.yaml
// gives its containers runs Blueprint, without a Docker engine: each
// container that runs Blueprint's image — the three NATS nodes and the four
// services — becomes a process with exactly its command, the image's
// environment and then its own (interpolated by compose-go), and its
// secrets, volumes and tmpfs as directories; only the service names and
// listen addresses change to this machine's. The PostgreSQL containers'
// users and databases are made on BLUEPRINT_TEST_POSTGRES_URL's server as
// their environment says; Redis is BLUEPRINT_TEST_REDIS_URL's. A new
// user's flow then goes through the gateway, and every process stops
// cleanly on SIGTERM. deploy/compose's own test runs the same file under
// a real engine.
func TestComposeBootsTheSystem(t *testing.T) {
	admin := os.Getenv(sqldbtest.EnvPostgresURL)
	if admin == "" {
		t.Skipf("compose.yaml gives every service a PostgreSQL database: set %s to a server the test may create its users and databases on", sqldbtest.EnvPostgresURL)
	}
	keys := generateKeys(t)
	keysDir := t.TempDir()
	for name, content := range keys {
		if err := os.WriteFile(filepath.Join(keysDir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := loadCompose(t, []string{"compose.yaml"}, "BLUEPRINT_KEYS="+keysDir)

	pg, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	outside := map[string]string{}
	for _, name := range []string{"users-db", "orders-db", "notifications-db"} {
		createComposeDatabase(t, admin, p.Services[name])
		outside[name+":5432"] = pg.Host
	}
	outside["redis:6379"] = localcluster.FreeAddr() // nothing: the gateway limits with its own buckets
	if r := os.Getenv("BLUEPRINT_TEST_REDIS_URL"); r != "" {
		if u, err := url.Parse(r); err == nil {
			outside["redis:6379"] = u.Host
		}
	}

	image := boot.ImageEnv(t, dockerfile)
	var specs []boot.Spec
	for _, name := range []string{"nats-1", "nats-2", "nats-3", "users", "orders", "notifications", "gateway"} {
		specs = append(specs, composeSpec(t, p, name, image))
	}
	sys := boot.Start(t, boot.Config{Binary: binary, Dir: t.TempDir(), Specs: specs, Outside: outside})
	boot.Flow(t, sys.URL(t, "gateway", deref(p.Services["gateway"].Environment["GATEWAY_ADDR"])))
	sys.Stop(t)
}

// composeSpec turns a Compose service into the process its container runs.
func composeSpec(t *testing.T, p *types.Project, name string, image []string) boot.Spec {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("compose.yaml has no service %s", name)
	}
	spec := boot.Spec{
		Name:   name,
		Args:   s.Command,
		Env:    slices.Clone(image),
		Mounts: map[string]map[string][]byte{},
		Listen: map[string][]string{},
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.Environment {
			if !yield(k) {
				return
			}
		}
	}) {
		spec.Env = append(spec.Env, k+"="+deref(s.Environment[k]))
	}
	for _, sec := range s.Secrets {
		target := sec.Target
		if target == "" {
			target = "/run/secrets/" + sec.Source
		}
		content, err := os.ReadFile(p.Secrets[sec.Source].File)
		if err != nil {
			t.Fatalf("%s: secret %s: %v", name, sec.Source, err)
		}
		dir, file := filepath.Split(target)
		dir = filepath.Clean(dir)
		if spec.Mounts[dir] == nil {
			spec.Mounts[dir] = map[string][]byte{}
		}
		spec.Mounts[dir][file] = content
	}
	for _, v := range s.Volumes {
		spec.Mounts[v.Target] = nil
	}
	for _, tmp := range s.Tmpfs {
		spec.Mounts[tmp] = nil
	}
	for _, addr := range composeListen(s) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%s listens on %q: %v", name, addr, err)
		}
		// Others reach it by its service name, on every network it joins.
		spec.Listen[addr] = []string{name + ":" + port}
	}
	// Its health check asks the ops listener from inside the container.
	health := healthURL(t, name, s)
	for addr := range spec.Listen {
		if _, port, _ := net.SplitHostPort(addr); port == health.Port() {
			health.Host = addr
		}
	}
	spec.Ready = health.String()
	return spec
}

// createComposeDatabase makes the user and database a PostgreSQL
// container's environment asks for (POSTGRES_USER, POSTGRES_PASSWORD,
// POSTGRES_DB), dropping them when the test ends.
func createComposeDatabase(t *testing.T, admin string, s types.ServiceConfig) {
	t.Helper()
	user, password, db := deref(s.Environment["POSTGRES_USER"]), deref(s.Environment["POSTGRES_PASSWORD"]), deref(s.Environment["POSTGRES_DB"])
	if user == "" || password == "" || db == "" {
		t.Fatalf("PostgreSQL service without POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB: %v", s.Environment)
	}
	conn, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	drop := func() error {
		_, err := conn.Exec(fmt.Sprintf(`DROP DATABASE IF EXISTS %q WITH (FORCE)`, db))
		if err == nil {
			_, err = conn.Exec(fmt.Sprintf(`DROP ROLE IF EXISTS %q`, user))
		}
		return err
	}
	if err := drop(); err != nil {
		t.Fatalf("drop %s: %v", db, err)
	}
	for _, stmt := range []string{
		fmt.Sprintf(`CREATE ROLE %q LOGIN PASSWORD '%s'`, user, strings.ReplaceAll(password, "'", "''")),
		fmt.Sprintf(`CREATE DATABASE %q OWNER %q`, db, user),
	} {
		if _, err := conn.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("drop %s: %v", db, err)
		}
	})
}

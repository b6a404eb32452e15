package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), args, func(k string) string { return env[k] }, &out, io.Discard)
	return out.String(), err
}

// TestBadConfigurationFailsWithOneLine: a mistake in the environment or on
// the command line stops the program before it starts anything, with exit
// status 2 and one line naming what is wrong.
func TestBadConfigurationFailsWithOneLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown target", map[string]string{"BLUEPRINT_TARGET": "billing"}, nil, "BLUEPRINT_TARGET"},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"bad log format", map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{"bad duration", map[string]string{"UPSTREAM_TIMEOUT": "soon"}, nil, "UPSTREAM_TIMEOUT"},
		{"zero duration", map[string]string{"OUTBOX_POLL_INTERVAL": "0s"}, nil, "OUTBOX_POLL_INTERVAL"},
		{"bad address", map[string]string{"USERS_ADDR": "3002"}, nil, "USERS_ADDR"},
		{"bad ops address", map[string]string{"GATEWAY_OPS_ADDR": "localhost"}, nil, "GATEWAY_OPS_ADDR"},
		{"bad console address", map[string]string{"CONSOLE_ADDR": "9400"}, nil, "CONSOLE_ADDR"},
		{"console target without an address", nil, []string{"run", "--target=console", "--console-addr="}, "CONSOLE_ADDR"},
		{"bad console switch", map[string]string{"CONSOLE_ENABLED": "sometimes"}, nil, "CONSOLE_ENABLED"},
		{"no traces kept", map[string]string{"CONSOLE_TRACES": "0"}, nil, "CONSOLE_TRACES"},
		{"no traces sampled", map[string]string{"CONSOLE_TRACES_PER_SECOND": "0"}, nil, "CONSOLE_TRACES_PER_SECOND"},
		{"bad upstream URL", map[string]string{"ORDERS_URL": "ftp://orders:3003"}, nil, "ORDERS_URL"},
		{"bad NATS URL", map[string]string{"NATS_URL": "http://nats:4222"}, nil, "NATS_URL"},
		{"bad database URL", map[string]string{"USERS_DATABASE_URL": "mysql://db/users"}, nil, "USERS_DATABASE_URL"},
		{"bad number", map[string]string{"NOTIFICATIONS_CONCURRENCY": "many"}, nil, "NOTIFICATIONS_CONCURRENCY"},
		{"zero concurrency", map[string]string{"NOTIFICATIONS_CONCURRENCY": "0"}, nil, "NOTIFICATIONS_CONCURRENCY"},
		{"short ack wait", map[string]string{"NOTIFICATIONS_ACK_WAIT": "500ms"}, nil, "NOTIFICATIONS_ACK_WAIT"},
		{"zero max deliver", map[string]string{"NOTIFICATIONS_MAX_DELIVER": "0"}, nil, "NOTIFICATIONS_MAX_DELIVER"},
		{"bad bool", map[string]string{"RATE_LIMITS_ENABLED": "maybe"}, nil, "RATE_LIMITS_ENABLED"},
		{"bad chaos switch", map[string]string{"BLUEPRINT_CHAOS": "please"}, nil, "BLUEPRINT_CHAOS"},
		{"negative rate", map[string]string{"RATE_LIMIT_RPS": "-1"}, nil, "RATE_LIMIT_RPS"},
		{"negative max in flight", map[string]string{"GATEWAY_MAX_IN_FLIGHT": "-1"}, nil, "GATEWAY_MAX_IN_FLIGHT"},
		{"redis URL over http", map[string]string{"REDIS_URL": "http://cache:6379"}, nil, "REDIS_URL"},
		{"redis URL with a bad port", map[string]string{"REDIS_URL": "redis://:" + testPassword + "@cache:port/0"}, nil, "REDIS_URL"},
		{"redis URL with a bad database", map[string]string{"REDIS_URL": "redis://:" + testPassword + "@cache:6379/zero"}, nil, "REDIS_URL"},
		{"upstream URL with a password", map[string]string{"USERS_URL": "ftp://app:" + testPassword + "@users:3002"}, nil, "USERS_URL"},
		{"upstream URL that does not parse, with a password", map[string]string{"ORDERS_URL": "http://app:" + testPassword + "@orders:30x3"}, nil, "ORDERS_URL"},
		{"upstream URL flag with a password", nil, []string{"run", "--notifications-url", "ftp://app:" + testPassword + "@n:3004"}, "NOTIFICATIONS_URL"},
		{"NATS URL with a password", map[string]string{"NATS_URL": "http://app:" + testPassword + "@nats:4222"}, nil, "NATS_URL"},
		{"NATS URL that does not parse, with a password", map[string]string{"NATS_URL": "nats://app:" + testPassword + "@nats:42x22"}, nil, "NATS_URL"},
		{"NATS URL without a scheme, with a password", map[string]string{"NATS_URL": "app:" + testPassword + "@nats:4222"}, nil, "NATS_URL"},
		{"NATS URL list with a password", map[string]string{"NATS_URL": "nats://app:" + testPassword + "@a:4222,http://app:" + testPassword + "@b:4222"}, nil, "NATS_URL"},
		{"database URL with a password", map[string]string{"USERS_DATABASE_URL": "mysql://app:" + testPassword + "@db/users"}, nil, "USERS_DATABASE_URL"},
		{"database URL that does not parse, with a password", map[string]string{"ORDERS_DATABASE_URL": "postgres://app:" + testPassword + "@db:port/orders"}, nil, "ORDERS_DATABASE_URL"},
		{"webhook URL with a password", webhookEnv("ftp://app:" + testPassword + "@hooks.example.com/"), nil, "NOTIFY_WEBHOOK_URL"},
		{"webhook URL to link-local with a password", webhookEnv("http://app:" + testPassword + "@169.254.10.1/"), nil, "NOTIFY_WEBHOOK_URL"},
		{"zero attempt timeout", map[string]string{"UPSTREAM_ATTEMPT_TIMEOUT": "0s"}, nil, "UPSTREAM_ATTEMPT_TIMEOUT"},
		{"negative retries", map[string]string{"UPSTREAM_RETRIES": "-1"}, nil, "UPSTREAM_RETRIES"},
		{"no bulkhead room", map[string]string{"UPSTREAM_MAX_IN_FLIGHT": "0"}, nil, "UPSTREAM_MAX_IN_FLIGHT"},
		{"failure rate over 1", map[string]string{"UPSTREAM_BREAKER_FAILURE_RATE": "1.5"}, nil, "UPSTREAM_BREAKER_FAILURE_RATE"},
		{"zero breaker delay", map[string]string{"UPSTREAM_BREAKER_DELAY": "0s"}, nil, "UPSTREAM_BREAKER_DELAY"},
		{"too many replicas", map[string]string{"NATS_STREAM_REPLICAS": "7"}, nil, "NATS_STREAM_REPLICAS"},
		{"one service without keys", nil, []string{"run", "--target=orders"}, "BLUEPRINT_KEYS_DIR"},
		{"webhook to link-local", webhookEnv("http://169.254.10.1/hook"), nil, "NOTIFY_WEBHOOK_URL"},
		{"webhook to metadata", webhookEnv("http://metadata.google.internal/"), nil, "NOTIFY_WEBHOOK_URL"},
		{"webhook to metadata, link-local allowed", map[string]string{
			"NOTIFY_WEBHOOK_URL": "http://169.254.169.254/latest/meta-data/", "NOTIFY_WEBHOOK_SECRET": testWebhookSecret,
			"NOTIFY_WEBHOOK_ALLOW_LINK_LOCAL": "true",
		}, nil, "NOTIFY_WEBHOOK_URL"},
		{"webhook over ftp", webhookEnv("ftp://hooks.example.com/"), nil, "NOTIFY_WEBHOOK_URL"},
		{"webhook without host", webhookEnv("https:///hook"), nil, "NOTIFY_WEBHOOK_URL"},
		{"webhook without secret", map[string]string{"NOTIFY_WEBHOOK_URL": "http://127.0.0.1:8080/"}, nil, "NOTIFY_WEBHOOK_SECRET"},
		{"webhook short secret", map[string]string{"NOTIFY_WEBHOOK_URL": "http://127.0.0.1:8080/", "NOTIFY_WEBHOOK_SECRET": "hunter2"}, nil, "NOTIFY_WEBHOOK_SECRET"},
		{"webhook secret without URL", map[string]string{"NOTIFY_WEBHOOK_SECRET": testWebhookSecret}, nil, "NOTIFY_WEBHOOK_SECRET"},
		{"webhook timeout zero", map[string]string{"NOTIFY_WEBHOOK_TIMEOUT": "0s"}, nil, "NOTIFY_WEBHOOK_TIMEOUT"},
		{"webhook timeout too long", map[string]string{"NOTIFY_WEBHOOK_TIMEOUT": "1m"}, nil, "NOTIFY_WEBHOOK_TIMEOUT"},
		{"webhook allow flag not a bool", map[string]string{"NOTIFY_WEBHOOK_ALLOW_LINK_LOCAL": "yes please"}, nil, "NOTIFY_WEBHOOK_ALLOW_LINK_LOCAL"},
		{"bad flag value", nil, []string{"run", "--upstream-timeout=soon"}, "upstream-timeout"},
		{"unknown flag", nil, []string{"run", "--colour"}, "colour"},
		{"stray argument", nil, []string{"run", "now"}, "now"},
		{"unknown command", nil, []string{"launch"}, "launch"},
		{"dlq without NATS_URL", nil, []string{"dlq", "list"}, "NATS_EMBEDDED_ADDR=127.0.0.1:4222 and pass --nats-url"},
		{"dlq replay of nothing", nil, []string{"dlq", "replay", "--nats-url", "nats://127.0.0.1:4222"}, "--seq or --all"},
		{"dlq replay of seq and all", nil, []string{"dlq", "replay", "--seq", "1", "--all", "--nats-url", "nats://127.0.0.1:4222"}, "--seq or --all"},
		{"dlq bad seq", nil, []string{"dlq", "replay", "--seq", "1,two"}, "two"},
		{"dlq bad NATS URL", map[string]string{"NATS_URL": "http://nats:4222"}, []string{"dlq", "list"}, "NATS_URL"},
		{"dlq bad NATS URL with a password", map[string]string{"NATS_URL": "http://app:" + testPassword + "@nats:4222"}, []string{"dlq", "list"}, "NATS_URL"},
		{"dlq unknown command", nil, []string{"dlq", "drain"}, "drain"},
		{"dlq alone", nil, []string{"dlq"}, "blueprint help dlq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := run(t, tc.env, tc.args...)
			if err == nil {
				t.Fatalf("Run = nil, want a configuration error")
			}
			if code := ExitCode(err); code != 2 {
				t.Errorf("ExitCode(%v) = %d, want 2", err, code)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q, want one line naming %s", msg, tc.want)
			}
			if secret := tc.env["NOTIFY_WEBHOOK_SECRET"]; secret != "" && strings.Contains(err.Error(), secret) {
				t.Errorf("error = %q, repeats the webhook secret", err)
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Errorf("error = %q, repeats a URL's password", err)
			}
		})
	}
}

// testPassword is the password in the URLs of the tests, which no message
// may repeat.
const testPassword = "url-password-42"

// testWebhookSecret is a valid NOTIFY_WEBHOOK_SECRET.
const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// webhookEnv sets the webhook channel up for url with a valid secret.
func webhookEnv(url string) map[string]string {
	return map[string]string{"NOTIFY_WEBHOOK_URL": url, "NOTIFY_WEBHOOK_SECRET": testWebhookSecret}
}

// TestWebhookConfiguration: settings of the webhook channel that start.
func TestWebhookConfiguration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"no webhook", nil},
		{"loopback sink", webhookEnv("http://127.0.0.1:8080/hook")},
		{"in-cluster receiver", webhookEnv("http://receiver.default.svc:8080/hook")},
		{"raw secret of 32 bytes", map[string]string{
			"NOTIFY_WEBHOOK_URL": "https://hooks.example.com/", "NOTIFY_WEBHOOK_SECRET": strings.Repeat("s", 32),
		}},
		{"link-local when allowed", map[string]string{
			"NOTIFY_WEBHOOK_URL": "http://169.254.10.1/hook", "NOTIFY_WEBHOOK_SECRET": testWebhookSecret,
			"NOTIFY_WEBHOOK_ALLOW_LINK_LOCAL": "true",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cfg Config
			f := newFlags("run", func(k string) string { return tc.env[k] })
			cfg.registerFlags(f)
			if err := f.parse(nil); err != nil {
				t.Fatalf("parse = %v", err)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate = %v, want nil", err)
			}
		})
	}
}

// TestPortInUse: a listener that cannot bind fails the start with one error
// naming the service, before anything else runs.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	args := []string{"run", "--data-dir", t.TempDir()}
	for _, s := range services {
		args = append(args, "--"+s+"-addr", "127.0.0.1:0", "--"+s+"-ops-addr", "127.0.0.1:0")
	}
	args = append(args, "--console-addr", "127.0.0.1:0")
	args = append(args, "--gateway-addr", ln.Addr().String())
	_, err = run(t, nil, args...)
	if err == nil || !strings.Contains(err.Error(), "gateway") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run with the gateway port taken = %v, want an error naming the gateway and the busy address", err)
	}
	if code := ExitCode(err); code != 1 {
		t.Errorf("ExitCode = %d, want 1", code)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	out, err := run(t, nil, "--help")
	if err != nil {
		t.Fatalf("Run(--help) = %v", err)
	}
	for _, want := range []string{"blueprint demo", "blueprint keys generate", "blueprint chaos", "blueprint dlq", "Usage:"} {
		if !strings.Contains(out, want) {
			t.Errorf("help does not mention %q:\n%s", want, out)
		}
	}
	out, err = run(t, nil, "help", "dlq")
	if err != nil || !strings.Contains(out, "blueprint dlq replay") || !strings.Contains(out, "NATS_EMBEDDED_ADDR") {
		t.Errorf("Run(help dlq) = %v, printed:\n%s\nwant the dlq commands and how to reach an all-in-one NATS", err, out)
	}
	out, err = run(t, nil, "help", "run")
	if err != nil {
		t.Fatalf("Run(help run) = %v", err)
	}
	for _, v := range Variables() {
		if v.Env != "" && !strings.Contains(out, v.Env) {
			t.Errorf("help run does not mention %s", v.Env)
		}
	}
	// Help shows the environment's values as defaults, but never a secret.
	out, err = run(t, webhookEnv("http://127.0.0.1:8080/hook"), "help", "run")
	if err != nil {
		t.Fatalf("Run(help run) = %v", err)
	}
	if !strings.Contains(out, "127.0.0.1:8080/hook") || strings.Contains(out, testWebhookSecret) {
		t.Errorf("help run with the webhook set shows the URL %v and the secret %v, want the URL only",
			strings.Contains(out, "127.0.0.1:8080/hook"), strings.Contains(out, testWebhookSecret))
	}
}

// TestHelpHidesURLPasswords: with a password in every URL-valued variable,
// no help that shows the environment's values as defaults repeats one, and
// each URL still shows where it points.
func TestHelpHidesURLPasswords(t *testing.T) {
	t.Parallel()
	env := map[string]string{}
	for _, v := range Variables() {
		if strings.HasSuffix(v.Env, "_URL") {
			// A list, with a URL that does not parse: where its password
			// ends cannot be told from the URL's syntax.
			env[v.Env] = "nats://app:" + testPassword + "@a.example:4222,nats://app:" + testPassword + "@b.example:42x22"
		}
	}
	if len(env) < 8 {
		t.Fatalf("found %d URL-valued variables, want every *_URL of the README table", len(env))
	}
	for _, args := range [][]string{
		{"help", "run"}, {"run", "--help"}, {"migrate", "-h"}, {"dlq", "list", "-h"}, {"dlq", "replay", "-h"},
	} {
		out, err := run(t, env, args...)
		if err != nil {
			t.Fatalf("Run(%q) = %v", args, err)
		}
		if strings.Contains(out, testPassword) {
			t.Errorf("Run(%q) prints a URL's password:\n%s", args, out)
		}
		if !strings.Contains(out, "xxxxx@b.example:42x22") {
			t.Errorf("Run(%q) does not show the URLs with their passwords masked:\n%s", args, out)
		}
	}
}

// TestDataIsPrivate: everything `run` keeps in a data directory it creates
// (the directory, the SQLite databases with their -wal and -shm files, the
// embedded NATS store) is readable by its owner only.
func TestDataIsPrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	startApp(t, "--data-dir", dir)
	var seen []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed by the running system since listed
		}
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		rel, _ := filepath.Rel(dir, path)
		seen = append(seen, rel)
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", filepath.Join("data", rel), got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".", "users.db", "orders.db-wal", "notifications.db-shm", "nats"} {
		if !slices.Contains(seen, want) {
			t.Errorf("data dir holds %q, want %s among them", seen, want)
		}
	}
}

func TestKeysGenerate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := run(t, nil, "keys", "generate", "--out", dir); err != nil {
		t.Fatalf("keys generate = %v", err)
	}
	for _, f := range []string{"access.pem", "trust.json", "gateway.pem", "users.pem", "orders.pem", "notifications.pem",
		"nats-orders.nk", "nats-notifications.nk", "nats-admin.nk", "nats-auth.conf"} {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("keys generate did not write %s: %v", f, err)
		}
		want := os.FileMode(0o600)
		if f == "nats-auth.conf" {
			want = 0o644 // public keys only
		}
		if perm := info.Mode().Perm(); perm != want {
			t.Errorf("%s mode = %o, want %o", f, perm, want)
		}
	}
	_, err := run(t, nil, "keys", "generate", "--out", dir)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second keys generate = %v, want a refusal to overwrite", err)
	}
	if _, err := run(t, nil, "keys", "generate"); ExitCode(err) != 2 {
		t.Errorf("keys generate without --out = %v, want a usage error", err)
	}
	if _, err := run(t, nil, "keys", "generate", "--out", t.TempDir(), "--owner", "65532"); ExitCode(err) != 2 {
		t.Errorf("keys generate --owner 65532 = %v, want a usage error", err)
	}
}

// TestKeysGenerateOwner: --owner hands the directory and every file to a
// user, so that a container running as it can read keys from the host.
func TestKeysGenerateOwner(t *testing.T) {
	t.Parallel()
	uid, gid := os.Getuid(), os.Getgid() // a chown anyone may make
	if os.Geteuid() == 0 {
		uid, gid = 65532, 65532 // the image's user
	}
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := run(t, nil, "keys", "generate", "--out", dir, "--owner", fmt.Sprintf("%d:%d", uid, gid)); err != nil {
		t.Fatalf("keys generate --owner = %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range append([]string{"."}, names(entries)...) {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
		}
	}
}

func names(entries []os.DirEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Name()
	}
	return out
}

// TestREADMEListsEveryVariable keeps the README's configuration table in
// step with the code: every variable `run` reads appears there.
func TestREADMEListsEveryVariable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range Variables() {
		if !bytes.Contains(readme, []byte("`"+v.Env+"`")) {
			t.Errorf("README does not list %s (--%s, default %q)", v.Env, v.Flag, v.Default)
		}
	}
}

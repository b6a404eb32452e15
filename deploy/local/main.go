// Command local runs Blueprint's production shape on this machine, with no
// container engine: a 3-node NATS cluster with JetStream (the binary's own
// `blueprint nats`), the PostgreSQL server of the machine (one database per
// service), 2 gateways, 2 users, 3 orders and 2 notifications replicas, all
// on loopback ports. It prints where everything listens and stops it all
// cleanly on Ctrl-C.
//
//	go run ./deploy/local
//	go run ./deploy/local --postgres postgres://user:pw@db:5432/postgres --verbose
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "local:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	pg := fs.String("postgres", envOr("BLUEPRINT_LOCAL_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
		"PostgreSQL server on which to create the services' databases (env BLUEPRINT_LOCAL_POSTGRES_URL)")
	dir := fs.String("dir", defaultDir(), "directory for the binary, keys, NATS stores and logs")
	prefix := fs.String("db-prefix", "blueprint_local", "prefix of the database names")
	verbose := fs.Bool("verbose", false, "stream every process's log here too")
	cfg := localcluster.Config{}
	fs.IntVar(&cfg.NATSNodes, "nats", 3, "NATS nodes (1 or 3)")
	fs.IntVar(&cfg.Gateways, "gateways", 2, "gateway replicas")
	fs.IntVar(&cfg.Users, "users", 2, "users replicas")
	fs.IntVar(&cfg.Orders, "orders", 3, "orders replicas")
	fs.IntVar(&cfg.Notifications, "notifications", 2, "notifications replicas")
	fs.StringVar(&cfg.Console, "console", "127.0.0.1:9400", "listen address of the console every process exports its telemetry to; empty: none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("no user cache directory to keep the binary, keys and data in: give --dir")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	// It holds private keys: the user's alone.
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "directory", abs, "(binary, keys, NATS stores, logs; --dir changes it)")
	cfg.Dir, cfg.PostgresURL, cfg.DatabasePrefix = abs, *pg, *prefix
	if *verbose {
		cfg.Log = stdout
	}

	cfg.Binary = filepath.Join(abs, "blueprint")
	fmt.Fprintln(stdout, "building", cfg.Binary)
	build := exec.CommandContext(ctx, "go", "build", "-o", cfg.Binary, "github.com/ds-blueprint/blueprint/cmd/blueprint")
	build.Stdout, build.Stderr = stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}

	c, err := localcluster.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nBlueprint is running:")
	for _, p := range c.Processes {
		fmt.Fprintf(stdout, "  %-16s %-28s %s\n", p.Name, p.URL, p.OpsURL)
	}
	if c.ConsoleURL != "" {
		fmt.Fprintf(stdout, "\nConsole: %s (traces, breakers per replica, events, dead letters)", c.ConsoleURL)
	}
	fmt.Fprintf(stdout, "\nDatabases: %s, %s, %s\nLogs: %s/*.log\n", c.Databases["users"], c.Databases["orders"], c.Databases["notifications"], abs)
	fmt.Fprintf(stdout, "Try: %s demo --gateway %s\nCtrl-C stops everything.\n", cfg.Binary, c.Named("gateway-")[0].URL)
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping…")
	return c.Stop()
}

// defaultDir is where the binary, the keys and the data go unless --dir
// says otherwise: the user's cache directory, out of any working tree, where
// a `git add` could commit the private keys. It is "" when the user has no
// cache directory.
func defaultDir() string {
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "blueprint", "local")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// migrateCommand applies the migrations of the targeted services and exits.
// `run` applies them at start too (under a lock, so replicas starting
// together do not race); this is for deployments that migrate in a job of
// their own before rolling out.
func migrateCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg Config
	f := newFlags("migrate", getenv)
	cfg.registerStorageFlags(f)
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: blueprint migrate [flags]\n\nApplies each service's database migrations and exits.\n\nFlags:")
			f.usage(stdout)
			return nil
		}
		return err
	}
	if err := oneLine(cfg.validateStorage()); err != nil {
		return err
	}
	for _, s := range cfg.targets {
		fs, ok := migrations[s]
		if !ok {
			continue // the gateway keeps no data
		}
		dbURL := cfg.databaseURL(s)
		db, err := sqldb.Open(ctx, dbURL, fs)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		if err := db.Close(); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		fmt.Fprintf(stdout, "%s: migrations applied to %s\n", s, redactURL(dbURL))
	}
	return nil
}

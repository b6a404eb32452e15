package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// TestGroupCommit: transactions that queue while one is being committed
// share the next commit, and still succeed or fail each on its own: a
// member whose work fails is rolled back alone, one whose caller cancels
// mid-work does not take the group down, and one whose caller gave up
// while it queued is never run.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := sqldbtest.OpenSQLite(t, migrations)
	now := sqldb.NewTime(time.Now())
	insert := func(ctx context.Context, tx *sql.Tx, name string) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO items (name, created_at) VALUES ($1, $2)`, name, now)
		return err
	}

	// The first transaction holds the write connection until released, so
	// everything sent meanwhile queues for the next group.
	release, holding := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			close(holding)
			<-release
			return insert(ctx, tx, "first")
		})
	}()
	<-holding

	const members = 24
	var wg sync.WaitGroup
	results := make([]error, members)
	ran := make([]bool, members)
	for i := range members {
		wg.Go(func() {
			name := fmt.Sprintf("m%02d", i)
			switch i % 4 {
			case 0: // fails after writing: its row must not stay
				results[i] = db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
					ran[i] = true
					if err := insert(ctx, tx, name); err != nil {
						return err
					}
					return errRollback
				})
			case 1: // its caller cancels while its work runs
				cctx, cancel := context.WithCancel(ctx)
				results[i] = db.InTx(cctx, func(ctx context.Context, tx *sql.Tx) error {
					ran[i] = true
					cancel()
					return insert(ctx, tx, name)
				})
			default:
				results[i] = db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
					ran[i] = true
					return insert(ctx, tx, name)
				})
			}
		})
	}
	// One more caller gives up while queued.
	gaveUp, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	gaveUpRan := false
	gaveUpErr := db.InTx(gaveUp, func(ctx context.Context, tx *sql.Tx) error {
		gaveUpRan = true
		return insert(ctx, tx, "gave-up")
	})
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first transaction = %v", err)
	}
	if !errors.Is(gaveUpErr, context.DeadlineExceeded) || gaveUpRan {
		t.Errorf("a caller that gave up while queued: err = %v, ran = %v; want its deadline and not run", gaveUpErr, gaveUpRan)
	}

	want := []string{"first"}
	for i := range members {
		switch {
		case !ran[i]:
			t.Errorf("member %d was not run", i)
		case i%4 == 0:
			if !errors.Is(results[i], errRollback) {
				t.Errorf("member %d = %v, want its own error", i, results[i])
			}
		case results[i] != nil:
			t.Errorf("member %d = %v, want nil", i, results[i])
		default:
			want = append(want, fmt.Sprintf("m%02d", i))
		}
	}
	slices.Sort(want)
	if got := names(t, db); !slices.Equal(got, want) {
		t.Errorf("stored names = %v, want %v: exactly the members that succeeded", got, want)
	}
}

// TestGroupCommitAfterClose: a transaction sent to a closed database fails
// at once with an error instead of waiting forever.
func TestGroupCommitAfterClose(t *testing.T) {
	t.Parallel()
	db := sqldbtest.OpenSQLite(t, migrations)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- db.InTx(t.Context(), func(context.Context, *sql.Tx) error { return nil }) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("InTx after Close = nil, want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("InTx after Close did not return")
	}
}

// TestGroupCommitPanic: a panic in a caller's work is raised in the caller,
// as it would be without group commit (where the HTTP server's recovery
// turns it into a 500), and the database goes on working.
func TestGroupCommitPanic(t *testing.T) {
	t.Parallel()
	db := sqldbtest.OpenSQLite(t, migrations)
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want the work's own panic", v)
			}
		}()
		_ = db.InTx(t.Context(), func(context.Context, *sql.Tx) error { panic("boom") })
		t.Error("InTx returned after its work panicked")
	}()
	if err := db.InTx(t.Context(), func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO items (name, created_at) VALUES ('after', $1)`, sqldb.NewTime(time.Now()))
		return err
	}); err != nil {
		t.Errorf("InTx after a panic = %v, want nil", err)
	}
}

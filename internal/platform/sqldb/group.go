package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/metric"
)

// maxGroup bounds how many transactions share one commit: enough to carry
// the load of many clients on one fsync, few enough that a group's work
// stays a small part of a request's time.
const maxGroup = 128

var errClosed = errors.New("sqldb: database closed")

// groupCommit runs the write transactions of a SQLite database on its one
// write connection, and commits those that queued up while the last commit
// was being made to disk together: one transaction, one fsync. A commit is
// as durable as before; under load there are just fewer of them. Each
// caller's work runs inside a SAVEPOINT, so one that fails is rolled back
// alone and its caller gets its error, while the others commit.
//
// The work of a group runs with its callers' contexts stripped of their
// cancellation (context.WithoutCancel, values such as the trace kept): a
// statement interrupted by one caller's cancel would make SQLite roll back
// the whole transaction, and with it everyone else's work. A caller whose
// context has ended before its turn is not run at all.
type groupCommit struct {
	write   *sql.DB
	queue   chan *pending
	stop    chan struct{}
	closing sync.Once
	done    chan struct{}
	// sizes records how many transactions each commit carried; nil
	// without telemetry.
	sizes metric.Int64Histogram
}

type pending struct {
	ctx    context.Context
	fn     func(ctx context.Context, tx *sql.Tx) error
	result chan error
}

func startGroupCommit(write *sql.DB, sizes metric.Int64Histogram) *groupCommit {
	g := &groupCommit{write: write, queue: make(chan *pending), stop: make(chan struct{}), done: make(chan struct{}), sizes: sizes}
	go g.run() // ends on close
	return g
}

// inTx queues fn and waits for the commit of its group. Once queued, fn's
// outcome is waited for even if ctx ends, so that the caller never reports
// a failure for work that was committed. A panic in fn is raised again
// here, in the caller's goroutine, as if fn had run there.
func (g *groupCommit) inTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	p := &pending{ctx: ctx, fn: fn, result: make(chan error, 1)}
	select {
	case g.queue <- p:
		err := <-p.result
		if pe, ok := errors.AsType[*panicked](err); ok {
			panic(pe.value)
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-g.stop:
		return errClosed
	}
}

func (g *groupCommit) run() {
	defer close(g.done)
	for {
		var group []*pending
		select {
		case p := <-g.queue:
			group = append(group, p)
		case <-g.stop:
			return
		}
		// Everyone who queued while the last commit was on its way to disk
		// joins this one; nobody waits for a group to fill.
	gather:
		for len(group) < maxGroup {
			select {
			case p := <-g.queue:
				group = append(group, p)
			default:
				break gather
			}
		}
		g.commit(group)
	}
}

// commit runs a group in one transaction and tells each caller its outcome.
func (g *groupCommit) commit(group []*pending) {
	results := make([]error, len(group))
	defer func() {
		for i, p := range group {
			p.result <- results[i]
		}
	}()
	// BEGIN and COMMIT are shared by the group; their spans go into the
	// trace of the group's first transaction.
	ctx := context.WithoutCancel(group[0].ctx)
	tx, err := g.write.BeginTx(ctx, nil)
	if err != nil {
		for i := range results {
			results[i] = fmt.Errorf("begin: %w", err)
		}
		return
	}
	alone := len(group) == 1 // no savepoint needed: its rollback is the transaction's
	ran := 0
	for i, p := range group {
		if err := p.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if results[i] = runPart(context.WithoutCancel(p.ctx), tx, p.fn, alone); results[i] == nil {
			ran++
		} else if errors.Is(results[i], errBroken) {
			// The transaction itself failed: nothing of the group can commit.
			_ = tx.Rollback()
			for j := range results {
				results[j] = results[i]
			}
			return
		}
	}
	if ran == 0 {
		_ = tx.Rollback()
		return
	}
	if err := tx.Commit(); err != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = fmt.Errorf("commit: %w", err)
			}
		}
		return
	}
	if g.sizes != nil {
		g.sizes.Record(ctx, int64(ran))
	}
}

// errBroken marks a failure of the shared transaction rather than of one
// caller's work.
var errBroken = errors.New("group transaction failed")

// panicked carries a panic of a caller's work back to the caller.
type panicked struct{ value any }

func (p *panicked) Error() string { return fmt.Sprintf("panic in a transaction: %v", p.value) }

// runPart runs one caller's work inside a savepoint, rolled back to when
// the work fails.
func runPart(ctx context.Context, tx *sql.Tx, fn func(ctx context.Context, tx *sql.Tx) error, alone bool) error {
	if alone {
		return guarded(ctx, tx, fn)
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT part`); err != nil {
		return fmt.Errorf("%w: savepoint: %w", errBroken, err)
	}
	if err := guarded(ctx, tx, fn); err != nil {
		if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO part`); rerr != nil {
			return fmt.Errorf("%w: roll back to savepoint: %w (after %w)", errBroken, rerr, err)
		}
		if _, rerr := tx.ExecContext(ctx, `RELEASE part`); rerr != nil {
			return fmt.Errorf("%w: release savepoint: %w", errBroken, rerr)
		}
		return err
	}
	if _, err := tx.ExecContext(ctx, `RELEASE part`); err != nil {
		return fmt.Errorf("%w: release savepoint: %w", errBroken, err)
	}
	return nil
}

// guarded runs fn, turning a panic into a *panicked error: the committer
// goes on with the group, and the caller panics in its own goroutine.
func guarded(ctx context.Context, tx *sql.Tx, fn func(ctx context.Context, tx *sql.Tx) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicked{value: v}
		}
	}()
	return fn(ctx, tx)
}

// close stops the committer after the group it is committing. Safe to
// call twice.
func (g *groupCommit) close() {
	g.closing.Do(func() { close(g.stop) })
	<-g.done
}

// groupSizes is the histogram of how many transactions each commit carried.
func groupSizes(meter metric.MeterProvider) (metric.Int64Histogram, error) {
	h, err := meter.Meter("github.com/ds-blueprint/blueprint/internal/platform/sqldb").Int64Histogram(
		"blueprint.db.group_commit.size",
		metric.WithDescription("Write transactions committed together by one SQLite commit (group commit)."),
		metric.WithUnit("{transaction}"),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128))
	if err != nil {
		return nil, fmt.Errorf("group commit metric: %w", err)
	}
	return h, nil
}

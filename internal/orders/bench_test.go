package orders

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// BenchmarkCreate is one POST /orders in the orders service: the key
// claimed in one transaction, then the order, its outbox row and the key's
// answer in a second, each committed durably (SQLite: WAL, synchronous
// FULL), on each backend.
func BenchmarkCreate(b *testing.B) {
	for _, backend := range sqldbtest.Backends {
		b.Run(backend.Name, func(b *testing.B) {
			ts := newTestService(b, backend)
			i := 0
			for b.Loop() {
				i++
				if _, err := ts.Create(b.Context(), "user-1", fmt.Sprintf("key-%d", i), NewOrder{SKU: "BENCH", Qty: 1}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreateConcurrent is BenchmarkCreate from 50 clients at once, as
// the service meets them under load: on SQLite the transactions that queue
// during a commit share the next one (group commit), so an order costs a
// share of an fsync, not one or two.
func BenchmarkCreateConcurrent(b *testing.B) {
	for _, backend := range sqldbtest.Backends {
		b.Run(backend.Name, func(b *testing.B) {
			ts := newTestService(b, backend)
			var n atomic.Int64
			b.SetParallelism(25) // × GOMAXPROCS goroutines
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key := fmt.Sprintf("key-%d", n.Add(1))
					if _, err := ts.Create(b.Context(), "user-1", key, NewOrder{SKU: "BENCH", Qty: 1}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

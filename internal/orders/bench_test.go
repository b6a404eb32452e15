package orders

import (
	"fmt"
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

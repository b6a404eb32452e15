//go:build fault

package fault

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// Scenario 10: the newcomer's all-in-one process (SQLite, embedded NATS)
// SIGKILLed 5 times during 2,000 POSTs and started again on its data dir.
// Clients retry with their keys; the SQLite files stay intact and every
// accepted order is notified once.
func TestAllInOneKilled(t *testing.T) {
	s := start(t, localcluster.Config{AllInOne: true})
	ctx := t.Context()
	var accepted atomic.Int64
	p := s.Get("blueprint")
	done := afterAccepted(&accepted, 300, func() {
		for i := range int64(5) {
			for accepted.Load() < 300*(i+1) {
				time.Sleep(5 * time.Millisecond)
			}
			if err := p.Kill(); err != nil {
				t.Errorf("kill: %v", err)
			}
			if err := p.Restart(ctx); err != nil {
				t.Errorf("restart: %v", err)
			}
		}
	})
	res := s.client.Run(ctx, t, harness.Load{Orders: 2000, Clients: 20, Rate: 100}, &accepted)
	<-done
	rep, took := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	if len(res.GaveUp) > 0 {
		t.Errorf("%d orders never accepted", len(res.GaveUp))
	}
	for name, url := range s.Databases {
		var result string
		db := harness.OpenDB(t, url)
		if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&result); err != nil || result != "ok" {
			t.Errorf("%s database: integrity_check = %q, %v; want ok", name, result, err)
		}
	}
	record(t, row{Scenario: "10. all-in-one SIGKILLed ×5", Requests: 2000, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / 2000, Report: rep, Recovery: took,
		Note: "integrity_check ok on " + strings.Join(keys(s.Databases), ", ") + "; " + itoa(res.Requests) + " requests with retries"})
}

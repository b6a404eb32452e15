//go:build fault

package fault

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// Scenario 4: orders killed between an order's commit and its publish, 5
// times during 2,000 POSTs — a crash rule at the orders.after_commit fault
// point makes the process SIGKILL itself there. After each restart the
// relay publishes what was committed; the clients' retries replay.
func TestOrdersKilledAfterCommit(t *testing.T) {
	s := start(t, localcluster.Config{})
	ctx := t.Context()
	p := s.Get("orders-1")
	var accepted atomic.Int64
	done := afterAccepted(&accepted, 200, func() {
		for i := range int64(5) {
			for accepted.Load() < 200+300*i {
				time.Sleep(5 * time.Millisecond)
			}
			setFault(t, p.OpsURL, map[string]any{"route": orders.FaultAfterCommit, "crash": true, "errorRate": 1})
			for p.Running() {
				time.Sleep(5 * time.Millisecond)
			}
			if err := p.Restart(ctx); err != nil {
				t.Errorf("restart orders: %v", err)
			}
		}
	})
	res := s.client.Run(ctx, t, harness.Load{Orders: 2000, Clients: 20, Rate: 100}, &accepted)
	<-done
	rep, took := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	record(t, row{Scenario: "4. orders killed between commit and publish ×5", Requests: 2000, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / 2000, Report: rep, Recovery: took,
		Note: itoa(res.Requests) + " requests with retries"})
}

// Scenario 5: the worker killed after delivering and before acking, 5
// times. Each of those events is redelivered and delivered again — at least
// once — so the webhook receiver sees it twice with one Idempotency-Key,
// and the notification is recorded once.
func TestWorkerKilledAfterDelivery(t *testing.T) {
	sink := newSink(t)
	s := start(t, localcluster.Config{ServiceEnv: map[string][]string{"notifications": sink.env()}})
	ctx := t.Context()
	p := s.Get("notifications-1")
	var accepted atomic.Int64
	done := afterAccepted(&accepted, 200, func() {
		for i := range int64(5) {
			for accepted.Load() < 200+300*i {
				time.Sleep(5 * time.Millisecond)
			}
			setFault(t, p.OpsURL, map[string]any{"route": notifications.FaultAfterDelivery, "crash": true, "errorRate": 1})
			for p.Running() {
				time.Sleep(5 * time.Millisecond)
			}
			if err := p.Restart(ctx); err != nil {
				t.Errorf("restart notifications: %v", err)
			}
		}
	})
	res := s.client.Run(ctx, t, harness.Load{Orders: 2000, Clients: 20, Rate: 100}, &accepted)
	<-done
	rep, took := harness.Settle(t, s.src, res.Accepted, settleTimeout)
	keys, requests := sink.counts()
	if keys != len(res.Accepted) {
		t.Errorf("receiver saw %d distinct Idempotency-Keys for %d orders", keys, len(res.Accepted))
	}
	if requests <= keys {
		t.Errorf("receiver got %d requests for %d keys: no delivery was repeated, so no crash hit after a delivery", requests, keys)
	}
	record(t, row{Scenario: "5. worker killed after delivery, before ack ×5", Requests: 2000, Accepted: len(res.Accepted),
		FirstTry: float64(res.FirstTry) / 2000, Report: rep, Recovery: took,
		Note: "receiver: " + itoa(requests) + " requests, " + itoa(keys) + " distinct Idempotency-Keys"})
}

// setFault sets a chaos rule on a service's ops listener.
func setFault(t *testing.T, opsURL string, rule map[string]any) {
	t.Helper()
	body, _ := json.Marshal(rule)
	resp, err := http.Post(opsURL+"/chaos", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Errorf("set fault: %v", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		t.Errorf("set fault %v: %d %s", rule, resp.StatusCode, b.String())
	}
}

// sink is a webhook receiver that counts what it gets and fails a share of
// the requests on demand.
type sink struct {
	srv      *httptest.Server
	mu       sync.Mutex
	keys     map[string]int
	requests int
	failRate atomic.Uint64 // in thousandths
	failed   atomic.Int64
	n        atomic.Uint64
}

const sinkSecret = "fault-suite-webhook-secret-0123456789"

func newSink(t *testing.T) *sink {
	s := &sink{keys: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Fail deterministically spread: every request's turn decides.
		if rate := s.failRate.Load(); rate > 0 && (s.n.Add(1)*7919)%1000 < rate {
			s.failed.Add(1)
			http.Error(w, "receiver failing", http.StatusInternalServerError)
			return
		}
		s.mu.Lock()
		s.keys[r.Header.Get("Idempotency-Key")]++
		s.requests++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// env points the notifications service at the receiver.
func (s *sink) env() []string {
	return []string{"NOTIFY_WEBHOOK_URL=" + s.srv.URL + "/hook", "NOTIFY_WEBHOOK_SECRET=" + sinkSecret}
}

// fail makes the receiver answer 500 to a share (0 to 1) of requests.
func (s *sink) fail(rate float64) { s.failRate.Store(uint64(rate * 1000)) }

// counts returns the distinct Idempotency-Keys delivered and the
// successful requests.
func (s *sink) counts() (keys, requests int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys), s.requests
}

// Package browser drives the console in headless Chromium the way a
// learner uses it: it runs the all-in-one binary, places an order and
// follows its trace into the worker, flips a fault switch on users and
// watches the gateway's breaker open, and replays a dead letter with the
// console's button. Chromium is Debian's (`chromium`), driven over the
// DevTools protocol by chromedp; without it the suite skips, saying so.
//
// BLUEPRINT_SCREENSHOTS=<dir> keeps the screenshots the tests take there;
// the README's come from
//
//	BLUEPRINT_SCREENSHOTS=$PWD/docs/img go test -C test/browser -count=1 .
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

var bin string

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &bin)) }

// chromium finds the browser: BLUEPRINT_TEST_CHROMIUM, else chromium on
// the PATH.
func chromium(t *testing.T) string {
	if p := os.Getenv("BLUEPRINT_TEST_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on the PATH (apt-get install chromium) and BLUEPRINT_TEST_CHROMIUM unset: browser tests skipped")
	}
	return p
}

// browser starts a headless Chromium for the test and returns a context
// that drives one tab of it.
func browser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run performs browser actions, each step bounded, failing the test with
// what was being done.
func run(t *testing.T, ctx context.Context, what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
		t.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, body)
	}
}

// text is the visible text of the first element selector matches.
func text(t *testing.T, ctx context.Context, selector string) string {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(selector)))
	if err != nil {
		t.Fatalf("text of %s: %v", selector, err)
	}
	return s
}

// screenshot keeps a screenshot as name.png in BLUEPRINT_SCREENSHOTS, or in
// the test's temp dir: of the whole page when full, else of the window.
func screenshot(t *testing.T, ctx context.Context, name string, full bool) {
	t.Helper()
	dir := os.Getenv("BLUEPRINT_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// system is the all-in-one process under test on its defaults (the
// console's fault switches included), but a breaker that stays open long
// enough to be seen, and a webhook receiver
// the test can make refuse notifications.
type system struct {
	gateway, console string
	refuse           *atomic.Bool
	token            string
}

func start(t *testing.T) *system {
	refuse := &atomic.Bool{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if refuse.Load() {
			w.WriteHeader(http.StatusBadRequest) // permanent: dead-lettered at once
		}
	}))
	t.Cleanup(hook.Close)
	c := harness.StartCluster(t, localcluster.Config{Binary: bin, Dir: t.TempDir(), AllInOne: true, Env: []string{
		"UPSTREAM_BREAKER_DELAY=30s", "RATE_LIMITS_ENABLED=false",
		"NOTIFY_WEBHOOK_URL=" + hook.URL + "/hooks", "NOTIFY_WEBHOOK_SECRET=browser-test-webhook-secret-0123456789",
	}})
	s := &system{gateway: harness.Gateways(c)[0], console: c.ConsoleURL, refuse: refuse}
	s.token = harness.NewClient(1, s.gateway).SignUp(t, 0)
	return s
}

// call sends one request to the gateway as the test's user, with
// traceparent when not empty, and decodes a JSON answer into out.
func (s *system) call(t *testing.T, method, path, body, traceparent string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, s.gateway+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("browser-%d", time.Now().UnixNano()))
	}
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %d, undecodable: %v", method, path, res.StatusCode, err)
		}
	}
	return res.StatusCode
}

// placeOrder places an order in the trace traceID and returns its id.
func (s *system) placeOrder(t *testing.T, traceID string) string {
	t.Helper()
	var o struct{ ID string }
	if code := s.call(t, http.MethodPost, "/orders", `{"sku":"BLUEPRINT-MUG","qty":1}`, "00-"+traceID+"-00f067aa0ba902b7-01", &o); code != http.StatusCreated {
		t.Fatalf("POST /orders: %d", code)
	}
	return o.ID
}

// notified reports whether the user has a notification for the order.
func (s *system) notified(t *testing.T, orderID string) bool {
	t.Helper()
	var page struct{ Items []struct{ OrderID string } }
	s.call(t, http.MethodGet, "/notifications?limit=100", "", "", &page)
	for _, n := range page.Items {
		if n.OrderID == orderID {
			return true
		}
	}
	return false
}

// reloadUntil reloads the page until selector is there: what it waits for
// comes from telemetry exported every second or few.
func reloadUntil(selector string, interval time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for {
			_, err := chromedp.Steps(chromedp.Reload(), chromedp.WaitReady(chromedp.CSS("body")))(ctx, t)
			if err == nil {
				var n int
				n, err = chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", selector))(ctx, t)
				if err == nil && n > 0 {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("no %s on the page: %w", selector, ctx.Err())
			case <-time.After(interval):
			}
		}
	})
}

func TestConsole(t *testing.T) {
	ctx := browser(t)
	s := start(t)

	t.Run("an order's trace reaches the worker", func(t *testing.T) {
		traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
		orderID := s.placeOrder(t, traceID)
		// The list shows the trace; its link opens the waterfall, which
		// fills in as the relay, the worker and users export their spans.
		run(t, ctx, "find the trace in the list", 20*time.Second,
			chromedp.Navigate(s.console+"/traces?route=/orders"),
			chromedp.WaitVisible(chromedp.CSS(`a[href="/traces/`+traceID+`"]`)),
			chromedp.Click(chromedp.CSS(`a[href="/traces/`+traceID+`"]`)),
			chromedp.WaitVisible(chromedp.CSS(`ol.spans`)),
			reloadUntil(`li.svc-notifications[id^="span-"] .label`, time.Second),
		)
		run(t, ctx, "wait for users in the waterfall", 20*time.Second, reloadUntil(`li.svc-users`, time.Second))
		spans, logs := text(t, ctx, "ol.spans"), text(t, ctx, "ol.loglines")
		for _, want := range []string{"POST /orders", "INSERT outbox", "send orders.created", "process orders.created", "GET /users/{id}", "deliver webhook"} {
			if !strings.Contains(spans, want) {
				t.Errorf("waterfall lacks %q:\n%s", want, spans)
			}
		}
		if !strings.Contains(logs, "notification delivered") || !strings.Contains(logs, orderID) {
			t.Errorf("the trace's logs lack the delivery of %s:\n%s", orderID, logs)
		}
		screenshot(t, ctx, "console-trace", true)
		// Expanding a span shows its attributes.
		run(t, ctx, "open a span", 10*time.Second, chromedp.Click(chromedp.CSS(`li.svc-notifications summary`)))
		attrs := text(t, ctx, `li.svc-notifications details[open] dl`)
		if !strings.Contains(attrs, "orders.created") {
			t.Errorf("the worker span's attributes lack the subject:\n%s", attrs)
		}
	})

	t.Run("every control is named", func(t *testing.T) {
		// What a screen reader or a keyboard user needs of each page: a
		// language, a skip link to the content, a label for every field, a
		// name for every button and link, a title for the picture.
		const unnamed = `[...document.querySelectorAll('input:not([type=hidden]), select')]
			.filter(e => !e.closest('label') && !e.getAttribute('aria-label')).length
			+ [...document.querySelectorAll('button, a')]
			.filter(e => !(e.textContent.trim() || e.getAttribute('aria-label'))).length
			+ [...document.querySelectorAll('svg[role=img]')].filter(e => !e.querySelector('title')).length
			+ (document.documentElement.lang ? 0 : 1) + (document.querySelector('a.skip[href="#main"]') ? 0 : 1)`
		for _, path := range []string{"/", "/traces", "/events", "/faults"} {
			run(t, ctx, "open "+path, 10*time.Second, chromedp.Navigate(s.console+path), chromedp.WaitVisible(chromedp.CSS("main")))
			n, err := chromedp.Run(ctx, chromedp.Evaluate[int](unnamed))
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("%s: %d controls, links or pictures without a name, or no language or skip link", path, n)
			}
		}
	})

	t.Run("a dead letter replayed from the console", func(t *testing.T) {
		s.refuse.Store(true)
		orderID := s.placeOrder(t, "5bf92f3577b34da6a3ce929d0e0e4737")
		run(t, ctx, "see the dead letter", 30*time.Second,
			chromedp.Navigate(s.console+"/events"),
			reloadUntil(`button[aria-label^="Replay dead letter"]`, 500*time.Millisecond),
		)
		if listed := text(t, ctx, "main"); !strings.Contains(listed, orderID) {
			t.Fatalf("dead letters do not list order %s:\n%s", orderID, listed)
		}
		screenshot(t, ctx, "console-events", false)
		s.refuse.Store(false)
		run(t, ctx, "replay it", 20*time.Second,
			chromedp.Click(chromedp.CSS(`button[aria-label^="Replay dead letter"]`)),
			chromedp.WaitVisible(chromedp.CSS(`p.notice`)),
		)
		if notice := text(t, ctx, "p.notice"); !strings.Contains(notice, "Replayed dead letter") || strings.Contains(notice, "failed") {
			t.Errorf("after replay the page says %q", notice)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !s.notified(t, orderID) {
			if time.Now().After(deadline) {
				t.Fatalf("order %s not notified after its replay", orderID)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("users fail and the gateway's breaker opens", func(t *testing.T) {
		// Two clicks: choose every route of users (the default, *) with
		// 100 % errors (the default), and inject.
		run(t, ctx, "inject errors into users", 20*time.Second,
			chromedp.Navigate(s.console+"/faults"),
			chromedp.WaitVisible(chromedp.CSS(`#faults-users`)),
			chromedp.Click(chromedp.CSS(`section[aria-labelledby="faults-users"] form.fault button`)),
			chromedp.WaitVisible(chromedp.CSS(`section[aria-labelledby="faults-users"] ul.rules`)),
		)
		screenshot(t, ctx, "console-faults", false)
		// Profile reads fail until the breaker opens, then are refused
		// at once; the architecture page updates itself (console.js).
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					s.call(t, http.MethodGet, "/users/me", "", "", nil)
				}
			}
		}()
		run(t, ctx, "watch the breaker open", 40*time.Second,
			chromedp.Navigate(s.console+"/"),
			chromedp.WaitVisible(chromedp.CSS(`span.breaker.open`)),
			// The gateway's 503s show as its error rate once two exports
			// give a rate.
			chromedp.WaitVisible(chromedp.CSS(`g.node.failing`)),
		)
		close(stop)
		<-done
		if breakers := text(t, ctx, "span.breaker.open"); !strings.HasPrefix(breakers, "users ") {
			t.Errorf("open breaker = %q, want the gateway's for users", breakers)
		}
		// SVG text has no innerText: read its textContent.
		failing, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("g.node.failing text.name").textContent`))
		if err != nil {
			t.Fatal(err)
		}
		if failing != "gateway" {
			t.Errorf("failing node = %q, want the gateway, answering 503", failing)
		}
		screenshot(t, ctx, "console-architecture", false)
		run(t, ctx, "list the failed traces", 20*time.Second,
			chromedp.Navigate(s.console+"/traces?status=error&route=/users/me"),
			chromedp.WaitVisible(chromedp.CSS(`tr.failed a`)),
		)
		if failed := text(t, ctx, "table.traces tbody"); !strings.Contains(failed, "GET /users/me") {
			t.Errorf("failed traces:\n%s", failed)
		}
		screenshot(t, ctx, "console-traces", false)
		run(t, ctx, "clear the fault", 10*time.Second,
			chromedp.Navigate(s.console+"/faults"),
			chromedp.Click(chromedp.CSS(`button[aria-label="Clear the fault on users *"]`)),
			chromedp.WaitVisible(chromedp.CSS(`section[aria-labelledby="faults-users"] form.fault`)),
		)
	})
}

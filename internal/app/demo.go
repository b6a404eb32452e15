package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// demoCommand walks the public API the way a new user would: register, log
// in, read the profile, place an order, and wait for its notification. Each
// step sends its own traceparent, so the printed trace id finds the step's
// trace (and its logs) in any backend the services export to.
func demoCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	f := newFlags("demo", getenv)
	var gatewayURL string
	var wait time.Duration
	f.String(&gatewayURL, "gateway", "BLUEPRINT_GATEWAY_URL", "http://127.0.0.1:3001", "base URL of the gateway")
	f.Duration(&wait, "wait", "", 15*time.Second, "how long to wait for the notification")
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: blueprint demo [flags]\n\nRuns register → login → profile → order → notification against a gateway.\n\nFlags:")
			f.usage(stdout)
			return nil
		}
		return err
	}
	d := &demo{
		base:   strings.TrimSuffix(gatewayURL, "/"),
		client: &http.Client{Timeout: 10 * time.Second},
		out:    stdout,
	}
	fmt.Fprintf(stdout, "Blueprint demo against %s\n\n", d.base)
	if err := d.run(ctx, wait); err != nil {
		fmt.Fprintf(stdout, "\ndemo failed: %v\n", err)
		return errors.New("demo failed")
	}
	fmt.Fprintln(stdout, "\ndemo passed: the order was accepted, published through the outbox, and notified once")
	return nil
}

type demo struct {
	base   string
	client *http.Client
	out    io.Writer
	token  string
}

func (d *demo) run(ctx context.Context, wait time.Duration) error {
	email := "demo-" + randomHex(6) + "@example.com"
	password := "pw-" + randomHex(12)
	if _, err := d.step(ctx, "register", http.MethodPost, "/auth/register", map[string]any{
		"email": email, "password": password, "name": "Demo User",
	}, http.StatusCreated, nil); err != nil {
		return err
	}
	var login struct {
		AccessToken string `json:"accessToken"`
	}
	if _, err := d.step(ctx, "login", http.MethodPost, "/auth/login", map[string]any{
		"email": email, "password": password,
	}, http.StatusOK, &login); err != nil {
		return err
	}
	d.token = login.AccessToken
	var me struct {
		ID string `json:"id"`
	}
	if _, err := d.step(ctx, "profile", http.MethodGet, "/users/me", nil, http.StatusOK, &me); err != nil {
		return err
	}
	var order struct {
		ID string `json:"id"`
	}
	if _, err := d.step(ctx, "order", http.MethodPost, "/orders", map[string]any{
		"sku": "BLUEPRINT-MUG", "qty": 2,
	}, http.StatusCreated, &order); err != nil {
		return err
	}

	deadline := time.Now().Add(wait)
	for {
		var list struct {
			Items []struct {
				OrderID string `json:"orderId"`
				Channel string `json:"channel"`
				Status  string `json:"status"`
			} `json:"items"`
		}
		trace, err := d.do(ctx, http.MethodGet, "/notifications", nil, http.StatusOK, &list)
		if err != nil {
			d.report("notification", 0, trace, err.Error(), false)
			return err
		}
		found := 0
		for _, n := range list.Items {
			if n.OrderID == order.ID {
				found++
			}
		}
		switch {
		case found == 1:
			d.report("notification", http.StatusOK, trace, "order "+order.ID+" notified once", true)
			return nil
		case found > 1:
			err := fmt.Errorf("order %s was notified %d times", order.ID, found)
			d.report("notification", http.StatusOK, trace, err.Error(), false)
			return err
		case time.Now().After(deadline):
			err := fmt.Errorf("no notification for order %s after %s", order.ID, wait)
			d.report("notification", http.StatusOK, trace, err.Error(), false)
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// step makes one call and prints its line.
func (d *demo) step(ctx context.Context, name, method, path string, body any, want int, into any) (string, error) {
	trace, err := d.do(ctx, method, path, body, want, into)
	status := want
	note := method + " " + path
	if err != nil {
		status = 0
		if se, ok := errors.AsType[*statusError](err); ok {
			status = se.status
		}
		note = err.Error()
	}
	d.report(name, status, trace, note, err == nil)
	return trace, err
}

// report prints one step: pass or fail, status, trace id and a note.
func (d *demo) report(name string, status int, trace, note string, ok bool) {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
	}
	fmt.Fprintf(d.out, "%s %-13s %3d  trace %s  %s\n", mark, name, status, trace, note)
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.body) }

// do sends one request with a fresh trace and decodes a JSON answer.
func (d *demo) do(ctx context.Context, method, path string, body any, want int, into any) (string, error) {
	traceID := randomHex(16)
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return traceID, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, r)
	if err != nil {
		return traceID, err
	}
	req.Header.Set("traceparent", "00-"+traceID+"-"+randomHex(8)+"-01")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return traceID, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return traceID, err
	}
	if resp.StatusCode != want {
		return traceID, &statusError{status: resp.StatusCode, body: strings.TrimSpace(string(data))}
	}
	if into != nil {
		if err := json.Unmarshal(data, into); err != nil {
			return traceID, fmt.Errorf("%s %s: bad JSON: %w", method, path, err)
		}
	}
	return traceID, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

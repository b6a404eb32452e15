package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/chaos"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

const chaosUsage = `Usage:
  blueprint chaos set   --service S --route R [--latency D] [--error-rate F] [--crash] [--for D]
  blueprint chaos list  --service S
  blueprint chaos clear --service S [--route R]

Sets, lists and clears the fault injection rules of a running service, on its
ops listener. The service must run with BLUEPRINT_CHAOS=true (--chaos).
A route is one of the service's HTTP routes ('GET /users/{id}'), * for all of
them, or a fault point (orders.after_commit, notifications.deliver,
notifications.after_delivery); 'blueprint chaos list' shows them.

Examples:
  blueprint chaos set --service users --route 'GET /users/{id}' --latency 800ms --error-rate 0.5 --for 60s
  blueprint chaos set --service orders --route orders.after_commit --crash
  blueprint chaos clear --service users
`

// chaosCommand drives the /chaos endpoints of one service's ops listener.
func chaosCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || isFlag(args[0]) {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			_, err := io.WriteString(stdout, chaosUsage)
			return err
		}
		return usageErrorf("chaos: say set, list or clear; run `blueprint help chaos`")
	}
	sub, args := args[0], args[1:]
	f := newFlags("chaos "+sub, getenv)
	var (
		service, opsURL, route string
		latency, lasts         time.Duration
		rate                   float64
		crash                  bool
	)
	f.String(&service, "service", "", "", "the service: gateway, users, orders or notifications")
	f.String(&opsURL, "ops", "", "", "base URL of the ops listener of one replica; empty: the service's default ops port on 127.0.0.1")
	switch sub {
	case "set":
		f.String(&route, "route", "", "", "HTTP route pattern, *, or fault point")
		f.Duration(&latency, "latency", "", 0, "latency added to every hit, whole milliseconds")
		f.Float(&rate, "error-rate", "", 0, "share of hits that fail, 0 to 1 (1 with --crash unless set)")
		f.Bool(&crash, "crash", "", false, "failing hits kill the process with SIGKILL instead of returning an error")
		f.Duration(&lasts, "for", "", 10*time.Minute, "how long the rule lasts; 0 keeps it until cleared")
	case "clear":
		f.String(&route, "route", "", "", "the route whose rule to clear; empty clears every rule")
	case "list":
	default:
		return usageErrorf("chaos: unknown command %q; use set, list or clear", sub)
	}
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "%s\nFlags of chaos %s:\n", chaosUsage, sub)
			f.usage(stdout)
			return nil
		}
		return err
	}

	c := chaosClient{http: &http.Client{Timeout: 10 * time.Second}, base: strings.TrimSuffix(opsURL, "/")}
	switch {
	case opsURL == "" && !slices.Contains(services, service):
		return usageErrorf("chaos %s: --service must be gateway, users, orders or notifications (or give --ops)", sub)
	case opsURL == "":
		c.base = fmt.Sprintf("http://127.0.0.1:%d", defaultPorts[service][1])
	}
	c.name = c.base
	if service != "" {
		c.name = service + " at " + c.base
	}

	switch sub {
	case "set":
		if route == "" {
			return usageErrorf("chaos set: --route is required")
		}
		if latency%time.Millisecond != 0 {
			return usageErrorf("chaos set: --latency must be whole milliseconds")
		}
		rule := map[string]any{"route": route, "latencyMs": latency.Milliseconds(), "errorRate": rate, "crash": crash}
		if crash && !flagSet(f.fs, "error-rate") {
			rule["errorRate"] = 1
		}
		if lasts > 0 {
			rule["until"] = time.Now().Add(lasts).UTC().Format(time.RFC3339Nano)
		}
		var set chaos.Rule
		if err := c.do(ctx, http.MethodPost, "", rule, &set); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "%s: %s\n", c.name, describeRule(set))
		return err
	case "clear":
		query := ""
		if route != "" {
			query = "?route=" + url.QueryEscape(route)
		}
		if err := c.do(ctx, http.MethodDelete, query, nil, nil); err != nil {
			return err
		}
		what := "every rule"
		if route != "" {
			what = "the rule of " + route
		}
		_, err := fmt.Fprintf(stdout, "%s: cleared %s\n", c.name, what)
		return err
	default:
		var list struct {
			Rules  []chaos.Rule `json:"rules"`
			Routes []string     `json:"routes"`
		}
		if err := c.do(ctx, http.MethodGet, "", nil, &list); err != nil {
			return err
		}
		var b strings.Builder
		noun := "rules"
		if len(list.Rules) == 1 {
			noun = "rule"
		}
		fmt.Fprintf(&b, "%s: %d active %s\n", c.name, len(list.Rules), noun)
		for _, r := range list.Rules {
			fmt.Fprintf(&b, "  %s\n", describeRule(r))
		}
		b.WriteString("routes a rule may name:\n")
		for _, r := range list.Routes {
			fmt.Fprintf(&b, "  %s\n", r)
		}
		_, err := io.WriteString(stdout, b.String())
		return err
	}
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// describeRule says what a rule does in one line.
func describeRule(r chaos.Rule) string {
	var does []string
	if r.LatencyMs > 0 {
		does = append(does, "latency "+(time.Duration(r.LatencyMs)*time.Millisecond).String())
	}
	switch {
	case r.Crash:
		does = append(does, fmt.Sprintf("SIGKILL on %g%% of hits", r.ErrorRate*100))
	case r.ErrorRate > 0:
		does = append(does, fmt.Sprintf("errors on %g%% of hits", r.ErrorRate*100))
	}
	if r.Until.IsZero() {
		does = append(does, "until cleared")
	} else {
		does = append(does, "until "+r.Until.UTC().Format(time.RFC3339))
	}
	return r.Route + ": " + strings.Join(does, ", ")
}

// chaosClient calls the /chaos endpoints of one ops listener.
type chaosClient struct {
	http       *http.Client
	name, base string
}

// do sends body (when not nil) as JSON and decodes a 2xx answer into out
// (when not nil). A problem answer becomes an error with its detail and
// every field error.
func (c chaosClient) do(ctx context.Context, method, query string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/chaos"+query, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if resp.StatusCode >= 300 {
		var p httpx.Problem
		if json.Unmarshal(raw, &p) != nil || p.Status == 0 {
			return fmt.Errorf("%s answered %s", c.name, resp.Status)
		}
		if p.Code() == "chaos_disabled" {
			return fmt.Errorf("%s: %s; start it with BLUEPRINT_CHAOS=true (--chaos)", c.name, p.Detail)
		}
		msg := fmt.Sprintf("%s: %d %s", c.name, p.Status, p.Detail)
		for _, fe := range p.Errors {
			msg += fmt.Sprintf("; %s: %s", fe.Field, fe.Message)
		}
		return errors.New(msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// healthCommand asks a health endpoint and exits 0 only for a 2xx answer.
// It is the container health check of an image that has no shell or curl:
// `blueprint health --url http://127.0.0.1:9103/readyz`.
func healthCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	f := newFlags("health", getenv)
	var rawURL string
	var timeout time.Duration
	f.String(&rawURL, "url", "", "", "http(s) URL to ask, e.g. http://127.0.0.1:9101/readyz (an ops listener)")
	f.Duration(&timeout, "timeout", "", 2*time.Second, "how long to wait for the answer")
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: blueprint health --url URL [--timeout 2s]\n\n"+
				"Exits 0 when URL answers 2xx within the timeout, 1 otherwise: a\n"+
				"container health check that needs no shell.\n\nFlags:")
			f.usage(stdout)
			return nil
		}
		return err
	}
	if u, err := url.Parse(rawURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("--url: want an http(s) URL, got %q", rawURL)
	}
	if timeout <= 0 {
		return usageErrorf("--timeout: must be more than 0")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: timeout}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health: %s answered %s: %s", rawURL, resp.Status, body)
	}
	_, err = fmt.Fprintf(stdout, "%s %s\n", resp.Status, body)
	return err
}

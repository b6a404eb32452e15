package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// startProfile asks the ops listener at o.Profile for a CPU profile as
// long as the measured window and writes it to o.ProfileOut; the returned
// wait reports how that went once the window is over. Read it with
// `go tool pprof -top <binary> <file>`.
func (o *Options) startProfile(ctx context.Context, client *http.Client) (wait func() error) {
	done := make(chan error, 1)
	go func() { // ends when the profile has arrived or failed
		seconds := max(1, int(o.Duration.Seconds()))
		url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(o.Profile, "/"), seconds)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			done <- err
			return
		}
		// The answer takes the whole window: the bench's request timeout
		// does not apply.
		c := *client
		c.Timeout = 0
		resp, err := c.Do(req)
		if err != nil {
			done <- fmt.Errorf("profile: %w", err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("profile: %s answered %d (is PPROF_ENABLED on?)", url, resp.StatusCode)
			return
		}
		f, err := os.Create(o.ProfileOut)
		if err != nil {
			done <- fmt.Errorf("profile: %w", err)
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return func() error { return <-done }
}

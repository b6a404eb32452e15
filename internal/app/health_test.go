package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealthCommand: the container health check passes only on a 2xx.
func TestHealthCommand(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	t.Cleanup(srv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	for _, tc := range []struct {
		name     string
		args     []string
		wantErr  string // "" for success
		wantCode int
	}{
		{"healthy", []string{"--url", srv.URL + "/healthz"}, "", 0},
		{"not ready", []string{"--url", srv.URL + "/readyz"}, "503", 1},
		{"nothing listening", []string{"--url", closed.URL + "/healthz"}, "refused", 1},
		{"no URL", nil, "--url", 2},
		{"not http", []string{"--url", "tcp://127.0.0.1:9101"}, "--url", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := run(t, nil, append([]string{"health"}, tc.args...)...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("health %v = %v, want success", tc.args, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || ExitCode(err) != tc.wantCode {
				t.Fatalf("health %v = %v, want an error naming %q with exit status %d", tc.args, err, tc.wantErr, tc.wantCode)
			}
		})
	}
}

package httpx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// syncBuffer is a bytes.Buffer that server goroutines and the test can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records returns every JSON log record written so far.
func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// newTestLogger returns the production logger (with trace and request ids
// taken from the context) writing JSON into a buffer the test can read.
func newTestLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	return telemetry.NewLogger(buf, telemetry.LogJSON, false, slog.LevelDebug), buf
}

// newTestTelemetry returns real providers that export nowhere.
func newTestTelemetry(t *testing.T) telemetry.Providers {
	t.Helper()
	tel, err := telemetry.New(context.Background(), "test", "v", func(string) string { return "" })
	if err != nil {
		t.Fatalf("telemetry.New: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return *tel
}

// readProblem checks that the response is problem+json with the given status
// and returns its body.
func readProblem(t *testing.T, status int, header http.Header, body []byte) httpx.Problem {
	t.Helper()
	if got := header.Get("Content-Type"); got != httpx.ContentTypeProblem {
		t.Errorf("Content-Type = %q, want %q (body %s)", got, httpx.ContentTypeProblem, body)
	}
	var p httpx.Problem
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if p.Status != status {
		t.Errorf("problem status = %d, want %d (body %s)", p.Status, status, body)
	}
	if p.Title != http.StatusText(status) {
		t.Errorf("problem title = %q, want %q", p.Title, http.StatusText(status))
	}
	if !strings.HasPrefix(p.Type, httpx.ProblemTypePrefix) || p.Code() == "" {
		t.Errorf("problem type = %q, want %s<code>", p.Type, httpx.ProblemTypePrefix)
	}
	return p
}

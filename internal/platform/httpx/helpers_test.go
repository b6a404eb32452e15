package httpx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/logtest"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

// newTestLogger returns the production logger (with trace and request ids
// taken from the context) writing JSON into a buffer the test can read.
func newTestLogger(t *testing.T) (*slog.Logger, *logtest.Buffer) {
	t.Helper()
	buf := &logtest.Buffer{}
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

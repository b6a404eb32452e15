package notifications

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// TestUsersDirectory drives the real directory client against a stand-in for
// the users service's GET /users/{id}, which checks the worker's internal
// token as the users service does.
func TestUsersDirectory(t *testing.T) {
	t.Parallel()
	kr, err := auth.GenerateKeyring([]string{"gateway", "users", "notifications"})
	if err != nil {
		t.Fatalf("GenerateKeyring: %v", err)
	}
	verifier, err := auth.NewServiceVerifier("users", []string{"gateway", "notifications"}, kr.Bundle, time.Now)
	if err != nil {
		t.Fatalf("NewServiceVerifier: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		token, err := auth.BearerToken(r)
		if err != nil {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		caller, err := verifier.Verify(token)
		if err != nil || caller.Service != Name || caller.Subject != Name {
			// The worker acts for itself, not for a user.
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.PathValue("id") {
		case "user-1":
			_, _ = w.Write([]byte(`{"id":"user-1","email":"ada@example.com","name":"Ada","plan":"free"}`))
		case "a/b c":
			_, _ = w.Write([]byte(`{"email":"escaped@example.com"}`))
		case "broken":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "garbled":
			_, _ = w.Write([]byte(`{"email":`))
		default:
			http.Error(w, `{"status":404}`, http.StatusNotFound)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tel, err := telemetry.New(t.Context(), Name, "test", func(string) string { return "" })
	if err != nil {
		t.Fatalf("telemetry.New: %v", err)
	}
	client, err := upstream.New(upstream.Config{
		Service: "users", URLs: []string{srv.URL}, Timeout: 5 * time.Second, ConnectTimeout: time.Second,
		Minter: auth.NewMinter(Name, kr.Identities[Name], time.Now), Telemetry: tel,
	})
	if err != nil {
		t.Fatalf("upstream.New: %v", err)
	}
	dir := UsersDirectory{Users: client}

	tests := []struct {
		name      string
		userID    string
		want      string
		wantKind  apperr.Kind
		wantError bool
	}{
		{name: "known user", userID: "user-1", want: "ada@example.com"},
		{name: "id needing escaping", userID: "a/b c", want: "escaped@example.com"},
		{name: "deleted user is NotFound (permanent)", userID: "user-gone", wantError: true, wantKind: apperr.NotFound},
		{name: "users failing is retryable", userID: "broken", wantError: true, wantKind: apperr.BadGateway},
		{name: "invalid JSON is retryable", userID: "garbled", wantError: true, wantKind: apperr.BadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := dir.Email(context.WithoutCancel(t.Context()), tt.userID)
			if tt.wantError {
				if err == nil || apperr.KindOf(err) != tt.wantKind {
					t.Errorf("Email(%q) = %q, %v; want an error of kind %v", tt.userID, got, err, tt.wantKind)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Email(%q) = %q, %v; want %q, nil", tt.userID, got, err, tt.want)
			}
		})
	}
}

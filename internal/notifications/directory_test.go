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

// countingDirectory answers from a map and counts the questions.
type countingDirectory struct {
	emails map[string]string
	asked  map[string]int
}

func (d *countingDirectory) Email(_ context.Context, userID string) (string, error) {
	d.asked[userID]++
	if email, ok := d.emails[userID]; ok {
		return email, nil
	}
	return "", errUserGone
}

// TestCachedDirectory: a user's email is asked for once, then remembered;
// a user the directory could not find is asked for again, so a lookup that
// failed once is not a failure for good; an email past its TTL is asked
// for again.
func TestCachedDirectory(t *testing.T) {
	t.Parallel()
	next := &countingDirectory{emails: map[string]string{"u1": "ada@example.com"}, asked: map[string]int{}}
	now := time.Now()
	d := NewCachedDirectory(next, func() time.Time { return now })
	for range 3 {
		if email, err := d.Email(t.Context(), "u1"); err != nil || email != "ada@example.com" {
			t.Fatalf("Email(u1) = %q, %v; want ada@example.com", email, err)
		}
		if _, err := d.Email(t.Context(), "u2"); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("Email(u2) error = %v, want not found", err)
		}
	}
	if next.asked["u1"] != 1 || next.asked["u2"] != 3 {
		t.Errorf("directory asked %v, want u1 once (cached) and u2 every time (failures are not cached)", next.asked)
	}
	now = now.Add(emailCacheTTL)
	if _, err := d.Email(t.Context(), "u1"); err != nil || next.asked["u1"] != 2 {
		t.Errorf("after the TTL: err %v, asked %d times; want a second question", err, next.asked["u1"])
	}
}

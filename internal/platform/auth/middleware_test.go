package auth_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

func TestRequireService(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	clock := newTestClock(t)
	v := newUsersVerifier(t, kr, clock.Now)
	gateway := mint(t, auth.NewMinter("gateway", kr.Identities["gateway"], clock.Now), "users", "user-1")
	orders := mint(t, auth.NewMinter("orders", kr.Identities["orders"], clock.Now), "users", "user-1")
	access, _, err := auth.NewAccessTokens(kr.Access, []auth.PublicKey{kr.Access.Public()}, clock.Now).Issue(user1)
	if err != nil {
		t.Fatalf("Issue() = %v, want nil", err)
	}

	tests := []struct {
		name          string
		authorization []string // header values; none when nil
		wantStatus    int
		wantCaller    auth.Caller
	}{
		{name: "missing header", wantStatus: http.StatusUnauthorized},
		{name: "empty header", authorization: []string{""}, wantStatus: http.StatusUnauthorized},
		{name: "basic scheme", authorization: []string{"Basic x"}, wantStatus: http.StatusUnauthorized},
		{name: "basic scheme with a valid token", authorization: []string{"Basic " + gateway}, wantStatus: http.StatusUnauthorized},
		{name: "bearer without token", authorization: []string{"Bearer "}, wantStatus: http.StatusUnauthorized},
		{name: "bearer without space", authorization: []string{"Bearer"}, wantStatus: http.StatusUnauthorized},
		{name: "token without scheme", authorization: []string{gateway}, wantStatus: http.StatusUnauthorized},
		{name: "bad token", authorization: []string{"Bearer not.a.token"}, wantStatus: http.StatusUnauthorized},
		{name: "token from an untrusted service", authorization: []string{"Bearer " + orders}, wantStatus: http.StatusUnauthorized},
		{name: "access token", authorization: []string{"Bearer " + access}, wantStatus: http.StatusUnauthorized},
		{name: "good token", authorization: []string{"Bearer " + gateway}, wantStatus: http.StatusOK,
			wantCaller: auth.Caller{Service: "gateway", Subject: "user-1"}},
		// Two credentials: whichever one a check read, another might read the other.
		{name: "the same token twice", authorization: []string{"Bearer " + gateway, "Bearer " + gateway},
			wantStatus: http.StatusUnauthorized},
		{name: "a good token, then another", authorization: []string{"Bearer " + gateway, "Bearer " + orders},
			wantStatus: http.StatusUnauthorized},
		{name: "scheme is case-insensitive", authorization: []string{"bearer " + gateway}, wantStatus: http.StatusOK,
			wantCaller: auth.Caller{Service: "gateway", Subject: "user-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got auth.Caller
			var called bool
			h := auth.RequireService(v, slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				c, err := auth.CallerFrom(r.Context())
				if err != nil {
					t.Errorf("CallerFrom() in handler = %v, want nil", err)
				}
				got = c
				w.WriteHeader(http.StatusOK)
			}))
			req := httptest.NewRequest(http.MethodGet, "/users/user-1", nil)
			for _, a := range tt.authorization {
				req.Header.Add("Authorization", a)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("RequireService(Authorization %q) status = %d, want %d; body %s", tt.authorization, rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus == http.StatusOK {
				if got != tt.wantCaller {
					t.Errorf("CallerFrom() = %+v, want %+v", got, tt.wantCaller)
				}
				return
			}
			if called {
				t.Errorf("RequireService(Authorization %q) called the handler, want it stopped", tt.authorization)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			if wa := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", wa)
			}
			var p struct {
				Type   string `json:"type"`
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatalf("problem body %q: %v", rec.Body, err)
			}
			if p.Status != http.StatusUnauthorized || p.Type != "urn:blueprint:problem:unauthorized" {
				t.Errorf("problem = %+v, want status 401 and type urn:blueprint:problem:unauthorized", p)
			}
			// Every rejection reads the same: the reason is for logs, not callers.
			if want := "the bearer token is missing or invalid"; p.Detail != want {
				t.Errorf("problem detail = %q, want %q", p.Detail, want)
			}
		})
	}
}

func TestCallerFromWithoutMiddleware(t *testing.T) {
	t.Parallel()
	if c, err := auth.CallerFrom(context.Background()); apperr.KindOf(err) != apperr.Unauthorized {
		t.Errorf("CallerFrom(bare context) = %+v, %v, want an Unauthorized error", c, err)
	}
	if u, err := auth.UserFrom(context.Background()); apperr.KindOf(err) != apperr.Unauthorized {
		t.Errorf("UserFrom(bare context) = %q, %v, want an Unauthorized error", u, err)
	}
}

func TestUserFrom(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	clock := newTestClock(t)
	v := newUsersVerifier(t, kr, clock.Now)
	tests := []struct {
		name     string
		service  string
		subject  string
		wantUser string
		wantKind apperr.Kind
	}{
		{name: "acting for a user", service: "gateway", subject: "user-1", wantUser: "user-1"},
		{name: "gateway acting for itself", service: "gateway", subject: "", wantKind: apperr.Forbidden},
		{name: "notifications acting for itself", service: "notifications", subject: "", wantKind: apperr.Forbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token := mint(t, auth.NewMinter(tt.service, kr.Identities[tt.service], clock.Now), "users", tt.subject)
			var user string
			var err error
			h := auth.RequireService(v, slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				user, err = auth.UserFrom(r.Context())
			}))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			h.ServeHTTP(httptest.NewRecorder(), req)
			if tt.wantUser != "" {
				if err != nil || user != tt.wantUser {
					t.Errorf("UserFrom() = %q, %v, want %q, nil", user, err, tt.wantUser)
				}
				return
			}
			if err == nil || apperr.KindOf(err) != tt.wantKind {
				t.Errorf("UserFrom() = %q, %v, want an error of kind %v", user, err, tt.wantKind)
			}
		})
	}
}

package users

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// testServer is the users service behind a real HTTP listener, with the
// keys of a whole deployment so tests can call it as any service.
type testServer struct {
	url    string
	client *http.Client
	svc    *Service
	kr     *auth.Keyring
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	kr, err := auth.GenerateKeyring([]string{"gateway", "users", "orders", "notifications"})
	if err != nil {
		t.Fatalf("GenerateKeyring() = %v, want nil", err)
	}
	verifier, err := auth.NewServiceVerifier(Name, TrustedCallers, kr.Bundle, time.Now)
	if err != nil {
		t.Fatalf("NewServiceVerifier(%s, %v) = %v, want nil", Name, TrustedCallers, err)
	}
	svc := newTestService(t, sqldbtest.SQLite)
	srv := httptest.NewServer(NewServer(svc, verifier, slog.New(slog.NewTextHandler(t.Output(), nil))))
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 10 * time.Second
	return &testServer{url: srv.URL, client: client, svc: svc, kr: kr}
}

// token mints an internal token from service to users acting for subject.
func (s *testServer) token(t *testing.T, service, subject string) string {
	t.Helper()
	return s.tokenFor(t, service, Name, subject)
}

func (s *testServer) tokenFor(t *testing.T, service, audience, subject string) string {
	t.Helper()
	token, err := auth.NewMinter(service, s.kr.Identities[service], time.Now).Token(audience, subject)
	if err != nil {
		t.Fatalf("Token(%q, %q) = %v, want nil", audience, subject, err)
	}
	return token
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request; an empty token sends no Authorization header.
func (s *testServer) do(t *testing.T, method, path, token, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// wantProblem checks that res is problem+json with status and type, and
// returns the problem.
func wantProblem(t *testing.T, call string, res response, status int, typ string) problem {
	t.Helper()
	if res.status != status {
		t.Fatalf("%s status = %d, want %d; body %s", call, res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s Content-Type = %q, want application/problem+json", call, ct)
	}
	var p problem
	if err := json.Unmarshal(res.body, &p); err != nil {
		t.Fatalf("%s problem body %q: %v", call, res.body, err)
	}
	if p.Status != status || p.Type != typ {
		t.Errorf("%s problem = status %d type %q, want %d %q", call, p.Status, p.Type, status, typ)
	}
	return p
}

func (p problem) fields() []string {
	var fs []string
	for _, e := range p.Errors {
		fs = append(fs, e.Field)
	}
	slices.Sort(fs)
	return fs
}

// wantUserJSON checks that res is a user's JSON: exactly the public fields,
// createdAt an RFC 3339 UTC string, never a password or its hash.
func wantUserJSON(t *testing.T, call string, res response, want User) {
	t.Helper()
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s Content-Type = %q, want application/json", call, ct)
	}
	var fields map[string]any
	if err := json.Unmarshal(res.body, &fields); err != nil {
		t.Fatalf("%s body %q: %v", call, res.body, err)
	}
	if got, wantKeys := slices.Sorted(maps.Keys(fields)), []string{"createdAt", "email", "id", "name", "plan"}; !slices.Equal(got, wantKeys) {
		t.Errorf("%s body members = %v, want %v", call, got, wantKeys)
	}
	created, _ := fields["createdAt"].(string)
	if ts, err := time.Parse(time.RFC3339Nano, created); err != nil || !strings.HasSuffix(created, "Z") || !ts.Equal(want.CreatedAt) {
		t.Errorf("%s createdAt = %q, want %s as RFC 3339 UTC", call, created, want.CreatedAt.Format(time.RFC3339Nano))
	}
	var got User
	if err := json.Unmarshal(res.body, &got); err != nil {
		t.Fatalf("%s body %q: %v", call, res.body, err)
	}
	got.CreatedAt, want.CreatedAt = got.CreatedAt.UTC(), want.CreatedAt.UTC()
	if got != want {
		t.Errorf("%s user = %+v, want %+v", call, got, want)
	}
}

func TestServerRegister(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	gateway := s.token(t, "gateway", "")

	body := `{"email":"Erin@Example.com","password":"correct horse battery","name":"Erin"}`
	res := s.do(t, "POST", "/users", gateway, body)
	if res.status != http.StatusCreated {
		t.Fatalf("POST /users %s = %d, want 201; body %s", body, res.status, res.body)
	}
	var created User
	if err := json.Unmarshal(res.body, &created); err != nil {
		t.Fatalf("POST /users body %q: %v", res.body, err)
	}
	if id, err := uuid.Parse(created.ID); err != nil || id.Version() != 7 {
		t.Errorf("POST /users id = %q, want a UUIDv7", created.ID)
	}
	wantUserJSON(t, "POST /users", res, User{
		ID: created.ID, Email: "Erin@Example.com", Name: "Erin", Plan: "free",
		CreatedAt: testNow.UTC().Truncate(time.Microsecond),
	})
	if loc := res.header.Get("Location"); loc != "/users/"+created.ID {
		t.Errorf("POST /users Location = %q, want %q", loc, "/users/"+created.ID)
	}

	dup := s.do(t, "POST", "/users", gateway, `{"email":"erin@EXAMPLE.com","password":"another password","name":"E"}`)
	wantProblem(t, "POST /users (email taken)", dup, http.StatusConflict, "urn:blueprint:problem:email_taken")

	tests := []struct {
		name       string
		token      string
		body       string
		wantStatus int
		wantType   string
		wantFields []string
	}{
		{name: "from notifications", token: s.token(t, "notifications", ""),
			body:       `{"email":"frank@example.com","password":"correct horse","name":"Frank"}`,
			wantStatus: http.StatusForbidden, wantType: "urn:blueprint:problem:forbidden"},
		{name: "empty body", body: ``,
			wantStatus: http.StatusBadRequest, wantType: "urn:blueprint:problem:malformed_json"},
		{name: "malformed JSON", body: `{"email":`,
			wantStatus: http.StatusBadRequest, wantType: "urn:blueprint:problem:malformed_json"},
		{name: "not an object", body: `["frank@example.com"]`,
			wantStatus: http.StatusBadRequest, wantType: "urn:blueprint:problem:malformed_json"},
		{name: "two objects", body: `{"email":"a@b.co","password":"12345678","name":"A"}{}`,
			wantStatus: http.StatusBadRequest, wantType: "urn:blueprint:problem:malformed_json"},
		{name: "unknown field", body: `{"email":"frank@example.com","password":"correct horse","name":"Frank","plan":"pro"}`,
			wantStatus: http.StatusBadRequest, wantType: "urn:blueprint:problem:unknown_field", wantFields: []string{"plan"}},
		{name: "wrong type", body: `{"email":"frank@example.com","password":12345678,"name":"Frank"}`,
			wantStatus: http.StatusBadRequest, wantType: "urn:blueprint:problem:wrong_type", wantFields: []string{"password"}},
		{name: "everything missing", body: `{}`,
			wantStatus: http.StatusUnprocessableEntity, wantType: "urn:blueprint:problem:validation",
			wantFields: []string{"email", "name", "password"}},
		{name: "bad email", body: `{"email":"Frank <frank@example.com>","password":"correct horse","name":"Frank"}`,
			wantStatus: http.StatusUnprocessableEntity, wantType: "urn:blueprint:problem:validation", wantFields: []string{"email"}},
		{name: "short password", body: `{"email":"frank@example.com","password":"1234567","name":"Frank"}`,
			wantStatus: http.StatusUnprocessableEntity, wantType: "urn:blueprint:problem:validation", wantFields: []string{"password"}},
		{name: "blank name", body: `{"email":"frank@example.com","password":"correct horse","name":"   "}`,
			wantStatus: http.StatusUnprocessableEntity, wantType: "urn:blueprint:problem:validation", wantFields: []string{"name"}},
		{name: "body over 64 KiB", body: `{"email":"frank@example.com","password":"correct horse","name":"` + strings.Repeat("n", 64<<10) + `"}`,
			wantStatus: http.StatusRequestEntityTooLarge, wantType: "urn:blueprint:problem:body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token := tt.token
			if token == "" {
				token = gateway
			}
			res := s.do(t, "POST", "/users", token, tt.body)
			p := wantProblem(t, "POST /users "+tt.name, res, tt.wantStatus, tt.wantType)
			if got := p.fields(); !slices.Equal(got, tt.wantFields) {
				t.Errorf("POST /users %s problem fields = %v, want %v", tt.name, got, tt.wantFields)
			}
			for _, e := range p.Errors {
				if e.Message == "" {
					t.Errorf("POST /users %s: field %q has no message", tt.name, e.Field)
				}
			}
		})
	}
}

func TestServerGetUser(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	ctx := context.Background()
	alice, err := s.svc.Register(ctx, Registration{Email: "alice@example.com", Password: "alice's password", Name: "Alice"})
	if err != nil {
		t.Fatalf("Register(alice) = %v, want nil", err)
	}
	bob, err := s.svc.Register(ctx, Registration{Email: "bob@example.com", Password: "bob's password", Name: "Bob"})
	if err != nil {
		t.Fatalf("Register(bob) = %v, want nil", err)
	}
	unknown := uuid.Must(uuid.NewV7()).String()
	access, _, err := auth.NewAccessTokens(s.kr.Access, []auth.PublicKey{s.kr.Access.Public()}, time.Now).Issue(alice.ID)
	if err != nil {
		t.Fatalf("Issue() = %v, want nil", err)
	}
	expired, err := auth.NewMinter("gateway", s.kr.Identities["gateway"],
		func() time.Time { return time.Now().Add(-5 * time.Minute) }).Token(Name, alice.ID)
	if err != nil {
		t.Fatalf("Token() = %v, want nil", err)
	}

	tests := []struct {
		name       string
		id         string
		token      string
		wantStatus int
		wantUser   User
		wantType   string
	}{
		{name: "gateway for that user", id: alice.ID, token: s.token(t, "gateway", alice.ID),
			wantStatus: http.StatusOK, wantUser: alice},
		{name: "gateway for the other user", id: bob.ID, token: s.token(t, "gateway", bob.ID),
			wantStatus: http.StatusOK, wantUser: bob},
		{name: "gateway for another user", id: alice.ID, token: s.token(t, "gateway", bob.ID),
			wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:user_not_found"},
		{name: "gateway for itself", id: alice.ID, token: s.token(t, "gateway", ""),
			wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:user_not_found"},
		{name: "gateway for a user that does not exist", id: unknown, token: s.token(t, "gateway", unknown),
			wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:user_not_found"},
		{name: "notifications for itself", id: alice.ID, token: s.token(t, "notifications", ""),
			wantStatus: http.StatusOK, wantUser: alice},
		{name: "notifications, unknown id", id: unknown, token: s.token(t, "notifications", ""),
			wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:user_not_found"},
		{name: "no token", id: alice.ID,
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:unauthorized"},
		{name: "access token", id: alice.ID, token: access,
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:unauthorized"},
		{name: "token from orders", id: alice.ID, token: s.token(t, "orders", alice.ID),
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:unauthorized"},
		{name: "gateway token for orders", id: alice.ID, token: s.tokenFor(t, "gateway", "orders", alice.ID),
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:unauthorized"},
		{name: "expired gateway token", id: alice.ID, token: expired,
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			call := "GET /users/" + tt.id
			res := s.do(t, "GET", "/users/"+tt.id, tt.token, "")
			if tt.wantStatus == http.StatusOK {
				if res.status != http.StatusOK {
					t.Fatalf("%s = %d, want 200; body %s", call, res.status, res.body)
				}
				wantUserJSON(t, call, res, tt.wantUser)
				return
			}
			p := wantProblem(t, call, res, tt.wantStatus, tt.wantType)
			switch tt.wantStatus {
			case http.StatusUnauthorized:
				if wa := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
					t.Errorf("%s WWW-Authenticate = %q, want a Bearer challenge", call, wa)
				}
			case http.StatusNotFound:
				// Someone else's profile reads exactly like a missing one.
				if p.Detail != errNotFound.Detail {
					t.Errorf("%s detail = %q, want %q", call, p.Detail, errNotFound.Detail)
				}
			}
		})
	}
}

func TestServerAuthenticate(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	gateway := s.token(t, "gateway", "")
	grace, err := s.svc.Register(context.Background(),
		Registration{Email: "Grace@Example.com", Password: "correct horse battery", Name: "Grace"})
	if err != nil {
		t.Fatalf("Register(grace) = %v, want nil", err)
	}

	tests := []struct {
		name       string
		token      string
		body       string
		wantStatus int
		wantType   string
	}{
		{name: "right password", body: `{"email":"Grace@Example.com","password":"correct horse battery"}`,
			wantStatus: http.StatusOK},
		{name: "right password, email in another case", body: `{"email":"grace@example.COM","password":"correct horse battery"}`,
			wantStatus: http.StatusOK},
		{name: "wrong password", body: `{"email":"Grace@Example.com","password":"wrong horse battery"}`,
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:invalid_credentials"},
		{name: "unknown email", body: `{"email":"nobody@example.com","password":"correct horse battery"}`,
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:invalid_credentials"},
		{name: "no password", body: `{"email":"Grace@Example.com"}`,
			wantStatus: http.StatusUnprocessableEntity, wantType: "urn:blueprint:problem:validation"},
		{name: "unknown field", body: `{"email":"Grace@Example.com","password":"x","otp":"123456"}`,
			wantStatus: http.StatusBadRequest, wantType: "urn:blueprint:problem:unknown_field"},
		{name: "from notifications", token: s.token(t, "notifications", ""),
			body:       `{"email":"Grace@Example.com","password":"correct horse battery"}`,
			wantStatus: http.StatusForbidden, wantType: "urn:blueprint:problem:forbidden"},
		{name: "no token", token: "-",
			body:       `{"email":"Grace@Example.com","password":"correct horse battery"}`,
			wantStatus: http.StatusUnauthorized, wantType: "urn:blueprint:problem:unauthorized"},
	}
	bodies := map[string][]byte{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := tt.token
			switch token {
			case "":
				token = gateway
			case "-":
				token = ""
			}
			res := s.do(t, "POST", "/users/authenticate", token, tt.body)
			call := "POST /users/authenticate " + tt.body
			if tt.wantStatus == http.StatusOK {
				if res.status != http.StatusOK {
					t.Fatalf("%s = %d, want 200; body %s", call, res.status, res.body)
				}
				wantUserJSON(t, call, res, grace)
				return
			}
			wantProblem(t, call, res, tt.wantStatus, tt.wantType)
			bodies[tt.name] = res.body
		})
	}
	// Not parallel above, so the two failures can be compared byte for byte.
	if a, b := bodies["wrong password"], bodies["unknown email"]; !bytes.Equal(a, b) {
		t.Errorf("wrong password answered %s, unknown email %s, want the same answer", a, b)
	}
}

func TestServerUnknownRoutes(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	gateway := s.token(t, "gateway", "")
	tests := []struct {
		method, path string
		wantStatus   int
		wantType     string
		wantAllow    string
	}{
		{method: "GET", path: "/", wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:not_found"},
		{method: "GET", path: "/nope", wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:not_found"},
		{method: "GET", path: "/users/a/b", wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:not_found"},
		{method: "POST", path: "/users/", wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:not_found"},
		{method: "POST", path: "//users", wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:not_found"},
		{method: "GET", path: "/users/../users", wantStatus: http.StatusNotFound, wantType: "urn:blueprint:problem:not_found"},
		{method: "DELETE", path: "/users/x", wantStatus: http.StatusMethodNotAllowed,
			wantType: "urn:blueprint:problem:method_not_allowed", wantAllow: "GET"},
		{method: "GET", path: "/users", wantStatus: http.StatusMethodNotAllowed,
			wantType: "urn:blueprint:problem:method_not_allowed", wantAllow: "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			for _, token := range []string{"", gateway} {
				res := s.do(t, tt.method, tt.path, token, "")
				wantProblem(t, tt.method+" "+tt.path, res, tt.wantStatus, tt.wantType)
				if allow := res.header.Get("Allow"); allow != tt.wantAllow {
					t.Errorf("%s %s Allow = %q, want %q", tt.method, tt.path, allow, tt.wantAllow)
				}
			}
		})
	}
}

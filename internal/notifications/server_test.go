package notifications

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// testAPI is the notifications API on a loopback listener, with real
// internal tokens: a keyring for every service, as `all` mode makes.
type testAPI struct {
	url    string
	client *http.Client
	db     *sqldb.DB
	kr     *auth.Keyring
}

func newTestAPI(t *testing.T, b sqldbtest.Backend) *testAPI {
	t.Helper()
	kr, err := auth.GenerateKeyring([]string{"gateway", "users", "orders", "notifications"})
	if err != nil {
		t.Fatalf("GenerateKeyring: %v", err)
	}
	v, err := auth.NewServiceVerifier(Name, TrustedCallers, kr.Bundle, time.Now)
	if err != nil {
		t.Fatalf("NewServiceVerifier: %v", err)
	}
	db := b.Open(t, Migrations)
	srv := httptest.NewServer(NewServer(NewService(db), v, testLogger(t)))
	t.Cleanup(srv.Close)
	return &testAPI{url: srv.URL, client: srv.Client(), db: db, kr: kr}
}

// token mints an internal token from caller to audience acting for subject
// ("" means the caller acts for itself).
func (a *testAPI) token(t *testing.T, caller, audience, subject string) string {
	t.Helper()
	tok, err := auth.NewMinter(caller, a.kr.Identities[caller], time.Now).Token(audience, subject)
	if err != nil {
		t.Fatalf("mint token: %v", err)
	}
	return tok
}

// get calls GET path with the bearer token (none when empty).
func (a *testAPI) get(t *testing.T, path, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, a.url+path, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

// seed records a notification with a chosen id and time.
func seed(t *testing.T, db *sqldb.DB, id, userID string, at time.Time) {
	t.Helper()
	sent := at.Add(time.Second)
	n := Notification{ID: id, OrderID: "ord-" + id, UserID: userID, Channel: "log", Status: statusSent, CreatedAt: at, SentAt: &sent}
	if ok, err := record(t.Context(), db, "evt-"+id, n); err != nil || !ok {
		t.Fatalf("record(%s) = %v, %v; want true, nil", id, ok, err)
	}
}

type listResponse struct {
	Items      []Notification `json:"items"`
	NextCursor *string        `json:"nextCursor"`
}

func TestListNotificationsPages(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		api := newTestAPI(t, b)
		t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
		// n-03 and n-04 share a createdAt, and the first page ends between
		// them: the cursor must break the tie by id.
		for _, s := range []struct {
			id, user string
			at       time.Time
		}{
			{"n-01", "user-a", t0},
			{"n-02", "user-a", t0.Add(time.Minute)},
			{"n-03", "user-a", t0.Add(2 * time.Minute)},
			{"n-04", "user-a", t0.Add(2 * time.Minute)},
			{"n-05", "user-a", t0.Add(3 * time.Minute)},
			{"n-06", "user-b", t0.Add(4 * time.Minute)},
			{"n-07", "user-b", t0.Add(90 * time.Second)},
		} {
			seed(t, api.db, s.id, s.user, s.at)
		}
		token := api.token(t, "gateway", Name, "user-a")

		var pages [][]string
		var all []Notification
		path := "/notifications?limit=2"
		for range 10 { // more pages than there can be: a cursor loop fails below
			resp, body := api.get(t, path, token)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d %s, want 200", path, resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("GET %s Content-Type = %q, want application/json", path, ct)
			}
			var page listResponse
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatalf("GET %s body %s: %v", path, body, err)
			}
			var ids []string
			for _, n := range page.Items {
				ids = append(ids, n.ID)
			}
			pages = append(pages, ids)
			all = append(all, page.Items...)
			if page.NextCursor == nil {
				if !strings.Contains(string(body), `"nextCursor":null`) {
					t.Errorf("last page body %s, want nextCursor null", body)
				}
				break
			}
			path = "/notifications?limit=2&cursor=" + url.QueryEscape(*page.NextCursor)
		}

		want := [][]string{{"n-05", "n-04"}, {"n-03", "n-02"}, {"n-01"}}
		if !slices.EqualFunc(pages, want, slices.Equal) {
			t.Errorf("pages = %v, want %v", pages, want)
		}
		for _, n := range all {
			if n.UserID != "user-a" || n.OrderID != "ord-"+n.ID || n.Channel != "log" || n.Status != "sent" ||
				n.SentAt == nil || !n.SentAt.Equal(n.CreatedAt.Add(time.Second)) {
				t.Errorf("item %+v, want user-a's notification of ord-%s, channel log, sent 1s after creation", n, n.ID)
			}
		}

		// The default page (20) holds all five; another user sees only theirs;
		// a user with none gets an empty list, not null.
		for _, tt := range []struct {
			user    string
			wantIDs []string
			wantRaw string
		}{
			{"user-a", []string{"n-05", "n-04", "n-03", "n-02", "n-01"}, `"nextCursor":null`},
			{"user-b", []string{"n-06", "n-07"}, `"nextCursor":null`},
			{"user-c", nil, `"items":[]`},
		} {
			resp, body := api.get(t, "/notifications", api.token(t, "gateway", Name, tt.user))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /notifications as %s = %d %s, want 200", tt.user, resp.StatusCode, body)
			}
			var page listResponse
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			var ids []string
			for _, n := range page.Items {
				ids = append(ids, n.ID)
			}
			if !slices.Equal(ids, tt.wantIDs) || !strings.Contains(string(body), tt.wantRaw) {
				t.Errorf("GET /notifications as %s = %s, want ids %v and %s", tt.user, body, tt.wantIDs, tt.wantRaw)
			}
		}
	})
}

func TestListNotificationsRejects(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, sqldbtest.SQLite)
	userToken := api.token(t, "gateway", Name, "user-a")
	tests := []struct {
		name       string
		path       string
		token      string
		wantStatus int
	}{
		{"limit over 100", "/notifications?limit=101", userToken, http.StatusBadRequest},
		{"limit 0", "/notifications?limit=0", userToken, http.StatusBadRequest},
		{"limit not a number", "/notifications?limit=ten", userToken, http.StatusBadRequest},
		{"empty limit", "/notifications?limit=", userToken, http.StatusBadRequest},
		{"cursor not from this API", "/notifications?cursor=bm9wZQ", userToken, http.StatusBadRequest},
		{"no token", "/notifications", "", http.StatusUnauthorized},
		{"garbage token", "/notifications", "not-a-jwt", http.StatusUnauthorized},
		{"untrusted caller (users)", "/notifications", api.token(t, "users", Name, "user-a"), http.StatusUnauthorized},
		{"token for another audience", "/notifications", api.token(t, "gateway", "orders", "user-a"), http.StatusUnauthorized},
		{"token acting for no user", "/notifications", api.token(t, "gateway", Name, ""), http.StatusForbidden},
		{"unknown path", "/notifications/", userToken, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := api.get(t, tt.path, tt.token)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET %s = %d %s, want %d", tt.path, resp.StatusCode, body, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != httpx.ContentTypeProblem {
				t.Errorf("Content-Type = %q, want %q", ct, httpx.ContentTypeProblem)
			}
			var p httpx.Problem
			if err := json.Unmarshal(body, &p); err != nil || p.Status != tt.wantStatus {
				t.Errorf("problem %s (%v), want status %d", body, err, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
}

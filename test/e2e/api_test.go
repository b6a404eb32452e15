package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// contractSystem runs the whole system with keys on disk, so the test can
// forge tokens with the real keys: expired ones, wrong audiences, internal
// tokens where public ones belong.
func contractSystem(t *testing.T) (*inProcess, *auth.Keyring) {
	t.Helper()
	keysDir, kr := keysOnDisk(t)
	return startInProcess(t, t.TempDir(), map[string]string{"BLUEPRINT_KEYS_DIR": keysDir}), kr
}

// forge signs claims as a JWT with key, typ and kid as given.
func forge(t *testing.T, key auth.PrivateKey, typ string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["typ"] = typ
	tok.Header["kid"] = key.ID
	s, err := tok.SignedString(key.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func accessClaims(sub string, iat time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": auth.AccessIssuer, "aud": auth.AccessAudience, "sub": sub,
		"iat": iat.Unix(), "exp": iat.Add(auth.AccessTTL).Unix(), "jti": "test",
	}
}

func TestPublicAPIContract(t *testing.T) {
	t.Parallel()
	sys, kr := contractSystem(t)
	gw := sys.url("gateway")
	anon := newClient(t, gw)

	alice := newClient(t, gw)
	aliceUser := alice.signUp(uniqueEmail("alice"), "alice-password")
	bob := newClient(t, gw)
	bob.signUp(uniqueEmail("bob"), "bob-password")

	t.Run("register body errors", func(t *testing.T) {
		valid := `"email":"x@example.com","password":"password1","name":"X"`
		for _, tc := range []struct {
			name, body string
			status     int
			fields     []string
		}{
			{"malformed JSON", `{"email":`, 400, nil},
			{"empty body", ``, 400, nil},
			{"array", `[]`, 400, nil},
			{"null", `null`, 400, nil},
			{"wrong type", `{"email":1,"password":"password1","name":"X"}`, 400, []string{"email"}},
			{"unknown field", `{` + valid + `,"plan":"pro"}`, 400, []string{"plan"}},
			{"trailing data", `{` + valid + `} {}`, 400, nil},
			{"bad email", `{"email":"not-an-email","password":"password1","name":"X"}`, 422, []string{"email"}},
			{"email 255 chars", `{"email":"` + strings.Repeat("a", 243) + `@example.com","password":"password1","name":"X"}`, 422, []string{"email"}},
			{"password 7", `{"email":"x@example.com","password":"1234567","name":"X"}`, 422, []string{"password"}},
			{"password 129", `{"email":"x@example.com","password":"` + strings.Repeat("p", 129) + `","name":"X"}`, 422, []string{"password"}},
			{"name empty", `{"email":"x@example.com","password":"password1","name":""}`, 422, []string{"name"}},
			{"name 101", `{"email":"x@example.com","password":"password1","name":"` + strings.Repeat("n", 101) + `"}`, 422, []string{"name"}},
			{"every field", `{"email":"","password":"","name":""}`, 422, []string{"email", "name", "password"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := anon.do("POST", "/auth/register", tc.body).expect(t, tc.status)
				p := r.problem(t)
				var fields []string
				for _, e := range p.Errors {
					fields = append(fields, e.Field)
				}
				if strings.Join(fields, ",") != strings.Join(tc.fields, ",") {
					t.Errorf("errors fields = %v, want %v (%s)", fields, tc.fields, r.body)
				}
			})
		}
	})

	t.Run("oversized body", func(t *testing.T) {
		body := `{"email":"x@example.com","password":"password1","name":"` + strings.Repeat("n", 70<<10) + `"}`
		anon.do("POST", "/auth/register", body).expect(t, http.StatusRequestEntityTooLarge).problem(t)
		alice.do("POST", "/orders", body).expect(t, http.StatusRequestEntityTooLarge).problem(t)
	})

	t.Run("register at the limits", func(t *testing.T) {
		email := strings.Repeat("a", 64) + "." + uniqueEmail("limits")
		email = strings.Repeat("b", 254-len(email)) + email
		var u user
		anon.do("POST", "/auth/register", map[string]any{
			"email": email, "password": strings.Repeat("p", 128), "name": strings.Repeat("é", 100),
		}).expect(t, http.StatusCreated).json(t, &u)
		if u.Email != email {
			t.Errorf("email = %q, want %q as given", u.Email, email)
		}
		// The same address in other case is the same account.
		p := anon.do("POST", "/auth/register", map[string]any{
			"email": strings.ToUpper(email), "password": "password1", "name": "Again",
		}).expect(t, http.StatusConflict).problem(t)
		if p.Type != "urn:blueprint:problem:email_taken" {
			t.Errorf("type = %q, want urn:blueprint:problem:email_taken", p.Type)
		}
	})

	t.Run("login", func(t *testing.T) {
		email := uniqueEmail("login")
		c := newClient(t, gw)
		c.signUp(email, "right-password")
		wrong := anon.do("POST", "/auth/login", map[string]any{"email": email, "password": "wrong-password"}).
			expect(t, http.StatusUnauthorized).problem(t)
		unknown := anon.do("POST", "/auth/login", map[string]any{"email": uniqueEmail("nobody"), "password": "wrong-password"}).
			expect(t, http.StatusUnauthorized).problem(t)
		if wrong.Type != unknown.Type || wrong.Detail != unknown.Detail {
			t.Errorf("wrong password = %+v, unknown email = %+v, want the same answer", wrong, unknown)
		}
		anon.do("POST", "/auth/login", `{"email":"x@example.com"`).expect(t, http.StatusBadRequest).problem(t)
		anon.do("POST", "/auth/login", `{"email":"x@example.com"}`).expect(t, http.StatusUnprocessableEntity).problem(t)
		// Any case of the email logs in.
		c.logIn(strings.ToUpper(email), "right-password")
	})

	t.Run("login failures are limited per email", func(t *testing.T) {
		email := uniqueEmail("locked")
		newClient(t, gw).signUp(email, "right-password")
		for i := range 4 { // signUp's login did not fail; 5 failures are allowed
			anon.do("POST", "/auth/login", map[string]any{"email": email, "password": "nope-nope"}).expect(t, http.StatusUnauthorized)
			_ = i
		}
		anon.do("POST", "/auth/login", map[string]any{"email": email, "password": "nope-nope"}).expect(t, http.StatusUnauthorized)
		r := anon.do("POST", "/auth/login", map[string]any{"email": email, "password": "right-password"}).
			expect(t, http.StatusTooManyRequests)
		r.problem(t)
		if r.header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	})

	t.Run("jwks", func(t *testing.T) {
		r := anon.do("GET", "/.well-known/jwks.json", nil).expect(t, http.StatusOK)
		var set struct {
			Keys []map[string]any `json:"keys"`
		}
		r.json(t, &set)
		if len(set.Keys) != 1 || set.Keys[0]["kid"] != kr.Access.ID || set.Keys[0]["kty"] != "OKP" {
			t.Fatalf("jwks = %s, want the one access key %s", r.body, kr.Access.ID)
		}
		if _, ok := set.Keys[0]["d"]; ok {
			t.Fatalf("jwks holds private key material: %s", r.body)
		}
		parsed, _, err := jwt.NewParser().ParseUnverified(alice.token, jwt.MapClaims{})
		if err != nil {
			t.Fatal(err)
		}
		if parsed.Header["kid"] != kr.Access.ID || parsed.Header["typ"] != "at+jwt" || parsed.Header["alg"] != "EdDSA" {
			t.Errorf("token header = %v, want kid %s, typ at+jwt, alg EdDSA", parsed.Header, kr.Access.ID)
		}
		claims := parsed.Claims.(jwt.MapClaims)
		if claims["iss"] != "blueprint-gateway" || claims["sub"] != aliceUser.ID ||
			claims["exp"].(float64)-claims["iat"].(float64) != 900 {
			t.Errorf("token claims = %v, want iss blueprint-gateway, sub %s, 900 s", claims, aliceUser.ID)
		}
	})

	t.Run("tokens refused at the gateway", func(t *testing.T) {
		otherKey, err := auth.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		gatewayMinter := auth.NewMinter("gateway", kr.Identities["gateway"], time.Now)
		internal, err := gatewayMinter.Token("users", aliceUser.ID)
		if err != nil {
			t.Fatal(err)
		}
		wrongAud := accessClaims(aliceUser.ID, time.Now())
		wrongAud["aud"] = "someone-else"
		for _, tc := range []struct{ name, header string }{
			{"missing", ""},
			{"not bearer", "Basic YWxpY2U6cHc="},
			{"malformed", "Bearer not-a-jwt"},
			{"expired", "Bearer " + forge(t, kr.Access, "at+jwt", accessClaims(aliceUser.ID, time.Now().Add(-16*time.Minute)))},
			{"wrong signature", "Bearer " + forge(t, auth.PrivateKey{ID: kr.Access.ID, Key: otherKey.Key}, "at+jwt", accessClaims(aliceUser.ID, time.Now()))},
			{"unknown key", "Bearer " + forge(t, otherKey, "at+jwt", accessClaims(aliceUser.ID, time.Now()))},
			{"wrong audience", "Bearer " + forge(t, kr.Access, "at+jwt", wrongAud)},
			{"internal token", "Bearer " + internal},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := newClient(t, gw)
				var r response
				if tc.header == "" {
					r = c.do("GET", "/users/me", nil)
				} else {
					r = c.do("GET", "/users/me", nil, "Authorization", tc.header)
				}
				r.expect(t, http.StatusUnauthorized).problem(t)
				if r.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			})
		}
	})

	t.Run("tokens at an internal service", func(t *testing.T) {
		users := newClient(t, sys.url("users"))
		users.token = alice.token // a public token is never accepted inside
		users.do("GET", "/users/"+aliceUser.ID, nil).expect(t, http.StatusUnauthorized).problem(t)
		users.token = ""
		users.do("GET", "/users/"+aliceUser.ID, nil).expect(t, http.StatusUnauthorized).problem(t)
		minter := auth.NewMinter("gateway", kr.Identities["gateway"], time.Now)
		forOrders, _ := minter.Token("orders", aliceUser.ID)
		users.token = forOrders // another service's audience
		users.do("GET", "/users/"+aliceUser.ID, nil).expect(t, http.StatusUnauthorized).problem(t)
		users.token, _ = minter.Token("users", aliceUser.ID)
		users.do("GET", "/users/"+aliceUser.ID, nil).expect(t, http.StatusOK)
	})

	t.Run("orders validation", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
			status     int
			field      string
		}{
			{"lowercase sku", `{"sku":"mug","qty":1}`, 422, "sku"},
			{"sku 65", `{"sku":"` + strings.Repeat("A", 65) + `","qty":1}`, 422, "sku"},
			{"leading dash", `{"sku":"-MUG","qty":1}`, 422, "sku"},
			{"qty 0", `{"sku":"MUG","qty":0}`, 422, "qty"},
			{"qty 1001", `{"sku":"MUG","qty":1001}`, 422, "qty"},
			{"qty missing", `{"sku":"MUG"}`, 422, "qty"},
			{"qty string", `{"sku":"MUG","qty":"2"}`, 400, "qty"},
			{"qty fraction", `{"sku":"MUG","qty":1.5}`, 400, "qty"},
			{"user id in body", `{"sku":"MUG","qty":1,"userId":"someone-else"}`, 400, "userId"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := alice.do("POST", "/orders", tc.body).expect(t, tc.status).problem(t)
				if len(p.Errors) != 1 || p.Errors[0].Field != tc.field {
					t.Errorf("errors = %+v, want one naming %s", p.Errors, tc.field)
				}
			})
		}
		for _, ok := range []string{`{"sku":"A","qty":1}`, `{"sku":"` + strings.Repeat("Z", 64) + `","qty":1000}`} {
			alice.do("POST", "/orders", ok).expect(t, http.StatusCreated)
		}
	})

	t.Run("orders of others are not found", func(t *testing.T) {
		var o order
		bob.do("POST", "/orders", map[string]any{"sku": "BOB-1", "qty": 1}).expect(t, http.StatusCreated).json(t, &o)
		alice.do("GET", "/orders/"+o.ID, nil).expect(t, http.StatusNotFound).problem(t)
		alice.do("GET", "/orders/no-such-order", nil).expect(t, http.StatusNotFound).problem(t)
		bob.do("GET", "/orders/"+o.ID, nil).expect(t, http.StatusOK)
	})

	t.Run("orders list pagination", func(t *testing.T) {
		c := newClient(t, gw)
		c.signUp(uniqueEmail("pager"), "pager-password")
		var created []string
		for i := range 5 {
			var o order
			c.do("POST", "/orders", map[string]any{"sku": "PAGE", "qty": i + 1}).expect(t, http.StatusCreated).json(t, &o)
			created = append(created, o.ID)
		}
		var seen []string
		path := "/orders?limit=2"
		for pages := 0; ; pages++ {
			var p page[order]
			c.do("GET", path, nil).expect(t, http.StatusOK).json(t, &p)
			for _, o := range p.Items {
				seen = append(seen, o.ID)
			}
			if p.NextCursor == nil {
				if pages != 2 {
					t.Errorf("pages = %d, want 3", pages+1)
				}
				break
			}
			path = "/orders?limit=2&cursor=" + *p.NextCursor
		}
		for i, id := range seen { // newest first
			if want := created[len(created)-1-i]; id != want {
				t.Fatalf("list = %v, want newest first %v", seen, created)
			}
		}
		var viaMe, viaOrders page[order]
		c.do("GET", "/orders/me", nil).expect(t, http.StatusOK).json(t, &viaMe)
		c.do("GET", "/orders", nil).expect(t, http.StatusOK).json(t, &viaOrders)
		if len(viaMe.Items) != 5 || len(viaOrders.Items) != 5 {
			t.Errorf("GET /orders/me = %d items, GET /orders = %d, want 5 and 5", len(viaMe.Items), len(viaOrders.Items))
		}
		for _, bad := range []string{"limit=0", "limit=101", "limit=x", "cursor=not-a-cursor"} {
			c.do("GET", "/orders?"+bad, nil).expect(t, http.StatusBadRequest).problem(t)
			c.do("GET", "/notifications?"+bad, nil).expect(t, http.StatusBadRequest).problem(t)
		}
	})

	t.Run("idempotency key", func(t *testing.T) {
		key := "key-" + uniqueEmail("idem")
		first := alice.do("POST", "/orders", map[string]any{"sku": "IDEM", "qty": 3}, "Idempotency-Key", key).
			expect(t, http.StatusCreated)
		// The same body, spelled differently, is the same request.
		replay := alice.do("POST", "/orders", `{ "qty": 3, "sku": "IDEM" }`, "Idempotency-Key", key).
			expect(t, http.StatusCreated)
		if string(replay.body) != string(first.body) || replay.header.Get("Location") != first.header.Get("Location") {
			t.Errorf("replay = %s at %s, want %s at %s", replay.body, replay.header.Get("Location"), first.body, first.header.Get("Location"))
		}
		if replay.header.Get("Idempotent-Replayed") != "true" {
			t.Error("replay without Idempotent-Replayed: true")
		}
		if first.header.Get("Idempotent-Replayed") != "" {
			t.Error("first response marked as replayed")
		}
		alice.do("POST", "/orders", map[string]any{"sku": "IDEM", "qty": 4}, "Idempotency-Key", key).
			expect(t, http.StatusUnprocessableEntity).problem(t)
		// Keys belong to a user: bob's request with alice's key is his own.
		bob.do("POST", "/orders", map[string]any{"sku": "IDEM", "qty": 3}, "Idempotency-Key", key).
			expect(t, http.StatusCreated)
		// An invalid request does not use up its key.
		k2 := key + "-2"
		alice.do("POST", "/orders", map[string]any{"sku": "idem", "qty": 3}, "Idempotency-Key", k2).expect(t, http.StatusUnprocessableEntity)
		alice.do("POST", "/orders", map[string]any{"sku": "IDEM", "qty": 9}, "Idempotency-Key", k2).expect(t, http.StatusCreated)
		alice.do("POST", "/orders", map[string]any{"sku": "IDEM", "qty": 1}, "Idempotency-Key", strings.Repeat("k", 256)).
			expect(t, http.StatusBadRequest).problem(t)
	})

	t.Run("unknown routes", func(t *testing.T) {
		for _, path := range []string{"/nope", "//orders", "/orders/", "/users/me/../me", "/auth/login/"} {
			anon.do("GET", path, nil).expect(t, http.StatusNotFound).problem(t)
		}
		r := anon.do("DELETE", "/orders", nil).expect(t, http.StatusMethodNotAllowed)
		r.problem(t)
		if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
			t.Errorf("Allow = %q, want GET and POST", allow)
		}
	})

	t.Run("request id and trace id", func(t *testing.T) {
		r := anon.do("GET", "/nope", nil, "X-Request-Id", "client-id.1:2")
		if got := r.header.Get("X-Request-Id"); got != "client-id.1:2" {
			t.Errorf("X-Request-Id = %q, want the client's", got)
		}
		r = anon.do("GET", "/nope", nil, "X-Request-Id", "bad id with spaces")
		if got := r.header.Get("X-Request-Id"); got == "" || got == "bad id with spaces" {
			t.Errorf("X-Request-Id = %q, want a new id", got)
		}
		r = anon.do("GET", "/nope", nil, "X-Request-Id", strings.Repeat("a", 129))
		if got := r.header.Get("X-Request-Id"); len(got) > 128 || got == "" {
			t.Errorf("X-Request-Id = %q, want a new id for a 129-char one", got)
		}
		traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
		p := anon.do("GET", "/users/me", nil, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01").problem(t)
		if p.TraceID != traceID {
			t.Errorf("traceId = %q, want the traceparent's %s", p.TraceID, traceID)
		}
		ok := alice.do("GET", "/users/me", nil, "X-Request-Id", "ok-request")
		if ok.header.Get("X-Request-Id") != "ok-request" {
			t.Errorf("X-Request-Id on 200 = %q, want ok-request", ok.header.Get("X-Request-Id"))
		}
	})

	t.Run("secrets stay out of logs", func(t *testing.T) {
		logs := sys.logs.text()
		for name, secret := range map[string]string{
			"alice's token": alice.token, "bob's token": bob.token,
			"password": "alice-password", "access key id is fine but not the key": string(kr.Access.Key),
		} {
			if strings.Contains(logs, secret) {
				t.Errorf("%s appears in the logs", name)
			}
		}
		var lines int
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line is not JSON: %s", line)
			}
			if rec["msg"] == "request" {
				lines++
				for _, k := range []string{"service", "trace_id", "span_id", "request_id", "route", "status"} {
					if _, ok := rec[k]; !ok {
						t.Fatalf("request log line without %s: %s", k, line)
					}
				}
			}
		}
		if lines == 0 {
			t.Error("no request log lines")
		}
	})
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/api"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

// TestOpenAPIContract holds the public API to api/openapi.yaml, the
// document the gateway serves. Every request below goes through a client
// whose transport validates it, and its answer, against the document: the
// route, parameters, headers and body sent; the status, headers and body
// received. The schemas refuse fields they do not name and the transport
// refuses headers the document does not name, so the code cannot answer
// more than the document says; and every status the document lists for a
// route must be answered at least once, so the document cannot promise
// more than the code does.
//
// Two systems answer, side by side: the whole of Blueprint, for what its
// services answer, and a gateway alone in front of a fake service told what
// to fail with, for the 429, 502, 503 and 504 that any route can answer.
func TestOpenAPIContract(t *testing.T) {
	t.Parallel()
	contract := loadOpenAPIContract(t)
	keysDir, kr := keysOnDisk(t)
	t.Run("routes", func(t *testing.T) {
		t.Run("system", func(t *testing.T) {
			t.Parallel()
			exerciseSystem(t, contract, keysDir, kr)
		})
		t.Run("failures", func(t *testing.T) {
			t.Parallel()
			exerciseFailures(t, contract, keysDir, kr)
		})
	})
	if !t.Failed() { // else most statuses went unseen for that reason
		contract.checkCoverage(t)
	}
}

// exerciseSystem drives every route of the whole system: its successes,
// and every refusal the gateway or a service makes of a client's request.
func exerciseSystem(t *testing.T, contract *openAPIContract, keysDir string, kr *auth.Keyring) {
	sys := startInProcess(t, t.TempDir(), map[string]string{
		"BLUEPRINT_KEYS_DIR": keysDir,
		// To slow an order down while it holds its Idempotency-Key (409).
		"BLUEPRINT_CHAOS": "true",
		// One attempt may take the whole call: a slow order's key then stays
		// locked past the deadline of a second request with it, which gets
		// the 409 instead of waiting.
		"UPSTREAM_ATTEMPT_TIMEOUT": "5s",
		// Room for every registration and login below, and two failed
		// logins per email and address.
		"REGISTER_RATE_LIMIT": "100", "LOGIN_RATE_LIMIT": "100", "LOGIN_FAILURE_LIMIT": "2",
	})
	gw := sys.url("gateway")
	anon := contract.client(t, gw)

	// The document, served as it is in the repository.
	if doc := anon.get("/openapi.yaml").expect(t, http.StatusOK); !bytes.Equal(doc.body, api.OpenAPI) {
		t.Error("GET /openapi.yaml is not api/openapi.yaml")
	}
	anon.get("/.well-known/jwks.json").expect(t, http.StatusOK)

	// Registration.
	alice, bob := contract.client(t, gw), contract.client(t, gw)
	aliceEmail := uniqueEmail("contract-alice")
	alice.signUp(aliceEmail, "contract-password")
	bob.signUp(uniqueEmail("contract-bob"), "contract-password")
	for _, tc := range []struct {
		body, breaks string
		status       int
		code         string
	}{
		{`{"email":`, "truncated JSON", 400, "malformed_json"},
		{`{"email":1,"password":"password1","name":"X"}`, "email is a number", 400, "wrong_type"},
		{`{"email":"x@example.com","password":"password1","name":"X","plan":"pro"}`, "plan is no field of it", 400, "unknown_field"},
		// The document does not check addresses: users does.
		{`{"email":"not-an-email","password":"password1","name":"X"}`, "", 422, "validation"},
		{`{"email":"x@example.com","password":"short","name":"X"}`, "password under 8", 422, "validation"},
		{`{"email":"x@example.com","password":"password1","name":" "}`, "blank name", 422, "validation"},
		{`{"email":"x@example.com","password":"password1","name":"` + strings.Repeat("n", 70<<10) + `"}`, "name over 100", 413, "body_too_large"},
		{jsonOf(map[string]string{"email": strings.ToUpper(aliceEmail), "password": "password1", "name": "X"}), "", 409, "email_taken"},
	} {
		anon.call(apiRequest{method: "POST", path: "/auth/register", body: tc.body, breaks: tc.breaks}).expectProblem(t, tc.status, tc.code)
	}

	// Login, and its limit on failures: the third failure in a row from one
	// address for one email is refused, whatever the password.
	anon.post("/auth/login", credentials(aliceEmail, "wrong-password")).expectProblem(t, 401, "invalid_credentials")
	anon.call(apiRequest{method: "POST", path: "/auth/login", body: `{"email":"x@example.com"`, breaks: "truncated JSON"}).
		expectProblem(t, 400, "malformed_json")
	anon.call(apiRequest{method: "POST", path: "/auth/login", body: `{"email":"x@example.com"}`, breaks: "no password"}).
		expectProblem(t, 422, "validation")
	anon.call(apiRequest{method: "POST", path: "/auth/login", body: credentials("x@example.com", strings.Repeat("p", 70<<10)), breaks: "password over 128"}).
		expectProblem(t, 413, "body_too_large")
	guessed := uniqueEmail("contract-guessed")
	for range 2 {
		anon.post("/auth/login", credentials(guessed, "wrong-password")).expectProblem(t, 401, "invalid_credentials")
	}
	anon.post("/auth/login", credentials(guessed, "wrong-password")).expectProblem(t, 429, "rate_limited")

	// The caller's profile, and every way a token fails. The request
	// headers every route takes: the client's X-Request-Id is kept, and its
	// traceparent's trace is the problem's.
	alice.get("/users/me").expect(t, http.StatusOK)
	ghost := contract.client(t, gw) // a valid token for a user that does not exist
	ghost.token = forge(t, kr.Access, "at+jwt", accessClaims(uuid.Must(uuid.NewV7()).String(), time.Now()))
	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	gone := ghost.call(apiRequest{method: "GET", path: "/users/me", header: []string{
		"X-Request-Id", "contract-1", "traceparent", "00-" + traceID + "-00f067aa0ba902b7-01",
	}}).expectProblem(t, 404, "user_not_found")
	if got := gone.header.Get("X-Request-Id"); got != "contract-1" {
		t.Errorf("X-Request-Id = %q, want the client's contract-1", got)
	}
	if got := gone.problem(t).TraceID; got != traceID {
		t.Errorf("traceId = %q, want the traceparent's %s", got, traceID)
	}
	anon.call(apiRequest{method: "GET", path: "/users/me", breaks: "no token"}).expectProblem(t, 401, "unauthorized")
	expired := forge(t, kr.Access, "at+jwt", accessClaims(uuid.Must(uuid.NewV7()).String(), time.Now().Add(-time.Hour)))
	for _, token := range []string{"not-a-jwt", expired} {
		anon.call(apiRequest{method: "GET", path: "/users/me", header: []string{"Authorization", "Bearer " + token}}).
			expectProblem(t, 401, "unauthorized")
	}

	// Orders, with and without an Idempotency-Key.
	var mine, bobs order
	alice.post("/orders", `{"sku":"MUG","qty":2}`).expect(t, http.StatusCreated).json(t, &mine)
	bob.post("/orders", `{"sku":"BOOK","qty":1}`).expect(t, http.StatusCreated).json(t, &bobs)
	key := "contract-" + uuid.NewString()
	alice.post("/orders", `{"sku":"MUG","qty":1}`, "Idempotency-Key", key).expect(t, http.StatusCreated)
	replay := alice.post("/orders", `{ "qty": 1, "sku": "MUG" }`, "Idempotency-Key", key).expect(t, http.StatusCreated)
	if replay.header.Get("Idempotent-Replayed") != "true" {
		t.Error("a replayed order without Idempotent-Replayed: true")
	}
	alice.post("/orders", `{"sku":"MUG","qty":3}`, "Idempotency-Key", key).expectProblem(t, 422, "idempotency_key_reused")
	for _, tc := range []struct {
		body, breaks string
		header       []string
		status       int
		code         string
	}{
		{`{"sku":"mug","qty":1}`, "lower-case sku", nil, 422, "validation"},
		{`{"sku":"MUG","qty":1001}`, "qty over 1000", nil, 422, "validation"},
		{`{"sku":"MUG","qty":"2"}`, "qty is a string", nil, 400, "wrong_type"},
		{`{"sku":"MUG","qty":1}`, "key over 255", []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "invalid_idempotency_key"},
		{`{"sku":"` + strings.Repeat("A", 70<<10) + `","qty":1}`, "sku over 64", nil, 413, "body_too_large"},
	} {
		alice.call(apiRequest{method: "POST", path: "/orders", body: tc.body, header: tc.header, breaks: tc.breaks}).
			expectProblem(t, tc.status, tc.code)
	}
	anon.call(apiRequest{method: "POST", path: "/orders", body: `{"sku":"MUG","qty":1}`, breaks: "no token"}).
		expectProblem(t, 401, "unauthorized")
	keyInFlight(t, sys, alice)

	// One order, and the lists.
	alice.get("/orders/"+mine.ID).expect(t, http.StatusOK)
	alice.get("/orders/"+bobs.ID).expectProblem(t, 404, "order_not_found")
	alice.get("/orders/%00").expectProblem(t, 404, "not_found") // the router refuses control characters
	anon.call(apiRequest{method: "GET", path: "/orders/" + mine.ID, breaks: "no token"}).expectProblem(t, 401, "unauthorized")
	var first page[order]
	alice.get("/orders?limit=2").expect(t, http.StatusOK).json(t, &first)
	if first.NextCursor == nil {
		t.Fatalf("first page of alice's orders = %+v, want a next page", first)
	}
	alice.get("/orders?limit=2&cursor="+url.QueryEscape(*first.NextCursor)).expect(t, http.StatusOK)
	alice.get("/orders/me").expect(t, http.StatusOK)
	waitForNotification(t, alice)
	for _, list := range []string{"/orders", "/orders/me", "/notifications"} {
		alice.call(apiRequest{method: "GET", path: list + "?limit=0", breaks: "limit below 1"}).expectProblem(t, 400, "invalid_query")
		alice.get(list+"?cursor=not-a-cursor").expectProblem(t, 400, "invalid_query") // any string is a cursor to the document
		anon.call(apiRequest{method: "GET", path: list, breaks: "no token"}).expectProblem(t, 401, "unauthorized")
	}
}

// keyInFlight sends one order twice at once with the same Idempotency-Key,
// while orders is made to take two seconds between claiming a key and
// creating the order: one request creates it, the other finds the key
// locked for longer than it may wait, and gets 409.
func keyInFlight(t *testing.T, sys *inProcess, c *client) {
	t.Helper()
	ops := sys.url("orders_ops") + "/chaos"
	chaosRequest(t, "POST", ops, `{"route":"orders.after_key_claim","latencyMs":2000}`)
	defer chaosRequest(t, "DELETE", ops+"?route=orders.after_key_claim", "")
	key := "contract-" + uuid.NewString()
	type result struct {
		status int
		err    error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() { // ends with its request
			r, err := c.try(apiRequest{method: "POST", path: "/orders", body: `{"sku":"SLOW","qty":1}`, header: []string{"Idempotency-Key", key}})
			results <- result{r.status, err}
		}()
	}
	var got []int
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		got = append(got, r.status)
	}
	if slices.Sort(got); !slices.Equal(got, []int{http.StatusCreated, http.StatusConflict}) {
		t.Errorf("two orders at once with one key = %v, want one 201 and one 409", got)
	}
}

// waitForNotification polls the caller's notifications until there is one.
func waitForNotification(t *testing.T, c *client) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var p page[notification]
		c.get("/notifications").expect(t, http.StatusOK).json(t, &p)
		if len(p.Items) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no notification 15 s after the orders")
		}
	}
}

// exerciseFailures runs the gateway alone in front of a fake service that
// answers every call it gets as told, and makes every route answer what the
// gateway makes of the failures behind it (502, 504, 503), of its own
// overload (503), and of a client over its rate limit (429).
func exerciseFailures(t *testing.T, contract *openAPIContract, keysDir string, kr *auth.Keyring) {
	var answer atomic.Int64 // the status the fake answers with; 0 holds the call until release
	held, release := make(chan struct{}, 1), make(chan struct{})
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := int(answer.Load())
		if status == 0 {
			select {
			case held <- struct{}{}:
			default: // only one call is ever held
			}
			select {
			case <-release:
			case <-r.Context().Done(): // the test failed before releasing it
			}
			status = http.StatusUnauthorized
		}
		http.Error(w, "fake failure", status)
	}))
	t.Cleanup(fake.Close)
	sys := startInProcess(t, t.TempDir(), map[string]string{
		"BLUEPRINT_TARGET":   "gateway",
		"BLUEPRINT_KEYS_DIR": keysDir,
		"USERS_URL":          fake.URL, "ORDERS_URL": fake.URL, "NOTIFICATIONS_URL": fake.URL,
		// One request at a time: another one, while the fake holds the
		// first, is shed.
		"GATEWAY_MAX_IN_FLIGHT": "1",
		// One attempt per call, so that no circuit breaker opens before the
		// 504s below are all answered.
		"UPSTREAM_RETRIES": "0",
		// 50 requests per client IP, and one more every 1000 s: the test's
		// address runs out at the end, and stays out.
		"RATE_LIMIT_RPS": "0.001", "RATE_LIMIT_BURST": "50",
	})
	anon := contract.client(t, sys.url("gateway"))
	user := contract.client(t, sys.url("gateway"))
	user.token = forge(t, kr.Access, "at+jwt", accessClaims(uuid.Must(uuid.NewV7()).String(), time.Now()))

	// Every route that calls a service, each with a request the document
	// allows.
	type call struct {
		who *client
		apiRequest
	}
	upstream := []call{
		{anon, apiRequest{method: "POST", path: "/auth/register", body: `{"email":"x@example.com","password":"password1","name":"X"}`}},
		{anon, apiRequest{method: "POST", path: "/auth/login", body: credentials("x@example.com", "password1")}},
		{user, apiRequest{method: "GET", path: "/users/me"}},
		{user, apiRequest{method: "POST", path: "/orders", body: `{"sku":"MUG","qty":1}`}},
		{user, apiRequest{method: "GET", path: "/orders"}},
		{user, apiRequest{method: "GET", path: "/orders/me"}},
		{user, apiRequest{method: "GET", path: "/orders/" + uuid.NewString()}},
		{user, apiRequest{method: "GET", path: "/notifications"}},
	}
	all := append([]call{
		{anon, apiRequest{method: "GET", path: "/openapi.yaml"}},
		{anon, apiRequest{method: "GET", path: "/.well-known/jwks.json"}},
	}, upstream...)
	expectEach := func(calls []call, status int, code string) {
		t.Helper()
		for _, c := range calls {
			c.who.call(c.apiRequest).expectProblem(t, status, code)
		}
	}

	// A service refusing the gateway's credentials is the gateway's fault.
	answer.Store(http.StatusUnauthorized)
	expectEach(upstream, 502, "upstream_error")

	// With the one request the gateway may serve held by the fake, every
	// other one is shed.
	answer.Store(0)
	first := make(chan error, 1)
	go func() { // ends once the fake answers, after release
		r, err := user.try(apiRequest{method: "GET", path: "/notifications"})
		if err == nil && r.status != http.StatusBadGateway {
			err = fmt.Errorf("held request = %d, want 502", r.status)
		}
		first <- err
	}()
	<-held
	expectEach(all, 503, "overloaded")
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	answer.Store(http.StatusGatewayTimeout)
	expectEach(upstream, 504, "upstream_timeout")

	// A service answering 503 without Retry-After is unavailable, and so is
	// one whose circuit breaker the 504s above have opened.
	answer.Store(http.StatusServiceUnavailable)
	expectEach(upstream, 503, "upstream_unavailable")

	// Spend what is left of the client IP's requests; then every route
	// refuses it.
	for i := 0; ; i++ {
		if anon.get("/.well-known/jwks.json").status == http.StatusTooManyRequests {
			break
		}
		if i == 50 {
			t.Fatal("50 requests past the burst and still not rate limited")
		}
	}
	expectEach(all, 429, "rate_limited")
}

// openAPIContract is the document, a router over its routes, and the
// statuses each route has answered in this test.
type openAPIContract struct {
	doc    *openapi3.T
	router routers.Router

	mu   sync.Mutex
	seen map[string]bool // "GET /orders/{id} 404"
}

func loadOpenAPIContract(t *testing.T) *openAPIContract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("load api/openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("api/openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	doc.Servers = nil // the gateways below listen on ports of their own: match any
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &openAPIContract{doc: doc, router: router, seen: map[string]bool{}}
}

// checkCoverage fails the test for each status the document lists that no
// route answered.
func (c *openAPIContract) checkCoverage(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, path := range c.doc.Paths.InMatchingOrder() {
		for method, op := range c.doc.Paths.Value(path).Operations() {
			for status := range op.Responses.Map() {
				if key := method + " " + path + " " + status; !c.seen[key] {
					t.Errorf("%s: in the document, never answered", key)
				}
			}
		}
	}
}

// openAPIOptions are how requests and responses are held to the document.
var openAPIOptions = &openapi3filter.Options{
	// A status the document does not list for the route is a difference.
	IncludeResponseStatus: true,
	MultiError:            true,
	// Validation must not add the defaults to the request it sends.
	SkipSettingDefaults: true,
	// The document's one security scheme is a bearer token: a request
	// conforms when it sends one. Whether the token is good is the
	// gateway's to say (401).
	AuthenticationFunc: func(_ context.Context, in *openapi3filter.AuthenticationInput) error {
		scheme, token, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			return errors.New("no bearer token")
		}
		return nil
	},
}

// breaksKey marks, in its context, a request that breaks the document on
// purpose; the value says how. The document must refuse it too: that shows
// it states the rule the gateway answers with a 4xx.
type breaksKey struct{}

// checkedTransport sends only what the document allows and returns only
// what it describes, recording each route's status.
type checkedTransport struct{ contract *openAPIContract }

func (tr checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	what := req.Method + " " + req.URL.RequestURI()
	route, params, err := tr.contract.router.FindRoute(req)
	if err != nil {
		return nil, fmt.Errorf("%s is not in the document: %w", what, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: withBody(req, body), PathParams: params, Route: route, Options: openAPIOptions}
	err = validateRequest(in)
	why, breaks := req.Context().Value(breaksKey{}).(string)
	switch {
	case breaks && err == nil:
		return nil, fmt.Errorf("%s breaks the document (%s), yet the document allows it", what, why)
	case !breaks && err != nil:
		return nil, fmt.Errorf("%s: the request does not match the document: %w", what, err)
	}

	resp, err := http.DefaultTransport.RoundTrip(withBody(req, body))
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	if err := validateResponse(in, resp, data); err != nil {
		return nil, fmt.Errorf("%s: the %d answer does not match the document: %w\n%s", what, resp.StatusCode, err, data)
	}
	tr.contract.mu.Lock()
	tr.contract.seen[req.Method+" "+route.Path+" "+strconv.Itoa(resp.StatusCode)] = true
	tr.contract.mu.Unlock()
	return resp, nil
}

// withBody is a copy of req that carries body.
func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	r.Body, r.ContentLength, r.GetBody = http.NoBody, 0, nil
	if len(body) > 0 {
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	return r
}

// validateRequest checks a request against its route in the document.
// ValidateRequest ignores headers the document does not name; here each
// must be named.
func validateRequest(in *openapi3filter.RequestValidationInput) error {
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		return err
	}
	for name := range in.Request.Header {
		if !sendable(in.Route, name) {
			return fmt.Errorf("the document names no request header %s", name)
		}
	}
	return nil
}

// sendable reports whether the document lets a request of the route carry
// the header.
func sendable(route *routers.Route, name string) bool {
	op := route.Operation
	switch name {
	case "Content-Type":
		return op.RequestBody != nil
	case "Authorization":
		security := op.Security
		if security == nil {
			security = &route.Spec.Security
		}
		return len(*security) > 0
	}
	for _, p := range slices.Concat(route.PathItem.Parameters, op.Parameters) {
		if p.Value.In == openapi3.ParameterInHeader && http.CanonicalHeaderKey(p.Value.Name) == name {
			return true
		}
	}
	return false
}

// validateResponse checks a response against the document. ValidateResponse
// ignores headers the document does not name; here each must be named,
// except those of HTTP itself.
func validateResponse(in *openapi3filter.RequestValidationInput, resp *http.Response, body []byte) error {
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: openAPIOptions,
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return err
	}
	documented := map[string]bool{
		// Checked by ValidateResponse, or HTTP's own.
		"Content-Type": true, "Content-Length": true, "Date": true, "Connection": true,
	}
	for name := range in.Route.Operation.Responses.Status(resp.StatusCode).Value.Headers {
		documented[http.CanonicalHeaderKey(name)] = true
	}
	for name := range resp.Header {
		if !documented[name] {
			return fmt.Errorf("the document names no header %s in this answer", name)
		}
	}
	return nil
}

// client speaks to the public API through a checkedTransport, as a user
// would, and fails the test on any difference from the document.
func (c *openAPIContract) client(t *testing.T, base string) *client {
	return &client{t: t, base: base, http: &http.Client{Timeout: 30 * time.Second, Transport: checkedTransport{c}}}
}

// apiRequest is one request to the API. The body is sent as written, so
// that it can be broken JSON.
type apiRequest struct {
	method, path, body string
	header             []string // name, value pairs
	// breaks says how the request breaks the document, when it does on
	// purpose (see breaksKey).
	breaks string
}

// try makes the request. A difference from the document is an error.
func (c *client) try(r apiRequest) (response, error) {
	ctx := context.Background()
	if r.breaks != "" {
		ctx = context.WithValue(ctx, breaksKey{}, r.breaks)
	}
	var body any
	if r.body != "" {
		body = r.body
	}
	return c.send(ctx, r.method, r.path, body, r.header...)
}

// call is try, failing the test on an error.
func (c *client) call(r apiRequest) response {
	c.t.Helper()
	resp, err := c.try(r)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp
}

func (c *client) get(path string) response {
	c.t.Helper()
	return c.call(apiRequest{method: "GET", path: path})
}

func (c *client) post(path, body string, header ...string) response {
	c.t.Helper()
	return c.call(apiRequest{method: "POST", path: path, body: body, header: header})
}

// expectProblem fails the test unless the response is a problem with the
// status and code.
func (r response) expectProblem(t *testing.T, status int, code string) response {
	t.Helper()
	if p := r.expect(t, status).problem(t); p.Type != "urn:blueprint:problem:"+code {
		t.Errorf("problem type = %q, want code %s", p.Type, code)
	}
	return r
}

func credentials(email, password string) string {
	return jsonOf(map[string]string{"email": email, "password": password})
}

func jsonOf(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of strings always encode
	}
	return string(data)
}

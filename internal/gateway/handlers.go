package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/api"
	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// jsonHeader marks a forwarded body as JSON.
var jsonHeader = http.Header{"Content-Type": {"application/json"}}

// The gateway forwards bodies as they came (capped at 64 KiB): the service
// that owns a resource owns its validation, so the rules live in one place
// and the client sees that service's 400 or 422 unchanged.

// everyone keys the buckets of the limits every client shares.
const everyone = "all"

// handleRegister forwards a registration. Each costs users a password hash,
// the same work a login waits for: one address may start only a few, and
// all of them together only as many as users can hash beside the logins.
func (g *Gateway) handleRegister() http.Handler {
	return httpx.Handle(g.logger, func(w http.ResponseWriter, r *http.Request) error {
		if g.registerPerIP != nil {
			if err := g.take(w, r, g.registerPerIP, clientKey(r), "too many registrations from this address; try again later"); err != nil {
				return err
			}
		}
		if g.registerGlobal != nil {
			if err := g.takeUnshown(r.Context(), g.registerGlobal, everyone, "too many registrations at the moment; try again shortly"); err != nil {
				return err
			}
		}
		body, err := httpx.ReadBody(w, r)
		if err != nil {
			return err
		}
		resp, err := g.upstreams.Users.Do(r.Context(), upstream.Request{
			Method: http.MethodPost, Path: "/users", Body: body, Header: jsonHeader,
		})
		if err != nil {
			return err
		}
		// users refuses, with a Retry-After, registrations it has no room
		// to hash.
		return g.relay(w, r, "users", resp, "Retry-After")
	})
}

// loginResponse is the body of a successful login.
type loginResponse struct {
	AccessToken string `json:"accessToken"`
	TokenType   string `json:"tokenType"`
	ExpiresIn   int    `json:"expiresIn"`
}

var errInvalidCredentials = apperr.New(apperr.Unauthorized, "invalid_credentials", "the email or password is wrong")

func (g *Gateway) handleLogin() http.Handler {
	return httpx.Handle(g.logger, func(w http.ResponseWriter, r *http.Request) error {
		if g.loginPerIP != nil {
			if err := g.take(w, r, g.loginPerIP, clientKey(r), "too many login attempts from this address"); err != nil {
				return err
			}
		}
		body, err := httpx.ReadBody(w, r)
		if err != nil {
			return err
		}
		// The email only keys the failure limits; users validates the body.
		var probe struct {
			Email string `json:"email"`
		}
		_ = json.Unmarshal(body, &probe)
		account := failureKey(probe.Email)
		if account != "" {
			if err := g.checkLoginFailures(r, account); err != nil {
				return err
			}
		}

		resp, err := g.upstreams.Users.Do(r.Context(), upstream.Request{
			Method: http.MethodPost, Path: "/users/authenticate", Body: body, Header: jsonHeader,
		})
		if err != nil {
			return err
		}
		if p, ok := resp.Problem(); ok && resp.Status == http.StatusUnauthorized && p.Code() == "invalid_credentials" {
			if account != "" {
				g.countLoginFailure(r, account)
			}
			return errInvalidCredentials
		}
		if resp.Status != http.StatusOK {
			return g.relay(w, r, "users", resp)
		}
		var user struct {
			ID string `json:"id"`
		}
		if err := resp.DecodeJSON(&user); err != nil {
			return err
		}
		token, expiresIn, err := g.tokens.Issue(user.ID)
		if err != nil {
			return err
		}
		w.Header().Set("Cache-Control", "no-store")
		return httpx.Encode(w, http.StatusOK, loginResponse{AccessToken: token, TokenType: "Bearer", ExpiresIn: expiresIn})
	})
}

// checkLoginFailures refuses a login when its address has failed too often
// for the account, or the account is locked. Neither draws anything: only a
// failure counts, so a user who types the right password never spends a
// token.
func (g *Gateway) checkLoginFailures(r *http.Request, account string) error {
	if g.loginFailures != nil {
		d := g.loginFailures.peek(r.Context(), failuresFrom(r, account))
		if err := g.refusal(r.Context(), g.loginFailures, d, "too many failed logins for this account from this address; try again later"); err != nil {
			return err
		}
	}
	if g.accountFailures != nil {
		if locked := g.accountLocks.lockedFor(r.Context(), account); locked > 0 {
			g.rateLimited.Add(r.Context(), 1, g.accountFailures.scope)
			return rateLimited(locked, "too many failed logins for this account; try again later")
		}
	}
	return nil
}

// countLoginFailure counts a failed login against its address and its
// account, and locks the account when that was one failure too many.
func (g *Gateway) countLoginFailure(r *http.Request, account string) {
	if g.loginFailures != nil {
		g.loginFailures.allow(r.Context(), failuresFrom(r, account))
	}
	if g.accountFailures != nil && !g.accountFailures.allow(r.Context(), account).allowed {
		locked := g.accountLocks.lock(r.Context(), account)
		g.logger.WarnContext(r.Context(), "account locked after failed logins", "account", account, "locked_for", locked.String())
	}
}

// failuresFrom is the bucket key of an account's login failures from the
// request's address.
func failuresFrom(r *http.Request, account string) string { return account + ":" + clientKey(r) }

// failureKey is the bucket key of an email's login failures: the hash of
// the lower-cased address, so that Redis holds no addresses in clear and a
// key's size does not depend on what a client sends; "" for no email.
func failureKey(email string) string {
	if email == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	return hex.EncodeToString(sum[:])
}

func (g *Gateway) handleJWKS() http.Handler {
	return httpx.Handle(g.logger, func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "public, max-age=300")
		return httpx.Encode(w, http.StatusOK, g.tokens.JWKS())
	})
}

// handleOpenAPI serves the document of this API (api/openapi.yaml), public
// and cacheable as the keys are. application/yaml is YAML's media type
// (RFC 9512).
func (g *Gateway) handleOpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Content-Length", strconv.Itoa(len(api.OpenAPI)))
		_, _ = w.Write(api.OpenAPI)
	})
}

func (g *Gateway) handleMe() http.Handler {
	return g.forwardGet("users", g.upstreams.Users, func(r *http.Request) string {
		return "/users/" + url.PathEscape(userFrom(r.Context()))
	})
}

// headerIdempotencyKey is the client's key for POST /orders.
const headerIdempotencyKey = "Idempotency-Key"

// handleCreateOrder forwards an order. A request without a key gets one made
// by the gateway, so that the upstream client may retry it (see
// upstream.Request): if an attempt's answer is lost, the orders service
// replays the first order instead of making a second. When the key is held
// by a request that died, placeOrder waits for its lock to end.
func (g *Gateway) handleCreateOrder() http.Handler {
	return httpx.Handle(g.logger, func(w http.ResponseWriter, r *http.Request) error {
		body, err := httpx.ReadBody(w, r)
		if err != nil {
			return err
		}
		h := jsonHeader.Clone()
		relayed := []string{"Location", "Retry-After"}
		if keys := r.Header.Values(headerIdempotencyKey); len(keys) > 0 {
			h[headerIdempotencyKey] = keys
			relayed = append(relayed, "Idempotent-Replayed")
		} else {
			// The client sent no key, so a replay of the gateway's own is
			// no news to it: its one request made one order.
			h.Set(headerIdempotencyKey, "gateway-"+uuid.NewString())
		}
		userID := userFrom(r.Context())
		resp, err := g.placeOrder(r.Context(), upstream.Request{
			Method: http.MethodPost, Path: "/orders", Body: body, Header: h, Subject: userID,
		})
		if err != nil {
			return err
		}
		return g.relay(w, r, "orders", resp, relayed...)
	})
}

func (g *Gateway) handleListOrders() http.Handler {
	return g.forwardGet("orders", g.upstreams.Orders, func(r *http.Request) string {
		return withQuery("/orders", r)
	})
}

func (g *Gateway) handleGetOrder() http.Handler {
	return g.forwardGet("orders", g.upstreams.Orders, func(r *http.Request) string {
		return "/orders/" + url.PathEscape(r.PathValue("id"))
	})
}

func (g *Gateway) handleListNotifications() http.Handler {
	return g.forwardGet("notifications", g.upstreams.Notifications, func(r *http.Request) string {
		return withQuery("/notifications", r)
	})
}

// withQuery is path with the client's query string, if it sent one.
func withQuery(path string, r *http.Request) string {
	if r.URL.RawQuery == "" {
		return path
	}
	return path + "?" + r.URL.RawQuery
}

// forwardGet makes a handler that forwards a GET, acting for the user, to
// path(r) on the upstream.
func (g *Gateway) forwardGet(service string, client *upstream.Client, path func(*http.Request) string) http.Handler {
	return httpx.Handle(g.logger, func(w http.ResponseWriter, r *http.Request) error {
		userID := userFrom(r.Context())
		resp, err := client.Do(r.Context(), upstream.Request{Method: http.MethodGet, Path: path(r), Subject: userID})
		if err != nil {
			return err
		}
		return g.relay(w, r, service, resp)
	})
}

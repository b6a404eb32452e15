package orders

import (
	"embed"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
)

// Name is the service's name: its identity and its tokens' audience.
const Name = "orders"

// TrustedCallers are the services whose internal tokens orders accepts.
var TrustedCallers = []string{"gateway"}

// Migrations holds the schema, one directory per SQL dialect.
//
//go:embed migrations
var Migrations embed.FS

// Header names of the idempotency protocol.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderReplayed       = "Idempotent-Replayed"
	// HeaderRetryAfterMs, on a 409 idempotency_key_in_flight, is the time
	// left on the key's lock in milliseconds: Retry-After's whole seconds
	// would make a caller that waits for the lock (the gateway) wait up to
	// a second too long.
	HeaderRetryAfterMs = "Retry-After-Ms"
)

// NewServer returns the internal API of the orders service. Every route acts
// for the user named by the internal token's subject.
func NewServer(svc *Service, verifier *auth.ServiceVerifier, logger *slog.Logger) *httpx.Router {
	rt := httpx.NewRouter()
	addRoutes(rt, svc, auth.RequireService(verifier, logger), logger)
	return rt
}

// addRoutes is the whole internal API surface of the orders service.
func addRoutes(rt *httpx.Router, svc *Service, requireService func(http.Handler) http.Handler, logger *slog.Logger) {
	rt.Handle("POST /orders", requireService(handleCreateOrder(svc, logger)))
	rt.Handle("GET /orders", requireService(handleListOrders(svc, logger)))
	rt.Handle("GET /orders/{id}", requireService(handleGetOrder(svc, logger)))
}

func handleCreateOrder(svc *Service, logger *slog.Logger) http.Handler {
	return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		userID, err := auth.UserFrom(r.Context())
		if err != nil {
			return err
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		// A request that fails validation never records its key.
		n, err := httpx.Decode[NewOrder](w, r)
		if err != nil {
			return err
		}
		created, err := svc.Create(r.Context(), userID, key, n)
		if inFlight, ok := errors.AsType[*keyInFlightError](err); ok {
			w.Header().Set(HeaderRetryAfterMs, strconv.FormatInt(inFlight.retryAfterMs(), 10))
		}
		if err != nil {
			return err
		}
		if created.Replayed {
			w.Header().Set(HeaderReplayed, "true")
		}
		w.Header().Set("Location", "/orders/"+created.Order.ID)
		return httpx.Encode(w, http.StatusCreated, created.Order)
	})
}

// idempotencyKey returns the request's key, "" when it has none. A bad
// header is a malformed request (400), as Stripe answers it: the body was
// never looked at.
func idempotencyKey(r *http.Request) (string, error) {
	values := r.Header.Values(HeaderIdempotencyKey)
	switch {
	case len(values) == 0:
		return "", nil
	case len(values) > 1:
		return "", badKey("must be sent once")
	case values[0] == "" || utf8.RuneCountInString(values[0]) > maxKeyLen:
		return "", badKey("must be 1 to 255 characters")
	case !utf8.ValidString(values[0]) || strings.ContainsFunc(values[0], unicode.IsControl):
		// Stored as text: bytes that are not UTF-8 would be refused by
		// PostgreSQL, after the key was looked up.
		return "", badKey("must be UTF-8 text without control characters")
	}
	return values[0], nil
}

func badKey(msg string) error {
	return &apperr.Error{Kind: apperr.BadRequest, Code: "invalid_idempotency_key",
		Detail: "the Idempotency-Key header is invalid", Fields: []apperr.FieldError{{Field: HeaderIdempotencyKey, Message: msg}}}
}

func handleListOrders(svc *Service, logger *slog.Logger) http.Handler {
	return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		userID, err := auth.UserFrom(r.Context())
		if err != nil {
			return err
		}
		req, err := pagination.Parse(r.URL.Query())
		if err != nil {
			return err
		}
		page, err := svc.List(r.Context(), userID, req)
		if err != nil {
			return err
		}
		return httpx.Encode(w, http.StatusOK, page)
	})
}

func handleGetOrder(svc *Service, logger *slog.Logger) http.Handler {
	return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		userID, err := auth.UserFrom(r.Context())
		if err != nil {
			return err
		}
		o, err := svc.Get(r.Context(), userID, r.PathValue("id"))
		if err != nil {
			return err
		}
		return httpx.Encode(w, http.StatusOK, o)
	})
}

package notifications

import (
	"embed"
	"log/slog"
	"net/http"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
	"github.com/ds-blueprint/blueprint/internal/platform/pagination"
)

// Name is the service's name: its identity and its tokens' audience.
const Name = "notifications"

// TrustedCallers are the services whose internal tokens notifications accepts.
var TrustedCallers = []string{"gateway"}

// Migrations holds the schema, one directory per SQL dialect.
//
//go:embed migrations
var Migrations embed.FS

// NewServer returns the internal API of the notifications service.
func NewServer(svc *Service, verifier *auth.ServiceVerifier, logger *slog.Logger) *httpx.Router {
	rt := httpx.NewRouter()
	addRoutes(rt, svc, auth.RequireService(verifier, logger), logger)
	return rt
}

// addRoutes is the whole internal API surface of the notifications service.
func addRoutes(rt *httpx.Router, svc *Service, requireService func(http.Handler) http.Handler, logger *slog.Logger) {
	rt.Handle("GET /notifications", requireService(handleListNotifications(svc, logger)))
}

func handleListNotifications(svc *Service, logger *slog.Logger) http.Handler {
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

package users

import (
	"embed"
	"errors"
	"log/slog"
	"net/http"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// Name is the service's name: its identity and its tokens' audience.
const Name = "users"

// TrustedCallers are the services whose internal tokens users accepts.
var TrustedCallers = []string{"gateway", "notifications"}

// Migrations holds the schema, one directory per SQL dialect.
//
//go:embed migrations
var Migrations embed.FS

// NewServer returns the internal API of the users service.
func NewServer(svc *Service, verifier *auth.ServiceVerifier, logger *slog.Logger) *httpx.Router {
	rt := httpx.NewRouter()
	addRoutes(rt, svc, auth.RequireService(verifier, logger), logger)
	return rt
}

// addRoutes is the whole internal API surface of the users service.
func addRoutes(rt *httpx.Router, svc *Service, requireService func(http.Handler) http.Handler, logger *slog.Logger) {
	rt.Handle("POST /users", requireService(handleRegister(svc, logger)))
	rt.Handle("POST /users/authenticate", requireService(handleAuthenticate(svc, logger)))
	rt.Handle("GET /users/{id}", requireService(handleGetUser(svc, logger)))
}

// requireCaller allows only the named services, on top of the trust list.
func requireCaller(r *http.Request, services ...string) (auth.Caller, error) {
	c, err := auth.CallerFrom(r.Context())
	if err != nil {
		return c, err
	}
	for _, s := range services {
		if c.Service == s {
			return c, nil
		}
	}
	return c, apperr.New(apperr.Forbidden, "forbidden", c.Service+" may not call this endpoint")
}

func handleRegister(svc *Service, logger *slog.Logger) http.Handler {
	return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := requireCaller(r, "gateway"); err != nil {
			return err
		}
		reg, err := httpx.Decode[Registration](w, r)
		if err != nil {
			return err
		}
		u, err := svc.Register(r.Context(), reg)
		if err != nil {
			return err
		}
		w.Header().Set("Location", "/users/"+u.ID)
		return httpx.Encode(w, http.StatusCreated, u)
	})
}

func handleAuthenticate(svc *Service, logger *slog.Logger) http.Handler {
	return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := requireCaller(r, "gateway"); err != nil {
			return err
		}
		creds, err := httpx.Decode[Credentials](w, r)
		if err != nil {
			return err
		}
		u, err := svc.Authenticate(r.Context(), creds)
		if errors.Is(err, errLoginsBusy) {
			// Shedding is the service working as designed: the hasher counts
			// and reports it, and an error line per refused login would add
			// to the overload.
			httpx.WriteAppError(w, r, errLoginsBusy)
			return nil
		}
		if err != nil {
			return err
		}
		return httpx.Encode(w, http.StatusOK, u)
	})
}

// handleGetUser serves a profile. The gateway may read only the profile of
// the user it acts for; the notifications worker, acting for itself, may
// read any. A refused read is a 404, so ids cannot be probed.
func handleGetUser(svc *Service, logger *slog.Logger) http.Handler {
	return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		c, err := requireCaller(r, "gateway", "notifications")
		if err != nil {
			return err
		}
		id := r.PathValue("id")
		if c.Service == "gateway" && c.Subject != id {
			return errNotFound
		}
		u, err := svc.Get(r.Context(), id)
		if err != nil {
			return err
		}
		return httpx.Encode(w, http.StatusOK, u)
	})
}

package auth

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/httpx"
)

// BearerToken returns the token of an "Authorization: Bearer …" header.
// A request with two Authorization headers is refused: whichever one this
// reads, a proxy or a log might read the other.
func BearerToken(r *http.Request) (string, error) {
	if len(r.Header.Values("Authorization")) > 1 {
		return "", unauthorized("more than one Authorization header", nil)
	}
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", apperr.Wrap(apperr.Unauthorized, "unauthorized", "the bearer token is missing or invalid",
			fmt.Errorf("%w: no bearer token", ErrInvalidToken))
	}
	return token, nil
}

type callerKey struct{}

// RequireService lets a request through only with a valid internal token
// for this service from a trusted caller, and puts the Caller in its context.
func RequireService(v *ServiceVerifier, logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, err := BearerToken(r)
			if err == nil {
				var c Caller
				if c, err = v.Verify(token); err == nil {
					next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
					return
				}
			}
			httpx.WriteError(w, r, logger, err)
		})
	}
}

// CallerFrom returns the verified caller of a request that passed
// RequireService, or an Unauthorized error if the route was wired without it.
func CallerFrom(ctx context.Context) (Caller, error) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	if !ok {
		return Caller{}, apperr.New(apperr.Unauthorized, "unauthorized", "no verified caller")
	}
	return c, nil
}

// UserFrom returns the end user an internal request acts for. Errors:
// Forbidden when the caller acts for itself, not for a user.
func UserFrom(ctx context.Context) (string, error) {
	c, err := CallerFrom(ctx)
	if err != nil {
		return "", err
	}
	if c.Subject == c.Service {
		return "", apperr.New(apperr.Forbidden, "forbidden", "this endpoint acts for a user; the token names none")
	}
	return c.Subject, nil
}

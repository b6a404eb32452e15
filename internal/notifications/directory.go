package notifications

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/upstream"
)

// UsersDirectory finds emails by asking the users service, with the
// worker's own internal token.
type UsersDirectory struct {
	Users *upstream.Client
}

// Email implements Directory.
func (d UsersDirectory) Email(ctx context.Context, userID string) (string, error) {
	resp, err := d.Users.Do(ctx, upstream.Request{Method: http.MethodGet, Path: "/users/" + url.PathEscape(userID)})
	if err != nil {
		return "", err
	}
	switch {
	case resp.Status == http.StatusNotFound:
		return "", errUserGone
	case resp.Status != http.StatusOK:
		return "", apperr.New(apperr.BadGateway, "upstream_error", fmt.Sprintf("users answered %d", resp.Status))
	}
	var u struct {
		Email string `json:"email"`
	}
	if err := resp.DecodeJSON(&u); err != nil {
		return "", err
	}
	return u.Email, nil
}

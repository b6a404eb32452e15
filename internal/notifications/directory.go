package notifications

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

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

// Cached email lookups: an event of a user seen in the last few minutes
// needs no call to users. An account's email never changes in this API, so
// a cached one is never wrong; the TTL bounds how stale it could be if that
// ever changed, and the size bounds the memory.
const (
	emailCacheSize = 10000
	emailCacheTTL  = 5 * time.Minute
)

// CachedDirectory remembers the emails another Directory found. Failures
// are not remembered: a user the directory could not find is asked for
// again by the event's next attempt.
type CachedDirectory struct {
	next Directory
	now  func() time.Time
	// emails holds the least recently used entries past the size out;
	// an entry past its expiry is asked for again. (The library's
	// expirable cache would add a goroutine that nothing stops.)
	emails *lru.Cache[string, cachedEmail]
}

type cachedEmail struct {
	email   string
	expires time.Time
}

// NewCachedDirectory caches next's answers.
func NewCachedDirectory(next Directory, now func() time.Time) *CachedDirectory {
	emails, _ := lru.New[string, cachedEmail](emailCacheSize) // errors only for a size below 1
	return &CachedDirectory{next: next, now: now, emails: emails}
}

// Email implements Directory.
func (d *CachedDirectory) Email(ctx context.Context, userID string) (string, error) {
	if e, ok := d.emails.Get(userID); ok && d.now().Before(e.expires) {
		return e.email, nil
	}
	email, err := d.next.Email(ctx, userID)
	if err != nil {
		return "", err
	}
	d.emails.Add(userID, cachedEmail{email: email, expires: d.now().Add(emailCacheTTL)})
	return email, nil
}

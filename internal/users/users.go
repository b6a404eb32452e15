package users

import (
	"context"
	"log/slog"
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

// User is a registered user, as every API shows it.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Plan      string    `json:"plan"`
	CreatedAt time.Time `json:"createdAt"`
}

// defaultPlan is every new user's plan.
const defaultPlan = "free"

// Validation limits from the public API contract.
const (
	maxEmailLen    = 254
	minPasswordLen = 8
	maxPasswordLen = 128
	maxNameLen     = 100
)

// Registration is a request to create a user.
type Registration struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

// Valid checks every rule and reports each broken one.
func (r Registration) Valid(context.Context) map[string]string {
	problems := map[string]string{}
	if msg := checkEmail(r.Email); msg != "" {
		problems["email"] = msg
	}
	if n := utf8.RuneCountInString(r.Password); n < minPasswordLen || n > maxPasswordLen {
		problems["password"] = "must be 8 to 128 characters"
	}
	if n := utf8.RuneCountInString(r.Name); n < 1 || n > maxNameLen {
		problems["name"] = "must be 1 to 100 characters"
	} else if strings.TrimSpace(r.Name) == "" {
		problems["name"] = "must not be blank"
	} else if strings.ContainsFunc(r.Name, hidden) {
		problems["name"] = "must not contain control or bidirectional formatting characters"
	}
	return problems
}

// hidden reports the characters a name is refused for, rather than stored:
// control characters (a terminal escape sequence in a name would run in
// whatever log viewer or console shows it) and the bidirectional overrides,
// embeddings and isolates that make text display in another order than it
// reads (a "Trojan Source" name). Every other character, of any script, is
// a name's own.
func hidden(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

// Credentials is a login attempt.
type Credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// Valid checks the shape of the attempt, not whether it is right.
func (c Credentials) Valid(context.Context) map[string]string {
	problems := map[string]string{}
	if c.Email == "" {
		problems["email"] = "is required"
	} else if len(c.Email) > maxEmailLen {
		problems["email"] = "must be at most 254 characters"
	}
	if c.Password == "" {
		problems["password"] = "is required"
	} else if utf8.RuneCountInString(c.Password) > maxPasswordLen {
		problems["password"] = "must be at most 128 characters"
	}
	return problems
}

// checkEmail accepts a bare RFC 5322 addr-spec with a dotted domain.
func checkEmail(email string) string {
	if email == "" {
		return "is required"
	}
	if len(email) > maxEmailLen {
		return "must be at most 254 characters"
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" {
		return "must be an email address like name@example.com"
	}
	at := strings.LastIndexByte(email, '@')
	domain := email[at+1:]
	if !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return "must be an email address like name@example.com"
	}
	return ""
}

// Service implements the users use cases.
type Service struct {
	store  *store
	hasher *hasher
	now    func() time.Time
}

// NewService returns the service over db. Its metrics go to meters and its
// warnings to logger; now is the clock.
func NewService(db *sqldb.DB, meters metric.MeterProvider, logger *slog.Logger, now func() time.Time) (*Service, error) {
	h, err := newHasher(meters, logger)
	if err != nil {
		return nil, err
	}
	return &Service{store: &store{db: db}, hasher: h, now: now}, nil
}

// Register creates a user. Errors: Conflict "email_taken".
func (s *Service) Register(ctx context.Context, r Registration) (User, error) {
	hash, err := s.hasher.hash(ctx, r.Password)
	if err != nil {
		return User{}, err
	}
	u := User{
		ID:        uuid.Must(uuid.NewV7()).String(),
		Email:     r.Email,
		Name:      r.Name,
		Plan:      defaultPlan,
		CreatedAt: sqldb.NewTime(s.now()).Time,
	}
	if err := insertUser(ctx, s.store.db, u, hash); err != nil {
		return User{}, err
	}
	return u, nil
}

// errInvalidCredentials is the one answer to a wrong email or password.
var errInvalidCredentials = apperr.New(apperr.Unauthorized, "invalid_credentials", "the email or password is wrong")

// Authenticate returns the user whose credentials these are. Errors:
// Unauthorized "invalid_credentials", the same for an unknown email and a
// wrong password, after the same amount of work; errLoginsBusy when the
// password could not be checked before ctx's deadline (admission.go).
func (s *Service) Authenticate(ctx context.Context, c Credentials) (User, error) {
	u, hash, err := s.store.byEmail(ctx, c.Email)
	if apperr.Is(err, apperr.NotFound) {
		hash = s.hasher.dummy
	} else if err != nil {
		return User{}, err
	}
	ok, err := s.hasher.check(ctx, c.Password, hash)
	if err != nil {
		return User{}, err
	}
	if !ok || u.ID == "" {
		return User{}, errInvalidCredentials
	}
	return u, nil
}

// Get returns a user. Errors: NotFound.
func (s *Service) Get(ctx context.Context, id string) (User, error) {
	return s.store.byID(ctx, id)
}

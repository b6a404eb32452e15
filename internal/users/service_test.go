package users

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// testNow is the service clock: not UTC and finer than a microsecond, so
// the tests see what the service does to the instants it stores.
var testNow = time.Date(2030, time.March, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600))

// The telemetry of services under test that do not look at it: metrics and
// warnings dropped.
var (
	noMetrics = metricnoop.NewMeterProvider()
	noLogs    = slog.New(slog.DiscardHandler)
)

// newTestService returns a Service over a fresh, migrated database.
// It costs one argon2id hash (the dummy), about 70 ms.
func newTestService(t *testing.T, b sqldbtest.Backend) *Service {
	t.Helper()
	svc, err := NewService(b.Open(t, Migrations), noMetrics, noLogs, func() time.Time { return testNow })
	if err != nil {
		t.Fatalf("NewService() = %v, want nil", err)
	}
	return svc
}

func register(t *testing.T, svc *Service, r Registration) User {
	t.Helper()
	u, err := svc.Register(context.Background(), r)
	if err != nil {
		t.Fatalf("Register(%+v) = %v, want nil", r, err)
	}
	return u
}

// wantAppErr fails unless err is an *apperr.Error of kind and code.
func wantAppErr(t *testing.T, call string, err error, kind apperr.Kind, code string) {
	t.Helper()
	e, ok := errors.AsType[*apperr.Error](err)
	if !ok {
		t.Fatalf("%s error = %v, want an *apperr.Error %q", call, err, code)
	}
	if e.Kind != kind || e.Code != code {
		t.Errorf("%s error = kind %v code %q, want kind %v code %q", call, e.Kind, e.Code, kind, code)
	}
}

// phc is the argon2id PHC string with the OWASP parameters: 16-byte salt,
// 32-byte key, both unpadded standard base64.
var phc = regexp.MustCompile(fmt.Sprintf(`^\$argon2id\$v=19\$m=%d,t=%d,p=%d\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`,
	argonMemoryKiB, argonTime, argonThreads))

func TestServiceRegister(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		svc := newTestService(t, b)
		ctx := context.Background()
		reg := Registration{Email: "Bob.Smith@Example.com", Password: "correct horse battery", Name: "Bob Smith"}

		u := register(t, svc, reg)
		id, err := uuid.Parse(u.ID)
		if err != nil || id.Version() != 7 {
			t.Errorf("Register() id = %q (version %v, %v), want a UUIDv7", u.ID, id.Version(), err)
		}
		wantCreated := testNow.UTC().Truncate(time.Microsecond)
		want := User{ID: u.ID, Email: "Bob.Smith@Example.com", Name: "Bob Smith", Plan: "free", CreatedAt: wantCreated}
		if u != want {
			t.Errorf("Register(%+v) = %+v, want %+v", reg, u, want)
		}
		if loc := u.CreatedAt.Location(); loc != time.UTC {
			t.Errorf("Register() createdAt location = %v, want UTC", loc)
		}

		got, err := svc.Get(ctx, u.ID)
		if err != nil {
			t.Fatalf("Get(%q) = %v, want nil", u.ID, err)
		}
		if got != want {
			t.Errorf("Get(%q) = %+v, want %+v (what Register returned)", u.ID, got, want)
		}

		// The password is stored only as an argon2id PHC string.
		_, hash, err := svc.store.byEmail(ctx, reg.Email)
		if err != nil {
			t.Fatalf("store.byEmail(%q) = %v, want nil", reg.Email, err)
		}
		if !phc.MatchString(hash) {
			t.Errorf("stored password hash = %q, want an argon2id PHC string matching %s", hash, phc)
		}
		if strings.Contains(hash, reg.Password) {
			t.Errorf("stored password hash %q contains the password", hash)
		}
	})
}

func TestServiceGetUnknown(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		svc := newTestService(t, b)
		for _, id := range []string{uuid.Must(uuid.NewV7()).String(), "", "' OR 1=1 --"} {
			u, err := svc.Get(context.Background(), id)
			if err == nil {
				t.Errorf("Get(%q) = %+v, nil, want NotFound", id, u)
				continue
			}
			wantAppErr(t, "Get("+id+")", err, apperr.NotFound, "user_not_found")
		}
	})
}

func TestServiceRegisterDuplicateEmail(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		svc := newTestService(t, b)
		first := register(t, svc, Registration{Email: "carol@example.com", Password: "password-1", Name: "Carol"})

		tests := []struct {
			name  string
			email string
		}{
			{"same case", "carol@example.com"},
			{"different case", "Carol@EXAMPLE.com"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				reg := Registration{Email: tt.email, Password: "password-2", Name: "Impostor"}
				u, err := svc.Register(context.Background(), reg)
				if err == nil {
					t.Fatalf("Register(%+v) = %+v, nil, want Conflict email_taken", reg, u)
				}
				wantAppErr(t, "Register("+tt.email+")", err, apperr.Conflict, "email_taken")
			})
		}
		t.Cleanup(func() {
			// The first account is untouched by the attempts.
			got, err := svc.Get(context.Background(), first.ID)
			if err != nil || got != first {
				t.Errorf("Get(%q) after duplicates = %+v, %v, want %+v", first.ID, got, err, first)
			}
		})
	})
}

// TestServiceRegisterConcurrent races two registrations of one email: the
// database, not a check-then-insert, must decide, so exactly one wins.
func TestServiceRegisterConcurrent(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		svc := newTestService(t, b)
		emails := []string{"dave@example.com", "DAVE@example.com"}
		errs := make([]error, len(emails))
		var wg sync.WaitGroup
		for i, email := range emails {
			wg.Go(func() { // exits when Register returns
				_, errs[i] = svc.Register(context.Background(), Registration{Email: email, Password: "password", Name: "Dave"})
			})
		}
		wg.Wait()
		var won, taken int
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case apperr.Is(err, apperr.Conflict):
				taken++
			default:
				t.Errorf("Register() = %v, want nil or Conflict", err)
			}
		}
		if won != 1 || taken != 1 {
			t.Errorf("concurrent Register(%v): %d succeeded, %d email_taken, want 1 and 1", emails, won, taken)
		}
	})
}

func TestServiceAuthenticate(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		svc := newTestService(t, b)
		alice := register(t, svc, Registration{Email: "Alice@Example.com", Password: "correct horse battery", Name: "Alice"})

		tests := []struct {
			name  string
			creds Credentials
			ok    bool
		}{
			{"as registered", Credentials{Email: "Alice@Example.com", Password: "correct horse battery"}, true},
			{"lower-case email", Credentials{Email: "alice@example.com", Password: "correct horse battery"}, true},
			{"upper-case email", Credentials{Email: "ALICE@EXAMPLE.COM", Password: "correct horse battery"}, true},
			{"wrong password", Credentials{Email: "Alice@Example.com", Password: "wrong horse battery"}, false},
			{"password in another case", Credentials{Email: "Alice@Example.com", Password: "Correct Horse Battery"}, false},
			{"unknown email", Credentials{Email: "mallory@example.com", Password: "correct horse battery"}, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				u, err := svc.Authenticate(context.Background(), tt.creds)
				if tt.ok {
					if err != nil || u != alice {
						t.Errorf("Authenticate(%+v) = %+v, %v, want %+v, nil", tt.creds, u, err, alice)
					}
					return
				}
				if err == nil {
					t.Fatalf("Authenticate(%+v) = %+v, nil, want invalid_credentials", tt.creds, u)
				}
				wantAppErr(t, "Authenticate("+tt.creds.Email+")", err, apperr.Unauthorized, "invalid_credentials")
				// One answer for both failures, to the letter: nothing tells an
				// unknown email from a wrong password.
				if want := errInvalidCredentials.Error(); err.Error() != want {
					t.Errorf("Authenticate(%+v) error = %q, want %q", tt.creds, err, want)
				}
				if u != (User{}) {
					t.Errorf("Authenticate(%+v) user = %+v, want the zero User", tt.creds, u)
				}
			})
		}
	})
}

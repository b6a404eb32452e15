package users

import (
	"testing"

	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/internal/platform/apperr"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
	"github.com/ds-blueprint/blueprint/internal/platform/sqldb/sqldbtest"
)

// TestSeed: seeded users are registered users, each able to log in with the
// one password, and an email already taken stops the seed.
func TestSeed(t *testing.T) {
	t.Parallel()
	sqldbtest.Each(t, func(t *testing.T, b sqldbtest.Backend) {
		t.Parallel()
		svc := newTestService(t, b)
		created := sqldb.NewTime(testNow).Time
		seeded := []User{
			{ID: uuid.NewString(), Email: "ada@example.com", Name: "Ada", Plan: defaultPlan, CreatedAt: created},
			{ID: uuid.NewString(), Email: "grace@example.com", Name: "Grace", Plan: defaultPlan, CreatedAt: created},
		}
		if err := svc.Seed(t.Context(), seeded, "seeded password"); err != nil {
			t.Fatalf("Seed() = %v, want nil", err)
		}
		for _, want := range seeded {
			got, err := svc.Authenticate(t.Context(), Credentials{Email: want.Email, Password: "seeded password"})
			if err != nil || got.ID != want.ID || got.Name != want.Name || !got.CreatedAt.Equal(want.CreatedAt) {
				t.Errorf("Authenticate(%s) = %+v, %v; want %+v", want.Email, got, err, want)
			}
		}
		again := []User{{ID: uuid.NewString(), Email: "ADA@example.com", Name: "Ada", Plan: defaultPlan, CreatedAt: created}}
		wantAppErr(t, "Seed(a taken email)", svc.Seed(t.Context(), again, "seeded password"), apperr.Conflict, "email_taken")
	})
}

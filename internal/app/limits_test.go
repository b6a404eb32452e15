package app

import (
	"strings"
	"testing"
)

// TestAccountLimitAboveAddressLimit: a per-account login failure limit no
// higher than the per-address one would let one address lock an account
// for everyone, so it stops the start, naming the variable.
func TestAccountLimitAboveAddressLimit(t *testing.T) {
	t.Parallel()
	_, err := run(t, map[string]string{"LOGIN_FAILURE_LIMIT": "5", "LOGIN_ACCOUNT_FAILURE_LIMIT": "5"}, "run")
	if err == nil || ExitCode(err) != 2 || !strings.Contains(err.Error(), "LOGIN_ACCOUNT_FAILURE_LIMIT") {
		t.Errorf("Run = %v, want a configuration error naming LOGIN_ACCOUNT_FAILURE_LIMIT", err)
	}
}

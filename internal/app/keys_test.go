package app

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
)

// TestKeysRotate walks a rotation's three steps as a deployment rolls them
// out and checks that nothing in use is refused at any step — the old
// keys' tokens and NATS users while the new ones arrive, the new ones from
// the moment they sign — and that the old keys are refused once dropped.
func TestKeysRotate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old, out := filepath.Join(dir, "keys"), filepath.Join(dir, "rotated")
	if _, err := run(t, nil, "keys", "generate", "--out", old); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, nil, "keys", "rotate", "--from", old, "--out", out); err != nil {
		t.Fatalf("keys rotate = %v", err)
	}
	load := func(name string) *auth.Keyring {
		kr, err := auth.LoadKeyring(filepath.Join(out, name), services, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return kr
	}
	before, _ := auth.LoadKeyring(old, services, true)
	trusting, signing, after := load("1-trust-new"), load("2-sign-new"), load("3-drop-old")
	if trusting.Access.ID != before.Access.ID || signing.Access.ID == before.Access.ID || after.Access.ID != signing.Access.ID {
		t.Fatalf("access keys: before %s, steps %s %s %s; want the old key in step 1, the new one from step 2",
			before.Access.ID, trusting.Access.ID, signing.Access.ID, after.Access.ID)
	}

	user := uuid.Must(uuid.NewV7()).String()
	accessToken := func(kr *auth.Keyring) string {
		tok, _, err := auth.NewAccessTokens(kr.Access, nil, time.Now).Issue(user)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	serviceToken := func(kr *auth.Keyring) string {
		tok, err := auth.NewMinter("gateway", kr.Identities["gateway"], time.Now).Token("users", user)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// accepts reports whether a process holding verifier keys accepts the
	// tokens signed with signer keys.
	accepts := func(verifier, signer *auth.Keyring) bool {
		keys, err := verifier.Bundle.Access.PublicKeys()
		if err != nil {
			t.Fatal(err)
		}
		_, accessErr := auth.NewAccessTokens(verifier.Access, keys, time.Now).Verify(accessToken(signer))
		v, err := auth.NewServiceVerifier("users", []string{"gateway"}, verifier.Bundle, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		_, serviceErr := v.Verify(serviceToken(signer))
		return accessErr == nil && serviceErr == nil
	}
	for _, tc := range []struct {
		name             string
		verifier, signer *auth.Keyring
		want             bool
	}{
		// Each step is rolled out while processes of the step before still run.
		{"step 1 accepts the keys in use", trusting, before, true},
		{"step 1 accepts the new keys before they sign", trusting, signing, true},
		{"a process still on step 1 accepts step 2's tokens", trusting, signing, true},
		{"step 2 accepts the old keys' tokens still alive", signing, before, true},
		{"step 3 accepts the new keys", after, signing, true},
		{"step 3 refuses the old keys", after, before, false},
	} {
		if got := accepts(tc.verifier, tc.signer); got != tc.want {
			t.Errorf("%s: accepted %t, want %t", tc.name, got, tc.want)
		}
	}

	// NATS: the servers of steps 1 and 2 admit both generations of users,
	// those of step 3 only the new one.
	for _, tc := range []struct {
		conf, seeds string
		want        bool
	}{
		{"1-trust-new", old, true},
		{"1-trust-new", filepath.Join(out, "2-sign-new"), true},
		{"3-drop-old", filepath.Join(out, "3-drop-old"), true},
		{"3-drop-old", old, false},
	} {
		srv, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{
			StoreDir: t.TempDir(), Listen: "127.0.0.1:0", ConfigFile: filepath.Join(out, tc.conf, natsAuthFile),
		}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := natsbus.Connect(natsbus.ConnConfig{Name: "test", URL: srv.ClientURL(), FailFast: true,
			NKeyFile: filepath.Join(tc.seeds, natsSeedFile("orders"))}, slog.New(slog.DiscardHandler))
		if got := err == nil; got != tc.want {
			t.Errorf("NATS of %s, orders' seed of %s: connected %t (%v), want %t", tc.conf, filepath.Base(tc.seeds), got, err, tc.want)
		}
		if nc != nil {
			nc.Close()
		}
		srv.Stop()
	}

	if _, err := run(t, nil, "keys", "rotate", "--from", old, "--out", out); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("a second rotate into the same directory = %v, want a refusal to overwrite", err)
	}
}

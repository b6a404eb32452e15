package auth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

func TestKeyringRoundTrip(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	dir := filepath.Join(t.TempDir(), "keys")
	if err := auth.WriteKeyring(dir, kr); err != nil {
		t.Fatalf("WriteKeyring(%q) = %v, want nil", dir, err)
	}

	// Every file is readable by its owner only: they are mounted as secrets.
	wantFiles := []string{auth.AccessKeyFile, auth.BundleFile}
	for _, s := range testServices {
		wantFiles = append(wantFiles, auth.IdentityFile(s))
	}
	for _, name := range wantFiles {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("Stat(%s) = %v, want the file written", name, err)
			continue
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("mode of %s = %v, want -rw-------", name, perm)
		}
	}
	if info, err := os.Stat(dir); err != nil {
		t.Errorf("Stat(keys dir) = %v, want the dir made", err)
	} else if perm := info.Mode().Perm(); perm != 0o700 {
		t.Errorf("mode of keys dir = %v, want -rwx------", perm)
	}

	// The bundle is public: it must hold no private key.
	bundle, err := os.ReadFile(filepath.Join(dir, auth.BundleFile))
	if err != nil {
		t.Fatalf("read bundle: %v", err)
	}
	for _, k := range append([]auth.PrivateKey{kr.Access}, identities(kr)...) {
		for _, enc := range encodings(k.Key.Seed()) {
			if strings.Contains(string(bundle), enc) {
				t.Errorf("%s contains the private key %s", auth.BundleFile, k.ID)
			}
		}
	}

	got, err := auth.LoadKeyring(dir, testServices, true)
	if err != nil {
		t.Fatalf("LoadKeyring(%q, %v, true) = %v, want nil", dir, testServices, err)
	}
	assertSameKey(t, "access", got.Access, kr.Access)
	for _, s := range testServices {
		assertSameKey(t, s, got.Identities[s], kr.Identities[s])
	}
	if !reflect.DeepEqual(got.Bundle, kr.Bundle) {
		t.Errorf("LoadKeyring().Bundle = %+v, want %+v", got.Bundle, kr.Bundle)
	}

	// A service loads only its own key, and not the gateway's access key.
	one, err := auth.LoadKeyring(dir, []string{"users"}, false)
	if err != nil {
		t.Fatalf("LoadKeyring(%q, [users], false) = %v, want nil", dir, err)
	}
	if len(one.Identities) != 1 || one.Access.Key != nil {
		t.Errorf("LoadKeyring(%q, [users], false) holds identities %v and access key %v, want only users", dir, one.Identities, one.Access)
	}
	assertSameKey(t, "users", one.Identities["users"], kr.Identities["users"])

	// Keys loaded from disk sign tokens the bundle verifies.
	v, err := auth.NewServiceVerifier("users", usersCallers, one.Bundle, t0Now)
	if err != nil {
		t.Fatalf("NewServiceVerifier() = %v, want nil", err)
	}
	token := mint(t, auth.NewMinter("gateway", got.Identities["gateway"], t0Now), "users", "user-1")
	if c, err := v.Verify(token); err != nil || c.Service != "gateway" {
		t.Errorf("Verify(token from loaded key) = %+v, %v, want caller gateway", c, err)
	}
}

func t0Now() time.Time { return t0 }

func identities(kr *auth.Keyring) []auth.PrivateKey {
	var ks []auth.PrivateKey
	for _, k := range kr.Identities {
		ks = append(ks, k)
	}
	return ks
}

func assertSameKey(t *testing.T, name string, got, want auth.PrivateKey) {
	t.Helper()
	if got.ID != want.ID || !bytes.Equal(got.Key, want.Key) {
		t.Errorf("loaded %s key = %v, want %v (same kid and bytes)", name, got, want)
	}
}

func TestWriteKeyringRefusesToOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := newTestKeyring(t)
	if err := auth.WriteKeyring(dir, first); err != nil {
		t.Fatalf("WriteKeyring(%q) = %v, want nil", dir, err)
	}
	before := readDir(t, dir)

	second := newTestKeyring(t)
	err := auth.WriteKeyring(dir, second)
	if err == nil {
		t.Fatalf("WriteKeyring(%q) over existing keys = nil, want an error", dir)
	}
	if !strings.Contains(err.Error(), "already exists") {
		t.Errorf("WriteKeyring(%q) error = %q, want it to say a file already exists", dir, err)
	}
	if after := readDir(t, dir); !reflect.DeepEqual(after, before) {
		t.Errorf("WriteKeyring(%q) changed the existing files, want them untouched", dir)
	}

	// One existing file is enough to refuse, and nothing else is written.
	partial := t.TempDir()
	if err := os.WriteFile(filepath.Join(partial, auth.IdentityFile("orders")), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteKeyring(partial, second); err == nil {
		t.Fatalf("WriteKeyring(%q) with orders.pem present = nil, want an error", partial)
	}
	if files := readDir(t, partial); len(files) != 1 || string(files[auth.IdentityFile("orders")]) != "keep me" {
		t.Errorf("WriteKeyring(%q) wrote %d files, want only the existing one left as it was", partial, len(files))
	}
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = data
	}
	return files
}

func TestLoadKeyringErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := auth.WriteKeyring(dir, newTestKeyring(t)); err != nil {
		t.Fatalf("WriteKeyring() = %v, want nil", err)
	}
	writeFile := func(t *testing.T, dir, name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	brokenDir := func(t *testing.T, name string, data []byte) string {
		t.Helper()
		d := t.TempDir()
		for n, content := range readDir(t, dir) {
			writeFile(t, d, n, content)
		}
		writeFile(t, d, name, data)
		return d
	}

	tests := []struct {
		name       string
		dir        func(t *testing.T) string
		services   []string
		withAccess bool
		wantSub    []string
	}{
		{
			name:     "missing private key",
			dir:      func(*testing.T) string { return dir },
			services: []string{"billing"},
			wantSub:  []string{"billing.pem", "not found", "keys generate"},
		},
		{
			name: "missing access key",
			dir: func(t *testing.T) string {
				d := brokenDir(t, "x", nil)
				if err := os.Remove(filepath.Join(d, auth.AccessKeyFile)); err != nil {
					t.Fatal(err)
				}
				return d
			},
			withAccess: true,
			wantSub:    []string{auth.AccessKeyFile, "not found"},
		},
		{
			name:    "missing bundle",
			dir:     func(t *testing.T) string { return t.TempDir() },
			wantSub: []string{"trust bundle"},
		},
		{
			name:    "bundle not JSON",
			dir:     func(t *testing.T) string { return brokenDir(t, auth.BundleFile, []byte("{not json")) },
			wantSub: []string{auth.BundleFile},
		},
		{
			name:     "key file not PEM",
			dir:      func(t *testing.T) string { return brokenDir(t, "users.pem", []byte("hello")) },
			services: []string{"users"},
			wantSub:  []string{"users.pem", "PEM"},
		},
		{
			name: "key file holds a public key",
			dir: func(t *testing.T) string {
				return brokenDir(t, "users.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}))
			},
			services: []string{"users"},
			wantSub:  []string{"users.pem"},
		},
		{
			name: "key file holds an ECDSA key",
			dir: func(t *testing.T) string {
				return brokenDir(t, "users.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))
			},
			services: []string{"users"},
			wantSub:  []string{"users.pem", "Ed25519"},
		},
		{
			name: "key file holds garbage DER",
			dir: func(t *testing.T) string {
				return brokenDir(t, "users.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}))
			},
			services: []string{"users"},
			wantSub:  []string{"users.pem"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := tt.dir(t)
			kr, err := auth.LoadKeyring(d, tt.services, tt.withAccess)
			if err == nil {
				t.Fatalf("LoadKeyring(%q, %v, %v) = %+v, nil, want an error", d, tt.services, tt.withAccess, kr)
			}
			for _, sub := range tt.wantSub {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("LoadKeyring(%q, %v, %v) error = %q, want it to mention %q", d, tt.services, tt.withAccess, err, sub)
				}
			}
		})
	}
}

// rfc7638Thumbprint computes the kid independently of the package: SHA-256
// over the required members in lexicographic order, no whitespace.
func rfc7638Thumbprint(pub ed25519.PublicKey) string {
	canonical := fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, base64.RawURLEncoding.EncodeToString(pub))
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func TestKeyIDIsThumbprint(t *testing.T) {
	t.Parallel()
	k := newTestKey(t)
	if want := rfc7638Thumbprint(k.Public().Key); k.ID != want {
		t.Errorf("GenerateKey().ID = %q, want the RFC 7638 thumbprint %q", k.ID, want)
	}
	if pub := k.Public(); pub.ID != k.ID || !bytes.Equal(pub.Key, k.Key.Public().(ed25519.PublicKey)) {
		t.Errorf("Public() = %v, want the public half with kid %s", pub, k.ID)
	}
}

func TestJWKSetPublicKeys(t *testing.T) {
	t.Parallel()
	// RFC 8037 appendix A.2 and A.3: an Ed25519 public key and its thumbprint.
	const rfcX = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	const rfcKid = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
	k := newTestKey(t)
	good := auth.NewJWKSet([]auth.PublicKey{k.Public()}).Keys[0]
	edit := func(f func(*auth.JWK)) auth.JWK { j := good; f(&j); return j }

	t.Run("RFC 8037 test vector", func(t *testing.T) {
		t.Parallel()
		set := auth.JWKSet{Keys: []auth.JWK{{Kty: "OKP", Crv: "Ed25519", X: rfcX, Kid: rfcKid, Use: "sig", Alg: "EdDSA"}}}
		keys, err := set.PublicKeys()
		if err != nil || len(keys) != 1 || keys[0].ID != rfcKid {
			t.Fatalf("PublicKeys(RFC 8037 key) = %v, %v, want the key with kid %s", keys, err, rfcKid)
		}
		x, _ := base64.RawURLEncoding.DecodeString(rfcX)
		if !bytes.Equal(keys[0].Key, x) {
			t.Errorf("PublicKeys(RFC 8037 key) key = %x, want %x", keys[0].Key, x)
		}
	})

	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		keys, err := auth.JWKSet{Keys: []auth.JWK{good}}.PublicKeys()
		if err != nil || len(keys) != 1 || keys[0].ID != k.ID || !bytes.Equal(keys[0].Key, k.Public().Key) {
			t.Errorf("PublicKeys(NewJWKSet(k)) = %v, %v, want [%v]", keys, err, k.Public())
		}
	})

	tests := []struct {
		name string
		jwk  auth.JWK
	}{
		{"kid is not the thumbprint", edit(func(j *auth.JWK) { j.Kid = "my-key-1" })},
		{"kid of another key", edit(func(j *auth.JWK) { j.Kid = rfcKid })},
		{"empty kid", edit(func(j *auth.JWK) { j.Kid = "" })},
		{"kty RSA", edit(func(j *auth.JWK) { j.Kty = "RSA" })},
		{"kty EC", edit(func(j *auth.JWK) { j.Kty, j.Crv = "EC", "P-256" })},
		{"crv X25519", edit(func(j *auth.JWK) { j.Crv = "X25519" })},
		{"crv Ed448", edit(func(j *auth.JWK) { j.Crv = "Ed448" })},
		{"x not base64url", edit(func(j *auth.JWK) { j.X = "%%%" })},
		{"x too short", edit(func(j *auth.JWK) { j.X = base64.RawURLEncoding.EncodeToString(make([]byte, 31)) })},
		{"x too long", edit(func(j *auth.JWK) { j.X = base64.RawURLEncoding.EncodeToString(make([]byte, 33)) })},
		{"x empty", edit(func(j *auth.JWK) { j.X = "" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set := auth.JWKSet{Keys: []auth.JWK{good, tt.jwk}}
			if keys, err := set.PublicKeys(); err == nil {
				t.Errorf("PublicKeys(%+v) = %v, nil, want an error", tt.jwk, keys)
			}
		})
	}
}

func TestBundleJSON(t *testing.T) {
	t.Parallel()
	kr := newTestKeyring(t)
	data, err := json.Marshal(kr.Bundle)
	if err != nil {
		t.Fatalf("json.Marshal(Bundle) = %v, want nil", err)
	}
	var got auth.Bundle
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("json.Unmarshal(Bundle) = %v, want nil", err)
	}
	if !reflect.DeepEqual(got, kr.Bundle) {
		t.Errorf("Bundle after a JSON round trip = %+v, want %+v", got, kr.Bundle)
	}
	assertPublicJWKS(t, got.Access, kr.Access)
	for _, s := range testServices {
		assertPublicJWKS(t, got.Services[s], kr.Identities[s])
	}
}

// TestPrivateKeyRedacted checks that a key printed or logged by mistake
// shows its kid and never its bytes.
func TestPrivateKeyRedacted(t *testing.T) {
	t.Parallel()
	k := newTestKey(t)
	kr := &auth.Keyring{Access: k, Identities: map[string]auth.PrivateKey{"users": k}}
	logged := func(h func(*bytes.Buffer) slog.Handler, args ...any) string {
		var buf bytes.Buffer
		slog.New(h(&buf)).Log(context.Background(), slog.LevelInfo, "loaded key", args...)
		return buf.String()
	}
	text := func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }
	jsonH := func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }

	tests := []struct {
		name string
		out  string
	}{
		{"%v", fmt.Sprintf("%v", k)},
		{"%+v", fmt.Sprintf("%+v", k)},
		//lint:ignore S1025 what %s prints is the point
		{"%s", fmt.Sprintf("%s", k)},
		{"%v of a pointer", fmt.Sprintf("%v", &k)},
		{"%v of a keyring", fmt.Sprintf("%v", kr)},
		{"%+v of a keyring", fmt.Sprintf("%+v", *kr)},
		{"%#v", fmt.Sprintf("%#v", k)},
		{"wrapped in an error", fmt.Errorf("load %v: %w", k, os.ErrNotExist).Error()},
		{"slog text", logged(text, "key", k)},
		{"slog text pointer", logged(text, "key", &k)},
		{"slog json", logged(jsonH, "key", k)},
		{"slog json pointer", logged(jsonH, "key", &k)},
		{"slog json group", logged(jsonH, slog.Group("keys", "access", k))},
		{"slog text keyring", logged(text, "keyring", kr)},
		{"slog json keyring", logged(jsonH, "keyring", kr)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, enc := range append(encodings(k.Key.Seed()), encodings(k.Key)...) {
				if strings.Contains(tt.out, enc) {
					t.Errorf("output %q contains the key bytes (%q), want them redacted", tt.out, enc)
					break
				}
			}
			if !strings.Contains(tt.out, k.ID) {
				t.Errorf("output %q does not name kid %s, want the kid shown", tt.out, k.ID)
			}
		})
	}
}

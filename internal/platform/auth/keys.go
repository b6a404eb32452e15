// Package auth is Blueprint's identity layer: Ed25519 keys, the public
// access tokens the gateway issues to users, and the short-lived internal
// tokens each service mints for every call to another service.
//
// Two kinds of token, never interchangeable:
//
//   - access tokens (typ at+jwt, iss blueprint-gateway, aud blueprint-api,
//     15 min) prove a user to the gateway; their public keys are published as
//     a JWKS;
//   - internal tokens (typ svc+jwt, iss the calling service, aud the called
//     service, at most 60 s) prove a service to another. Each service has its
//     own key pair and accepts only its own audience and only the issuers in
//     its trust list.
//
// In `all` mode every key is generated in memory at start; deployed services
// load them from the files `blueprint keys generate` writes.
package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
)

// PrivateKey is an Ed25519 signing key and its key id.
type PrivateKey struct {
	ID  string
	Key ed25519.PrivateKey
}

// PublicKey is an Ed25519 verification key and its key id.
type PublicKey struct {
	ID  string
	Key ed25519.PublicKey
}

// GenerateKey makes a new signing key.
func GenerateKey() (PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return newPrivateKey(priv), nil
}

func newPrivateKey(priv ed25519.PrivateKey) PrivateKey {
	pub := priv.Public().(ed25519.PublicKey)
	return PrivateKey{ID: thumbprint(pub), Key: priv}
}

// Public returns the verification half of k.
func (k PrivateKey) Public() PublicKey {
	return PublicKey{ID: k.ID, Key: k.Key.Public().(ed25519.PublicKey)}
}

// String, GoString, LogValue and MarshalJSON keep the key material out of
// logs, error messages and JSON even when a key (or a struct holding one) is
// printed by mistake: only the key id shows.
func (k PrivateKey) String() string { return "PrivateKey(" + k.ID + ")" }

// GoString implements fmt.GoStringer, for %#v.
func (k PrivateKey) GoString() string { return k.String() }

// LogValue implements slog.LogValuer.
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON implements json.Marshaler; slog's JSON handler uses it for a
// key nested in a logged struct.
func (k PrivateKey) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }

// thumbprint is the RFC 7638 JWK thumbprint, used as the key id: it is
// derived from the key, so the same key always has the same kid.
func thumbprint(pub ed25519.PublicKey) string {
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// JWK is the JSON Web Key form of a public Ed25519 key (RFC 8037).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// JWKSet is a JSON Web Key Set.
type JWKSet struct {
	Keys []JWK `json:"keys"`
}

// NewJWKSet returns the JWK form of keys.
func NewJWKSet(keys []PublicKey) JWKSet {
	set := JWKSet{Keys: make([]JWK, 0, len(keys))}
	for _, k := range keys {
		set.Keys = append(set.Keys, JWK{
			Kty: "OKP", Crv: "Ed25519", Use: "sig", Alg: "EdDSA",
			Kid: k.ID, X: base64.RawURLEncoding.EncodeToString(k.Key),
		})
	}
	return set
}

// PublicKeys parses the set, checking that each kid matches its key.
func (s JWKSet) PublicKeys() ([]PublicKey, error) {
	keys := make([]PublicKey, 0, len(s.Keys))
	for _, j := range s.Keys {
		if j.Kty != "OKP" || j.Crv != "Ed25519" {
			return nil, fmt.Errorf("key %q: only OKP Ed25519 keys are supported", j.Kid)
		}
		x, err := base64.RawURLEncoding.DecodeString(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %q: x is not a base64url Ed25519 public key", j.Kid)
		}
		if j.Kid != thumbprint(x) {
			return nil, fmt.Errorf("key %q: kid is not the key's thumbprint", j.Kid)
		}
		keys = append(keys, PublicKey{ID: j.Kid, Key: ed25519.PublicKey(x)})
	}
	return keys, nil
}

// Bundle is the public half of every key in a deployment: what each service
// needs to verify the others. It is the trust.json file that deployments
// mount next to each service's own private key.
type Bundle struct {
	// Access holds the keys of access tokens; two during a rotation.
	Access JWKSet `json:"access"`
	// Services maps a service name to the keys of its internal tokens.
	Services map[string]JWKSet `json:"services"`
}

// MergeBundles trusts every key of a and of b: the bundle of a key
// rotation's middle steps, in which tokens signed with either the old or
// the new keys are accepted.
func MergeBundles(a, b Bundle) Bundle {
	merged := Bundle{Access: JWKSet{Keys: append(slices.Clone(a.Access.Keys), b.Access.Keys...)}, Services: map[string]JWKSet{}}
	for _, m := range []map[string]JWKSet{a.Services, b.Services} {
		for service, set := range m {
			merged.Services[service] = JWKSet{Keys: append(slices.Clone(merged.Services[service].Keys), set.Keys...)}
		}
	}
	return merged
}

// Keyring is every key one process holds: the private keys of the services
// it runs (and of access tokens, when it runs the gateway) and the bundle of
// public keys it trusts.
type Keyring struct {
	Access     PrivateKey
	Identities map[string]PrivateKey
	Bundle     Bundle
}

// The file names `blueprint keys generate` writes.
const (
	AccessKeyFile = "access.pem"
	BundleFile    = "trust.json"
)

// IdentityFile is the file holding a service's private key.
func IdentityFile(service string) string { return service + ".pem" }

// GenerateKeyring makes a fresh key for access tokens and for each service.
func GenerateKeyring(services []string) (*Keyring, error) {
	kr := &Keyring{Identities: map[string]PrivateKey{}, Bundle: Bundle{Services: map[string]JWKSet{}}}
	var err error
	if kr.Access, err = GenerateKey(); err != nil {
		return nil, err
	}
	kr.Bundle.Access = NewJWKSet([]PublicKey{kr.Access.Public()})
	for _, s := range services {
		k, err := GenerateKey()
		if err != nil {
			return nil, err
		}
		kr.Identities[s] = k
		kr.Bundle.Services[s] = NewJWKSet([]PublicKey{k.Public()})
	}
	return kr, nil
}

// WriteKeyring writes kr into dir: one PEM file per private key (mode 0600)
// and the public bundle. It refuses to overwrite an existing file, so keys in
// use are never replaced by accident.
func WriteKeyring(dir string, kr *Keyring) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create keys dir: %w", err)
	}
	files := map[string][]byte{}
	var err error
	if files[AccessKeyFile], err = encodePEM(kr.Access); err != nil {
		return err
	}
	for name, k := range kr.Identities {
		if files[IdentityFile(name)], err = encodePEM(k); err != nil {
			return err
		}
	}
	bundle, err := json.MarshalIndent(kr.Bundle, "", "  ")
	if err != nil {
		return fmt.Errorf("encode trust bundle: %w", err)
	}
	files[BundleFile] = append(bundle, '\n')
	for name := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite keys", filepath.Join(dir, name))
		}
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// LoadKeyring reads the bundle from dir and the private keys of the given
// services; the access key is read only when withAccess is set (the gateway).
func LoadKeyring(dir string, services []string, withAccess bool) (*Keyring, error) {
	data, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, fmt.Errorf("read trust bundle: %w", err)
	}
	kr := &Keyring{Identities: map[string]PrivateKey{}}
	if err := json.Unmarshal(data, &kr.Bundle); err != nil {
		return nil, fmt.Errorf("parse %s: %w", BundleFile, err)
	}
	if withAccess {
		if kr.Access, err = readPEM(filepath.Join(dir, AccessKeyFile)); err != nil {
			return nil, err
		}
	}
	for _, s := range services {
		k, err := readPEM(filepath.Join(dir, IdentityFile(s)))
		if err != nil {
			return nil, err
		}
		kr.Identities[s] = k
	}
	return kr, nil
}

func encodePEM(k PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func readPEM(path string) (PrivateKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return PrivateKey{}, fmt.Errorf("private key %s not found (make keys with `blueprint keys generate`)", path)
	}
	if err != nil {
		return PrivateKey{}, fmt.Errorf("read private key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return PrivateKey{}, fmt.Errorf("%s: not a PEM PRIVATE KEY", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return PrivateKey{}, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return newPrivateKey(priv), nil
}

package e2e

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry/telemetrytest"
)

// jwtLike matches a compact JWS: base64url JSON header ("eyJ" is `{"`),
// payload and signature.
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`)

// TestTelemetryHoldsNoSecrets runs the whole flow — register, log in, read
// the profile, order, get notified through a signed webhook, a failed login,
// forged and misplaced tokens — with every log level on and every signal
// exported, then searches every log line on stdout and every log record and
// span exported over OTLP for the secrets that flowed through the system:
// passwords, access tokens, internal tokens, private keys and the webhook
// secret, and for anything shaped like a JWT. The original wrote bearer
// tokens to its logs in full.
func TestTelemetryHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hooks.Close)
	keysDir, kr := keysOnDisk(t)
	col := telemetrytest.NewCollector(t)
	sys := startInProcess(t, t.TempDir(), map[string]string{
		"BLUEPRINT_KEYS_DIR":          keysDir,
		"NOTIFY_WEBHOOK_URL":          hooks.URL + "/hooks",
		"NOTIFY_WEBHOOK_SECRET":       webhookSecret,
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL,
		"LOG_LEVEL":                   "debug",
	})

	const password, wrongPassword = "correct horse battery staple", "incorrect pony battery staple"
	c := newClient(t, sys.url("gateway"))
	email := uniqueEmail("Secrets")
	u := c.signUp(email, password)
	accessToken := c.token
	c.do("GET", "/users/me", nil).expect(t, http.StatusOK)
	var o order
	c.do("POST", "/orders", map[string]any{"sku": "SECRET-1", "qty": 1}).expect(t, http.StatusCreated).json(t, &o)
	if n := c.notificationsFor(o.ID, 30*time.Second); len(n) != 1 || n[0].Channel != "webhook" {
		t.Fatalf("notifications of order %s = %+v, want one on the webhook channel", o.ID, n)
	}

	anon := newClient(t, sys.url("gateway"))
	anon.do("POST", "/auth/login", map[string]any{"email": email, "password": wrongPassword}).expect(t, http.StatusUnauthorized)
	anon.do("POST", "/auth/login", map[string]any{"email": uniqueEmail("nobody"), "password": wrongPassword}).expect(t, http.StatusUnauthorized)

	// A token signed by a key that is not the gateway's, under its key id.
	impostor, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	impostor.ID = kr.Access.ID
	forged := forge(t, impostor, "at+jwt", accessClaims(u.ID, time.Now()))
	// A real internal token: refused at the gateway, accepted by users.
	internalToken, err := auth.NewMinter("gateway", kr.Identities["gateway"], time.Now).Token("users", u.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{forged, internalToken, accessToken + "x"} {
		anon.do("GET", "/users/me", nil, "Authorization", "Bearer "+tok).expect(t, http.StatusUnauthorized)
	}
	direct := newClient(t, sys.url("users"))
	direct.token = internalToken
	direct.do("GET", "/users/"+u.ID, nil).expect(t, http.StatusOK)
	direct.token = accessToken // a public token is never accepted internally
	direct.do("GET", "/users/"+u.ID, nil).expect(t, http.StatusUnauthorized)

	sys.stop(t) // flushes every service's telemetry to the collector

	secrets := map[string]string{
		"password":                     password,
		"wrong password":               wrongPassword,
		"access token":                 accessToken,
		"forged token":                 forged,
		"internal token":               internalToken,
		"webhook secret":               webhookSecret,
		"webhook key":                  strings.TrimPrefix(webhookSecret, "whsec_"),
		"argon2id password hash":       "$argon2id$",
		"JWT signature of the access":  accessToken[strings.LastIndex(accessToken, ".")+1:],
		"JWT signature of the service": internalToken[strings.LastIndex(internalToken, ".")+1:],
	}
	keyFiles, err := filepath.Glob(filepath.Join(keysDir, "*.pem"))
	if err != nil || len(keyFiles) == 0 {
		t.Fatalf("private key files in %s: %v, %v", keysDir, keyFiles, err)
	}
	for _, f := range keyFiles {
		pem, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(pem), "\n") {
			if line != "" && !strings.HasPrefix(line, "-----") {
				secrets[fmt.Sprintf("%s line %d", filepath.Base(f), i)] = line
			}
		}
	}
	for name, k := range map[string]auth.PrivateKey{"access": kr.Access, "gateway": kr.Identities["gateway"], "users": kr.Identities["users"]} {
		seed := k.Key.Seed()
		secrets[name+" key seed, base64"] = base64.StdEncoding.EncodeToString(seed)
		secrets[name+" key seed, base64url"] = base64.RawURLEncoding.EncodeToString(seed)
		secrets[name+" key seed, hex"] = hex.EncodeToString(seed)
	}

	// Every line and record, as text.
	var records []string
	for line := range strings.Lines(sys.logs.text()) {
		records = append(records, "stdout: "+line)
	}
	for _, r := range col.Logs() {
		text := r.Service + " log: " + telemetrytest.ValueString(r.GetBody())
		for _, kv := range r.GetAttributes() {
			text += " " + kv.GetKey() + "=" + telemetrytest.ValueString(kv.GetValue())
		}
		records = append(records, text)
	}
	for _, s := range col.Spans() {
		text := s.Service + " span: " + s.GetName()
		for _, kv := range s.GetAttributes() {
			text += " " + kv.GetKey() + "=" + telemetrytest.ValueString(kv.GetValue())
		}
		for _, e := range s.GetEvents() {
			text += " event " + e.GetName()
			for _, kv := range e.GetAttributes() {
				text += " " + kv.GetKey() + "=" + telemetrytest.ValueString(kv.GetValue())
			}
		}
		records = append(records, text)
	}
	stdout, otlpLogs, spans := 0, len(col.Logs()), len(col.Spans())
	for _, r := range records {
		if strings.HasPrefix(r, "stdout: ") {
			stdout++
		}
	}
	if stdout < 20 || otlpLogs < 20 || spans < 20 {
		t.Fatalf("searched %d stdout lines, %d OTLP log records, %d spans; want the whole flow's", stdout, otlpLogs, spans)
	}
	t.Logf("searched %d stdout lines, %d OTLP log records and %d spans for %d secrets and JWT-shaped strings",
		stdout, otlpLogs, spans, len(secrets))

	for _, r := range records {
		for name, secret := range secrets {
			if strings.Contains(r, secret) {
				t.Errorf("the %s appears in: %s", name, r)
			}
		}
		if m := jwtLike.FindString(r); m != "" {
			t.Errorf("a JWT-shaped string %q appears in: %s", m, r)
		}
	}
}

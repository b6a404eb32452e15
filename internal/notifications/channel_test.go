package notifications

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMaskEmail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		email string
		want  string
	}{
		{"ordinary", "ada@example.com", "a***@example.com"},
		{"one-letter local part", "a@example.com", "a***@example.com"},
		{"subdomain kept", "bob.smith+tag@mail.example.co.uk", "b***@mail.example.co.uk"},
		{"empty", "", "***"},
		{"no at sign", "ada.example.com", "***"},
		{"empty local part", "@example.com", "***"},
		// The users service accepts non-ASCII local parts (net/mail, RFC
		// 6532); the mask must keep the first character whole, not its
		// first byte, or the log line carries invalid UTF-8.
		{"non-ASCII first letter", "élodie@example.com", "é***@example.com"},
		{"non-ASCII local part", "Ωmega@example.com", "Ω***@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := maskEmail(tt.email)
			if got != tt.want {
				t.Errorf("maskEmail(%q) = %q, want %q", tt.email, got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("maskEmail(%q) = %q, not valid UTF-8", tt.email, got)
			}
		})
	}
}

func TestLogChannelLogsMaskedAddress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	ch := LogChannel{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	if got := ch.Name(); got != "log" {
		t.Errorf("Name() = %q, want %q", got, "log")
	}
	m := Message{EventID: "evt-1", UserID: "user-1", OrderID: "ord-1", To: "ada@example.com", Subject: "Your order ord-1 was received"}
	if err := ch.Deliver(t.Context(), m); err != nil {
		t.Fatalf("Deliver = %v, want nil", err)
	}
	if strings.Contains(buf.String(), "ada@example.com") {
		t.Errorf("log line %s contains the full address", buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	for key, want := range map[string]string{
		"msg": "notification delivered", "channel": "log", "event_id": "evt-1", "order_id": "ord-1",
		"user_id": "user-1", "to": "a***@example.com", "subject": m.Subject,
	} {
		if got := line[key]; got != want {
			t.Errorf("log %s = %v, want %q", key, got, want)
		}
	}
}

package users

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
)

// emailOfLen builds a valid address of exactly n bytes (n ≥ 20): a 64-byte
// local part and a domain of labels of at most 63 bytes ending in ".com".
func emailOfLen(t *testing.T, n int) string {
	t.Helper()
	local := strings.Repeat("a", 64)
	rest := n - len(local) - len("@") - len("com")
	var labels []string
	for rest > 0 {
		// Each label costs its length plus a dot.
		size := min(63, rest-1)
		if size < 1 {
			t.Fatalf("emailOfLen(%d): cannot fill %d bytes", n, rest)
		}
		labels = append(labels, strings.Repeat("b", size))
		rest -= size + 1
	}
	email := local + "@" + strings.Join(append(labels, "com"), ".")
	if len(email) != n {
		t.Fatalf("emailOfLen(%d) built %d bytes", n, len(email))
	}
	return email
}

func TestRegistrationValid(t *testing.T) {
	t.Parallel()
	valid := Registration{Email: "bob@example.com", Password: "correct horse", Name: "Bob"}
	edit := func(f func(*Registration)) Registration { r := valid; f(&r); return r }

	tests := []struct {
		name string
		reg  Registration
		want []string // fields reported, sorted
	}{
		{"valid", valid, nil},
		{"everything missing", Registration{}, []string{"email", "name", "password"}},

		{"email 254 bytes", edit(func(r *Registration) { r.Email = emailOfLen(t, 254) }), nil},
		{"email 255 bytes", edit(func(r *Registration) { r.Email = emailOfLen(t, 255) }), []string{"email"}},
		{"email shortest", edit(func(r *Registration) { r.Email = "a@b.co" }), nil},
		{"email mixed case", edit(func(r *Registration) { r.Email = "Bob.Smith@Example.COM" }), nil},
		{"email plus tag", edit(func(r *Registration) { r.Email = "bob+orders@example.com" }), nil},
		{"email empty", edit(func(r *Registration) { r.Email = "" }), []string{"email"}},
		{"email with display name", edit(func(r *Registration) { r.Email = "Bob <bob@example.com>" }), []string{"email"}},
		{"email in angle brackets", edit(func(r *Registration) { r.Email = "<bob@example.com>" }), []string{"email"}},
		{"email with comment", edit(func(r *Registration) { r.Email = "bob@example.com (Bob)" }), []string{"email"}},
		{"email no at", edit(func(r *Registration) { r.Email = "bob" }), []string{"email"}},
		{"email no domain", edit(func(r *Registration) { r.Email = "bob@" }), []string{"email"}},
		{"email no local part", edit(func(r *Registration) { r.Email = "@example.com" }), []string{"email"}},
		{"email undotted domain", edit(func(r *Registration) { r.Email = "bob@localhost" }), []string{"email"}},
		{"email domain starts with dot", edit(func(r *Registration) { r.Email = "bob@.com" }), []string{"email"}},
		{"email domain ends with dot", edit(func(r *Registration) { r.Email = "bob@example.com." }), []string{"email"}},
		{"email domain double dot", edit(func(r *Registration) { r.Email = "bob@example..com" }), []string{"email"}},
		{"email two ats", edit(func(r *Registration) { r.Email = "bob@@example.com" }), []string{"email"}},
		{"email leading space", edit(func(r *Registration) { r.Email = " bob@example.com" }), []string{"email"}},
		{"email trailing space", edit(func(r *Registration) { r.Email = "bob@example.com " }), []string{"email"}},
		{"email trailing newline", edit(func(r *Registration) { r.Email = "bob@example.com\n" }), []string{"email"}},
		{"email two addresses", edit(func(r *Registration) { r.Email = "bob@example.com, eve@example.com" }), []string{"email"}},

		{"password 7 runes", edit(func(r *Registration) { r.Password = "1234567" }), []string{"password"}},
		{"password 8 runes", edit(func(r *Registration) { r.Password = "12345678" }), nil},
		// 7 two-byte runes are 14 bytes: a byte count would wrongly accept it.
		{"password 7 multi-byte runes", edit(func(r *Registration) { r.Password = strings.Repeat("é", 7) }), []string{"password"}},
		{"password 8 multi-byte runes", edit(func(r *Registration) { r.Password = strings.Repeat("é", 8) }), nil},
		{"password 128 runes", edit(func(r *Registration) { r.Password = strings.Repeat("p", 128) }), nil},
		{"password 129 runes", edit(func(r *Registration) { r.Password = strings.Repeat("p", 129) }), []string{"password"}},
		// 128 three-byte runes are 384 bytes: a byte count would wrongly reject it.
		{"password 128 multi-byte runes", edit(func(r *Registration) { r.Password = strings.Repeat("€", 128) }), nil},
		{"password 129 multi-byte runes", edit(func(r *Registration) { r.Password = strings.Repeat("€", 129) }), []string{"password"}},
		{"password 8 emoji", edit(func(r *Registration) { r.Password = strings.Repeat("🔑", 8) }), nil},
		{"password empty", edit(func(r *Registration) { r.Password = "" }), []string{"password"}},

		{"name empty", edit(func(r *Registration) { r.Name = "" }), []string{"name"}},
		{"name 1 rune", edit(func(r *Registration) { r.Name = "B" }), nil},
		{"name 1 multi-byte rune", edit(func(r *Registration) { r.Name = "李" }), nil},
		{"name 100 runes", edit(func(r *Registration) { r.Name = strings.Repeat("ü", 100) }), nil},
		{"name 101 runes", edit(func(r *Registration) { r.Name = strings.Repeat("ü", 101) }), []string{"name"}},
		{"name 101 ascii", edit(func(r *Registration) { r.Name = strings.Repeat("n", 101) }), []string{"name"}},
		{"name blank", edit(func(r *Registration) { r.Name = "   " }), []string{"name"}},
		{"name tabs and newlines", edit(func(r *Registration) { r.Name = "\t\n" }), []string{"name"}},
		{"name with inner spaces", edit(func(r *Registration) { r.Name = " Bob Smith " }), nil},
		{"name with a terminal escape", edit(func(r *Registration) { r.Name = "Bob\x1b[2J" }), []string{"name"}},
		{"name with a newline inside", edit(func(r *Registration) { r.Name = "Bob\nAdmin" }), []string{"name"}},
		{"name with a right-to-left override", edit(func(r *Registration) { r.Name = "Bob\u202egnp.exe" }), []string{"name"}},
		{"name with a bidi isolate", edit(func(r *Registration) { r.Name = "Bob\u2067x" }), []string{"name"}},
		{"name in a right-to-left script", edit(func(r *Registration) { r.Name = "שלום" }), nil},
		{"name with an emoji sequence", edit(func(r *Registration) { r.Name = "Ada 👩\u200d💻" }), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			problems := tt.reg.Valid(context.Background())
			if got := slices.Sorted(maps.Keys(problems)); !slices.Equal(got, tt.want) {
				t.Errorf("Valid(%+v) fields = %v (%v), want %v", tt.reg, got, problems, tt.want)
			}
			for field, msg := range problems {
				if msg == "" {
					t.Errorf("Valid(%+v)[%q] = \"\", want a message", tt.reg, field)
				}
			}
		})
	}
}

func TestCredentialsValid(t *testing.T) {
	t.Parallel()
	valid := Credentials{Email: "bob@example.com", Password: "correct horse"}
	edit := func(f func(*Credentials)) Credentials { c := valid; f(&c); return c }

	tests := []struct {
		name  string
		creds Credentials
		want  []string
	}{
		{"valid", valid, nil},
		{"everything missing", Credentials{}, []string{"email", "password"}},
		{"email 254 bytes", edit(func(c *Credentials) { c.Email = emailOfLen(t, 254) }), nil},
		{"email 255 bytes", edit(func(c *Credentials) { c.Email = emailOfLen(t, 255) }), []string{"email"}},
		{"email empty", edit(func(c *Credentials) { c.Email = "" }), []string{"email"}},
		// Login checks the shape only: a wrong address is a wrong credential (401), not a 422.
		{"email not an address", edit(func(c *Credentials) { c.Email = "bob" }), nil},
		{"password empty", edit(func(c *Credentials) { c.Password = "" }), []string{"password"}},
		// Short passwords are not rejected up front: the answer is the same 401 as any wrong one.
		{"password 1 rune", edit(func(c *Credentials) { c.Password = "x" }), nil},
		{"password 128 runes", edit(func(c *Credentials) { c.Password = strings.Repeat("p", 128) }), nil},
		{"password 128 multi-byte runes", edit(func(c *Credentials) { c.Password = strings.Repeat("€", 128) }), nil},
		{"password 129 runes", edit(func(c *Credentials) { c.Password = strings.Repeat("p", 129) }), []string{"password"}},
		{"password 129 multi-byte runes", edit(func(c *Credentials) { c.Password = strings.Repeat("€", 129) }), []string{"password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			problems := tt.creds.Valid(context.Background())
			if got := slices.Sorted(maps.Keys(problems)); !slices.Equal(got, tt.want) {
				t.Errorf("Valid(%+v) fields = %v (%v), want %v", tt.creds, got, problems, tt.want)
			}
		})
	}
}

package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRole(t *testing.T) {
	tests := []struct {
		comm string
		args []string
		want string
	}{
		{"blueprint", []string{"./blueprint"}, "blueprint"},
		{"blueprint", []string{"./blueprint", "run", "--target=orders", "--data-dir", "d"}, "blueprint orders"},
		{"blueprint", []string{"blueprint", "-target", "users"}, "blueprint users"},
		{"blueprint", []string{"/tmp/blueprint", "nats", "--name", "nats-1"}, "blueprint nats"},
		{"blueprint", []string{"blueprint", "--data-dir", "nats"}, "blueprint"},
		{"postgres", []string{"postgres: checkpointer"}, "postgres"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(tt.args, "\x00")+"\x00"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := role(dir, tt.comm); got != tt.want {
			t.Errorf("role(%q, %q) = %q, want %q", tt.comm, tt.args, got, tt.want)
		}
	}
}

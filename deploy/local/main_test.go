package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runUntilBuild runs the command with a context already cancelled, so it
// stops at the build, before any process starts, and returns its output.
func runUntilBuild(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	if err := run(ctx, args, &out); err == nil {
		t.Fatalf("run with a cancelled context = nil, want the build stopped")
	}
	return out.String()
}

// TestDirIsOutsideTheWorkingTree: the binary, the private keys and the
// data go to the user's cache directory unless --dir says otherwise, not
// into the working tree, where `git add` could pick the keys up. The
// directory is named first and is the user's alone.
func TestDirIsOutsideTheWorkingTree(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(cache, "blueprint", "local")
	out := runUntilBuild(t)
	if first, _, _ := strings.Cut(out, "\n"); !strings.Contains(first, want) {
		t.Errorf("first line = %q, want it to name %s", first, want)
	}
	if info, err := os.Stat(want); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("stat %s = %v, %v, want a directory of mode 700", want, info, err)
	}
	if _, err := os.Stat(".blueprint-local"); !os.IsNotExist(err) {
		t.Errorf("stat .blueprint-local = %v, want nothing made in the working directory", err)
	}

	dir := filepath.Join(t.TempDir(), "elsewhere")
	if first, _, _ := strings.Cut(runUntilBuild(t, "--dir", dir), "\n"); !strings.Contains(first, dir) {
		t.Errorf("first line with --dir %s = %q, want it to name the directory", dir, first)
	}
}

package boot

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// ImageEnv is the environment the image gives every container before its
// deployment's own settings: the ENV lines of its Dockerfile
// (deploy/docker/Dockerfile), as NAME=value.
func ImageEnv(t testing.TB, dockerfile string) []string {
	t.Helper()
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var env []string
	var instr strings.Builder // one instruction, its continued lines joined
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if instr.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			instr.WriteString(cont + " ")
			continue
		}
		instr.WriteString(line)
		if rest, ok := strings.CutPrefix(instr.String(), "ENV "); ok {
			for _, kv := range strings.Fields(rest) {
				if !strings.Contains(kv, "=") {
					t.Fatalf("%s: ENV %q: only NAME=value pairs are understood", dockerfile, rest)
				}
				env = append(env, kv)
			}
		}
		instr.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(env) == 0 {
		t.Fatalf("%s sets no ENV", dockerfile)
	}
	return env
}

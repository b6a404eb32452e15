package docker

import (
	"os"
	"strings"
	"testing"
)

// TestBothDockerfilesMakeOneImage: the root Dockerfile (built from source
// where golang: can be pulled) and deploy/docker/Dockerfile (from a binary
// built here) must end with the same final stage, so both make one image.
func TestBothDockerfilesMakeOneImage(t *testing.T) {
	final := func(path string) string {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, stage, ok := strings.Cut(string(data), "\nFROM scratch\n")
		if !ok {
			t.Fatalf("%s has no final FROM scratch stage", path)
		}
		return stage
	}
	if root, here := final("../../Dockerfile"), final("Dockerfile"); root != here {
		t.Errorf("the final stages differ:\n--- Dockerfile\n%s\n--- deploy/docker/Dockerfile\n%s", root, here)
	}
}

// TestImageRunsAsItsUser: the image's user is numeric, so Kubernetes'
// runAsNonRoot can check it, and the one the deployments give the keys to.
func TestImageRunsAsItsUser(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "\nUSER 65532:65532\n") {
		t.Error("Dockerfile does not run as USER 65532:65532")
	}
}

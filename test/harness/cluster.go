package harness

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
)

// StartCluster runs a local cluster for the test and stops it, dropping its
// PostgreSQL databases, when the test ends. A failed test shows the last
// lines of every process's log.
func StartCluster(t testing.TB, cfg localcluster.Config) *localcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, cfg)
	if err != nil {
		LogTails(t, cfg.Dir)
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		for _, p := range c.Processes {
			if p.Running() {
				_ = p.Signal(syscall.SIGCONT) // a paused process cannot stop
			}
		}
		if t.Failed() {
			LogTails(t, cfg.Dir)
		}
		if err := c.Stop(); err != nil {
			t.Logf("stop: %v", err)
		}
		if cfg.PostgresURL != "" {
			if err := c.DropDatabases(context.Background()); err != nil {
				t.Logf("drop databases: %v", err)
			}
		}
	})
	return c
}

// Gateways returns the public URLs of a cluster: its gateways, or the
// all-in-one process.
func Gateways(c *localcluster.Cluster) []string {
	var urls []string
	for _, p := range c.Processes {
		if strings.HasPrefix(p.Name, "gateway-") || p.Name == "blueprint" {
			urls = append(urls, p.URL)
		}
	}
	return urls
}

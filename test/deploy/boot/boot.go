// Package boot starts Blueprint on this machine exactly as a deployment
// describes it — each process's arguments, environment and mounted files —
// changing only addresses and paths, and runs the public API flow through
// it. A deployment format (the Helm chart, a Compose file) only has to turn
// its description into Specs: whether the configuration it gives the
// processes boots the system is then one test.
package boot

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/localcluster"
	"github.com/ds-blueprint/blueprint/test/harness"
)

// Spec is one process as the deployment describes it, with the addresses
// and paths it writes.
type Spec struct {
	// Name names the process in errors and its log file (<Dir>/<Name>.log).
	Name string
	// Args follow the binary, e.g. run --target=users.
	Args []string
	// Env is the whole environment of the process, NAME=value; later
	// entries win.
	Env []string
	// Mounts are the directories the process is given, by the path it sees
	// them at: the files each holds (a Secret's items), or none for an
	// empty writable directory.
	Mounts map[string]map[string][]byte
	// Listen maps each address the process listens on, as its settings
	// write it (0.0.0.0:3002), to the addresses other processes reach it by
	// (blueprint-users:3002). Each becomes one free loopback port.
	Listen map[string][]string
	// Ready is the URL that answers 200 once the process is ready, written
	// with one of its Listen addresses (http://0.0.0.0:9102/readyz).
	Ready string
}

// Config says what to start.
type Config struct {
	// Binary is the blueprint binary every process runs.
	Binary string
	// Dir holds each process's mounts (<Dir>/<Name>/<path>) and logs.
	Dir   string
	Specs []Spec
	// Outside maps the host:port of a server that is no Spec, as the specs
	// write it, to where it is here (a collector standing in for theirs).
	Outside map[string]string
}

// System is the running processes.
type System struct {
	procs []*process
	// addrs maps every address the specs write to the local one.
	addrs map[string]string
}

type process struct {
	spec  Spec
	local map[string]string // the spec's own listen addresses → loopback
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
}

// Start starts every process, then waits until each is ready. The
// processes are stopped when the test ends, if Stop has not stopped them.
func Start(t testing.TB, cfg Config) *System {
	t.Helper()
	s := &System{addrs: map[string]string{}}
	maps.Copy(s.addrs, cfg.Outside)
	for _, spec := range cfg.Specs {
		p := &process{spec: spec, local: map[string]string{}, done: make(chan struct{})}
		for addr, aliases := range spec.Listen {
			local := localcluster.FreeAddr()
			if local == "" {
				t.Fatal("no free loopback port")
			}
			p.local[addr] = local
			for _, a := range aliases {
				s.addrs[a] = local
			}
		}
		s.procs = append(s.procs, p)
	}
	t.Cleanup(func() {
		if s.running() {
			if err := s.stop(); err != nil {
				t.Log(err)
			}
		}
		if t.Failed() {
			harness.LogTails(t, cfg.Dir)
		}
	})
	for _, p := range s.procs {
		if err := s.start(cfg, p); err != nil {
			t.Fatalf("%s: %v", p.spec.Name, err)
		}
	}
	for _, p := range s.procs {
		if err := p.waitReady(s.rewrite(p, p.spec.Ready)); err != nil {
			t.Fatalf("%s: %v", p.spec.Name, err)
		}
	}
	return s
}

// URL is where a process's listen address, as its settings write it
// (0.0.0.0:3001), is reached here, as an http:// base URL.
func (s *System) URL(t testing.TB, name, addr string) string {
	t.Helper()
	for _, p := range s.procs {
		if local, ok := p.local[addr]; ok && p.spec.Name == name {
			return "http://" + local
		}
	}
	t.Fatalf("%s does not listen on %s", name, addr)
	return ""
}

// Stop sends SIGTERM to each process in the reverse of the start order,
// as an orchestrator stops the callers before what they call, and fails
// the test for any that does not exit with status 0.
func (s *System) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Error(err)
	}
}

func (s *System) stop() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		if p.cmd == nil {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s: still running 30 s after SIGTERM; killed", p.spec.Name))
			continue
		}
		if p.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w after SIGTERM", p.spec.Name, p.err))
		}
	}
	return errors.Join(errs...)
}

func (s *System) running() bool {
	for _, p := range s.procs {
		if p.cmd != nil && !p.exited() {
			return true
		}
	}
	return false
}

// start writes the process's mounts and runs it with its environment and
// nothing else, its output in <Dir>/<name>.log.
func (s *System) start(cfg Config, p *process) error {
	root := filepath.Join(cfg.Dir, p.spec.Name)
	for dir, files := range p.spec.Mounts {
		local := filepath.Join(root, dir)
		if err := os.MkdirAll(local, 0o700); err != nil {
			return err
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(local, name), content, 0o600); err != nil {
				return err
			}
		}
	}
	args := make([]string, len(p.spec.Args))
	for i, a := range p.spec.Args {
		args[i] = s.localize(p, root, a)
	}
	env := make([]string, len(p.spec.Env))
	for i, kv := range p.spec.Env {
		env[i] = s.localize(p, root, kv)
	}
	if err := checkLocal(append(args, env...)); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(cfg.Dir, p.spec.Name+".log"))
	if err != nil {
		return err
	}
	p.cmd = exec.Command(cfg.Binary, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Pdeathsig: if the test binary dies, its processes die with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return nil
}

// waitReady polls the ready URL until it answers 200.
func (p *process) waitReady(url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after a minute: %v", url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// profile is what the bare server answers to everything: about the size of
// a GET /users/me answer.
const profile = `{"id":"01a20f04-2c69-786c-96a9-161efd3e12e3","email":"bench@example.com","name":"Bench User","createdAt":"2026-12-07T09:00:00.000000Z"}`

// ServeBaseline runs the two bare targets of a comparison until ctx ends or
// stdin closes: a Go HTTP server that answers every request with a small
// JSON body, and an httputil.ReverseProxy in front of it with a pooled
// keep-alive transport — the least a gateway hop can cost. It prints
// "hello URL" and "proxy URL" first.
func ServeBaseline(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	hello, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	helloURL := &url.URL{Scheme: "http", Host: hello.Addr().String()}
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(helloURL) },
		Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute},
	}
	servers := []*http.Server{
		{Handler: http.HandlerFunc(answer), ReadHeaderTimeout: 5 * time.Second},
		{Handler: proxy, ReadHeaderTimeout: 5 * time.Second},
	}
	go func() { _ = servers[0].Serve(hello) }() // ends with Close below
	go func() { _ = servers[1].Serve(front) }()
	fmt.Fprintf(stdout, "hello %s\nproxy http://%s\n", helloURL, front.Addr())

	closed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdin); close(closed) }() // the parent went away
	select {
	case <-ctx.Done():
	case <-closed:
	}
	for _, s := range servers {
		_ = s.Close()
	}
	return nil
}

func answer(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodPost {
		w.WriteHeader(http.StatusCreated)
	}
	_, _ = io.WriteString(w, profile)
}

// measureBaseline starts the baseline command and sends the scenario's load
// to its bare server and to its proxy hop, counting the child's CPU.
func (o *Options) measureBaseline(ctx context.Context, accounts []account) ([]Result, error) {
	if len(o.Baseline) == 0 {
		return nil, fmt.Errorf("no baseline command to compare with")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.Baseline[0], o.Baseline[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the baseline: %w", err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()

	urls := map[string]string{}
	lines := bufio.NewScanner(out)
	for len(urls) < 2 && lines.Scan() {
		name, u, _ := strings.Cut(lines.Text(), " ")
		urls[name] = u
	}
	if urls["hello"] == "" || urls["proxy"] == "" {
		return nil, fmt.Errorf("the baseline did not say where it listens")
	}
	ignore := func(*vegeta.Result, bool) {}
	var runs []Result
	for _, target := range []struct{ name, url string }{
		{"bare Go server", urls["hello"]},
		{"bare proxy hop", urls["proxy"]},
	} {
		l := newLoad(target.url, o.Scenario, accounts)
		run, err := o.measure(ctx, target.name, l.targeter(), ignore, &cpuMeter{pids: []int{cmd.Process.Pid}}, func() {})
		if err != nil {
			return nil, err
		}
		runs = append(runs, run)
	}
	return runs, nil
}

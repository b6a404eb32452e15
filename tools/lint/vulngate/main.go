// Command vulngate reads govulncheck's JSON output on stdin and fails when
// the code calls a vulnerable function that is not in the accepted list.
//
// govulncheck itself fails on every finding, with no way to accept one. A
// finding that can only be fixed by a newer Go release than the module
// builds with must not turn every run red, yet must stay visible: each is
// listed, with the reason, in the file named by the one argument
// ("GO-2026-1234 reason" per line, # for comments). An accepted entry no
// longer found is reported too, so the list shrinks when the fix lands.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// finding is the part of govulncheck's "finding" message used here. The
// first frame of the trace is the vulnerable symbol; its function is empty
// when the vulnerable package or module is only imported or required.
type finding struct {
	OSV          string `json:"osv"`
	FixedVersion string `json:"fixed_version"`
	Trace        []struct {
		Module   string `json:"module"`
		Version  string `json:"version"`
		Package  string `json:"package"`
		Function string `json:"function"`
	} `json:"trace"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: govulncheck -format json ./... | vulngate accepted.txt")
		os.Exit(2)
	}
	accepted, err := readAccepted(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulngate:", err)
		os.Exit(2)
	}
	called, err := calledFindings(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulngate:", err)
		os.Exit(2)
	}
	failed, acceptedN := false, 0
	for _, id := range slices.Sorted(maps.Keys(called)) {
		state := "NOT ACCEPTED"
		if reason, ok := accepted[id]; ok {
			state = "accepted: " + reason
			acceptedN++
		} else {
			failed = true
		}
		fmt.Printf("%s  %s  (%s)\n", id, called[id], state)
	}
	for id := range accepted {
		if _, ok := called[id]; !ok {
			fmt.Printf("%s  no longer found: remove it from %s\n", id, os.Args[1])
			failed = true
		}
	}
	fmt.Printf("%d vulnerabilities reached from the code, %d accepted\n", len(called), acceptedN)
	if failed {
		os.Exit(1)
	}
}

// calledFindings returns, per vulnerability the code calls, where it is and
// what fixes it.
func calledFindings(r io.Reader) (map[string]string, error) {
	called := map[string]string{}
	scanned := false // govulncheck's config message came: it ran
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var msg struct {
			Config  *json.RawMessage `json:"config"`
			Finding *finding         `json:"finding"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			if !scanned {
				return nil, errors.New("no govulncheck output")
			}
			return called, nil
		} else if err != nil {
			return nil, fmt.Errorf("read govulncheck output: %w", err)
		}
		scanned = scanned || msg.Config != nil
		f := msg.Finding
		if f == nil || len(f.Trace) == 0 || f.Trace[0].Function == "" {
			continue
		}
		top := f.Trace[0]
		called[f.OSV] = fmt.Sprintf("%s@%s %s, fixed in %s", top.Module, top.Version, top.Package, f.FixedVersion)
	}
}

func readAccepted(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	accepted := map[string]string{}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, reason, _ := strings.Cut(line, " ")
		accepted[id] = strings.TrimSpace(reason)
	}
	return accepted, nil
}

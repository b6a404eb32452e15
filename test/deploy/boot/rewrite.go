package boot

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
)

// localize rewrites one argument or NAME=value setting for this machine:
// every address the deployment writes becomes the local one standing in for
// it, and a path inside one of the process's mounts moves under root.
// Nothing else changes.
func (s *System) localize(p *process, root, arg string) string {
	// A setting or a --flag=value: only the value holds addresses and paths.
	if name, value, ok := strings.Cut(arg, "="); ok && !strings.Contains(name, "/") {
		return name + "=" + s.localizeValue(p, root, value)
	}
	return s.localizeValue(p, root, arg)
}

func (s *System) localizeValue(p *process, root, v string) string {
	v = s.rewrite(p, v)
	for dir := range p.spec.Mounts {
		if v == dir || strings.HasPrefix(v, strings.TrimSuffix(dir, "/")+"/") {
			return filepath.Join(root, v)
		}
	}
	return v
}

// rewrite replaces the addresses in v: the process's own listen addresses
// first, then the other processes' aliases and the servers outside.
func (s *System) rewrite(p *process, v string) string {
	return replaceAddrs(replaceAddrs(v, p.local), s.addrs)
}

// replaceAddrs replaces every whole host:port of m in v (longest first), so
// that nats:4222 is replaced in nats://nats:4222 but not in mynats:42220.
func replaceAddrs(v string, m map[string]string) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, from := range keys {
		var b strings.Builder
		rest := v
		for {
			i := strings.Index(rest, from)
			if i < 0 {
				b.WriteString(rest)
				break
			}
			end := i + len(from)
			whole := (i == 0 || !isHostByte(rest[i-1])) && (end == len(rest) || !isDigit(rest[end]))
			b.WriteString(rest[:i])
			if whole {
				b.WriteString(m[from])
			} else {
				b.WriteString(from)
			}
			rest = rest[end:]
		}
		v = b.String()
	}
	return v
}

func isHostByte(c byte) bool {
	return c == '.' || c == '-' || isDigit(c) || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// checkLocal fails when an argument or setting still names a host other
// than loopback: an address of the deployment nothing here stands in for,
// which the process would try to reach.
func checkLocal(args []string) error {
	for _, arg := range args {
		value := arg
		if name, v, ok := strings.Cut(arg, "="); ok && !strings.Contains(name, "/") {
			value = v
		}
		for _, part := range strings.Split(value, ",") {
			host := ""
			if strings.Contains(part, "://") {
				if u, err := url.Parse(part); err == nil {
					host = u.Hostname()
				}
			} else if h, port, err := net.SplitHostPort(part); err == nil && port != "" && strings.Trim(port, "0123456789") == "" {
				host = h
			}
			if host != "" && host != "127.0.0.1" && host != "localhost" && host != "::1" {
				return fmt.Errorf("%q names %s, which nothing here stands in for", arg, host)
			}
		}
	}
	return nil
}

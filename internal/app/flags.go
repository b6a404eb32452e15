package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// UsageError is a problem with the command line or the environment. main
// exits with status 2 for it, after printing its one line.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// ExitCode is the process exit status for an error Run returned.
func ExitCode(err error) int {
	if _, ok := errors.AsType[*UsageError](err); ok {
		return 2
	}
	return 1
}

// Variable documents one setting: its flag, its environment variable and
// its default. The README's configuration table lists exactly these.
type Variable struct {
	Flag, Env, Default, Usage string
}

// flags registers settings that can come from a flag or an environment
// variable, flag first. A bad environment value is remembered and reported
// by parse, naming the variable, so the process fails with one clear line.
type flags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	vars   []Variable
	errs   []error
}

func newFlags(name string, getenv func(string) string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage is printed on request
	return &flags{fs: fs, getenv: getenv}
}

func (f *flags) register(name, env, def, usage string) string {
	f.vars = append(f.vars, Variable{Flag: name, Env: env, Default: def, Usage: usage})
	if env != "" {
		if v := f.getenv(env); v != "" {
			return v
		}
	}
	return def
}

func (f *flags) String(p *string, name, env, def, usage string) {
	f.fs.StringVar(p, name, f.register(name, env, def, usage), usage+envSuffix(env))
}

// Secret is String for a value help must not show: no default is printed,
// whatever the environment holds.
func (f *flags) Secret(p *string, name, env, usage string) {
	*p = f.register(name, env, "", usage)
	f.fs.Var((*secretValue)(p), name, usage+envSuffix(env))
}

type secretValue string

func (s *secretValue) Set(v string) error { *s = secretValue(v); return nil }
func (*secretValue) String() string       { return "" }

// URL is String for a setting holding a URL, which may carry a password:
// help shows the value with the password masked.
func (f *flags) URL(p *string, name, env, def, usage string) {
	f.String(p, name, env, def, usage)
	fl := f.fs.Lookup(name)
	fl.DefValue = redactURL(fl.DefValue)
}

// URLs is URL for a comma list of URLs.
func (f *flags) URLs(p *string, name, env, def, usage string) {
	f.String(p, name, env, def, usage)
	fl := f.fs.Lookup(name)
	fl.DefValue = redactURLList(fl.DefValue)
}

// redactURL is a URL setting as help, errors and logs show it, with its
// password masked. url.URL.Redacted can be trusted only with a URL whose
// one '@' ends its user info; in any other value holding an '@' (one that
// does not parse, lacks "//", or is a list where one URL is expected) a
// password could be anywhere before the last '@', so all of that but the
// scheme is masked.
func redactURL(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw // no user info, so no password
	}
	if u, err := url.Parse(raw); err == nil && u.Host != "" && u.User != nil && strings.Count(raw, "@") == 1 {
		return u.Redacted()
	}
	scheme := ""
	if before, _, ok := strings.Cut(raw[:at], "://"); ok {
		scheme = before + "://"
	}
	return scheme + "xxxxx" + raw[at:]
}

// redactURLList is redactURL for each URL of a comma list.
func redactURLList(list string) string {
	urls := splitList(list)
	for i, u := range urls {
		urls[i] = redactURL(u)
	}
	return strings.Join(urls, ",")
}

func (f *flags) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	raw := f.register(name, env, def.String(), usage)
	d, err := time.ParseDuration(raw)
	if err != nil || d < 0 {
		f.errs = append(f.errs, fmt.Errorf("%s=%q is not a duration such as 500ms or 10s", env, raw))
		d = def
	}
	f.fs.DurationVar(p, name, d, usage+envSuffix(env))
}

func (f *flags) Int(p *int, name, env string, def int, usage string) {
	raw := f.register(name, env, strconv.Itoa(def), usage)
	n, err := strconv.Atoi(raw)
	if err != nil || n < 0 {
		f.errs = append(f.errs, fmt.Errorf("%s=%q is not a whole number", env, raw))
		n = def
	}
	f.fs.IntVar(p, name, n, usage+envSuffix(env))
}

func (f *flags) Float(p *float64, name, env string, def float64, usage string) {
	raw := f.register(name, env, strconv.FormatFloat(def, 'f', -1, 64), usage)
	n, err := strconv.ParseFloat(raw, 64)
	if err != nil || n < 0 {
		f.errs = append(f.errs, fmt.Errorf("%s=%q is not a non-negative number", env, raw))
		n = def
	}
	f.fs.Float64Var(p, name, n, usage+envSuffix(env))
}

func (f *flags) Bool(p *bool, name, env string, def bool, usage string) {
	raw := f.register(name, env, strconv.FormatBool(def), usage)
	b, err := strconv.ParseBool(raw)
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s=%q is not true or false", env, raw))
		b = def
	}
	f.fs.BoolVar(p, name, b, usage+envSuffix(env))
}

func envSuffix(env string) string {
	if env == "" {
		return ""
	}
	return " (env " + env + ")"
}

// parse reads args. Environment errors come first: they are older than the
// command line and a flag cannot fix a variable's syntax.
func (f *flags) parse(args []string) error {
	if len(f.errs) > 0 {
		return &UsageError{msg: "invalid configuration: " + f.errs[0].Error()}
	}
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErrorf("%v", err)
	}
	if f.fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", f.fs.Arg(0))
	}
	return nil
}

// usage writes the flag list.
func (f *flags) usage(w io.Writer) {
	f.fs.SetOutput(w)
	f.fs.PrintDefaults()
	f.fs.SetOutput(io.Discard)
}

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

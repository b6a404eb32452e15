package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
	"github.com/ds-blueprint/blueprint/internal/platform/telemetry"
)

const dlqUsage = `Usage:
  blueprint dlq list [--json] [flags]                 list the events the notifications worker gave up on
  blueprint dlq replay (--seq N[,N…] | --all) [flags] publish them again to their subject, then remove them

The dead letters live in the running system's NATS (stream DLQ, subject
dlq.notifications); docs/dead-letters.md explains them. The command reaches
NATS at NATS_URL. An all-in-one 'blueprint run' has no NATS port unless it was
started with NATS_EMBEDDED_ADDR=127.0.0.1:4222; then pass
--nats-url nats://127.0.0.1:4222.

'blueprint dlq list -h' and 'blueprint dlq replay -h' list the flags.
`

// dlqCommand lists and replays the notifications worker's dead letters. The
// work is notifications.DeadLetters; this is its command line.
func dlqCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("usage: blueprint dlq list | replay; run `blueprint help dlq`")
	}
	switch args[0] {
	case "-h", "-help", "--help":
		_, err := io.WriteString(stdout, dlqUsage)
		return err
	case "list":
		return dlqList(ctx, args[1:], getenv, stdout, stderr)
	case "replay":
		return dlqReplay(ctx, args[1:], getenv, stdout, stderr)
	}
	return usageErrorf("unknown dlq command %q; use list or replay", args[0])
}

func dlqList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg Config
	f := newFlags("dlq list", getenv)
	cfg.registerNATSClientFlags(f, natsURLUsage)
	var asJSON bool
	f.Bool(&asJSON, "json", "", false, "print a JSON array instead of a table")
	if help, err := parseDLQFlags(f, args, stdout, "Usage: blueprint dlq list [flags]\n\nLists the dead letters, oldest first."); help || err != nil {
		return err
	}
	dlq, closeConn, err := cfg.connectDeadLetters(stderr)
	if err != nil {
		return err
	}
	defer closeConn()

	list, err := dlq.List(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if list == nil {
			list = []notifications.DeadLetter{} // [] rather than null
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	if len(list) == 0 {
		_, err := fmt.Fprintln(stdout, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tDEAD-LETTERED\tEVENT\tORDER\tATTEMPTS\tREASON")
	for _, dl := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", dl.Seq, dl.Time.Format(time.RFC3339),
			orDash(dl.EventID), orDash(dl.OrderID), dl.Attempts, oneLineText(dl.Reason))
	}
	return tw.Flush()
}

func dlqReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg Config
	f := newFlags("dlq replay", getenv)
	cfg.registerNATSClientFlags(f, natsURLUsage)
	var seqs seqList
	var all bool
	f.fs.Var(&seqs, "seq", "sequence of a dead letter to replay (as listed); repeat the flag or give a comma list")
	f.Bool(&all, "all", "", false, "replay every dead letter")
	if help, err := parseDLQFlags(f, args, stdout, "Usage: blueprint dlq replay (--seq N[,N…] | --all) [flags]\n\n"+
		"Publishes each dead letter again to its original subject, waits for the\n"+
		"stream's ack, then removes it. Running it twice publishes nothing twice."); help || err != nil {
		return err
	}
	if all == (len(seqs) > 0) {
		return usageErrorf("dlq replay: give --seq or --all, not both or neither")
	}
	dlq, closeConn, err := cfg.connectDeadLetters(stderr)
	if err != nil {
		return err
	}
	defer closeConn()

	var done []notifications.Replayed
	if all {
		done, err = dlq.ReplayAll(ctx)
	} else {
		for _, seq := range seqs {
			r, rerr := dlq.Replay(ctx, seq)
			if rerr != nil {
				err = rerr
				break
			}
			done = append(done, r)
		}
	}
	for _, r := range done {
		what := fmt.Sprintf("DLQ #%d", r.Seq)
		var ids []string
		if r.EventID != "" {
			ids = append(ids, "event "+r.EventID)
		}
		if r.OrderID != "" {
			ids = append(ids, "order "+r.OrderID)
		}
		if len(ids) > 0 {
			what += " (" + strings.Join(ids, ", ") + ")"
		}
		if r.Duplicate {
			fmt.Fprintf(stdout, "replayed %s: already on %s as %s #%d from an earlier replay; removed\n", what, r.Subject, events.Stream, r.StreamSeq)
		} else {
			fmt.Fprintf(stdout, "replayed %s to %s as %s #%d\n", what, r.Subject, events.Stream, r.StreamSeq)
		}
	}
	if err != nil && len(done) > 0 {
		return fmt.Errorf("dlq replay stopped after %d: %w", len(done), err)
	}
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	if len(done) == 0 {
		_, err := fmt.Fprintln(stdout, "no dead letters to replay")
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d replayed\n", len(done))
	return err
}

const natsURLUsage = "NATS server URLs, comma-separated, of the running system"

// parseDLQFlags parses a dlq command's flags; for -h it prints the help and
// reports it was asked for.
func parseDLQFlags(f *flags, args []string, stdout io.Writer, help string) (bool, error) {
	err := f.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, help+"\n\nFlags:")
		f.usage(stdout)
		return true, nil
	}
	return false, err
}

// connectDeadLetters connects to NATS for one command: it fails at once,
// with the reason, when NATS cannot be reached.
func (c *Config) connectDeadLetters(stderr io.Writer) (*notifications.DeadLetters, func(), error) {
	if c.NATSURL == "" {
		// An all-in-one process's embedded server listens on no port
		// unless asked to: say how.
		return nil, nil, usageErrorf("NATS_URL: not set; the dead letters are in the running system's NATS: " +
			"run it with NATS_EMBEDDED_ADDR=127.0.0.1:4222 and pass --nats-url nats://127.0.0.1:4222 (or set NATS_URL to its cluster)")
	}
	if err := oneLine(c.validateNATSClient()); err != nil {
		return nil, nil, err
	}
	// Warnings only: the output is the command's answer.
	logger := telemetry.NewLogger(stderr, telemetry.LogText, false, slog.LevelWarn)
	nc, err := natsbus.Connect(natsbus.ConnConfig{
		Name: "blueprint-dlq", URL: c.NATSURL, FailFast: true,
		CredsFile: c.NATSCreds, NKeyFile: c.NATSNKey, TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey,
	}, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("reach NATS at %s: %w", redactURLList(c.NATSURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return notifications.NewDeadLetters(js), nc.Close, nil
}

// seqList is a repeatable flag of DLQ sequences, each a number or a comma list.
type seqList []uint64

func (s *seqList) String() string {
	parts := make([]string, len(*s))
	for i, n := range *s {
		parts[i] = strconv.FormatUint(n, 10)
	}
	return strings.Join(parts, ",")
}

func (s *seqList) Set(v string) error {
	for _, part := range splitList(v) {
		n, err := strconv.ParseUint(part, 10, 64)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a sequence number", part)
		}
		*s = append(*s, n)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLineText keeps a table row on one line whatever an error message holds.
func oneLineText(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

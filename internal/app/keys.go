package app

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ds-blueprint/blueprint/internal/platform/auth"
)

func keysCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "generate" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stdout, "Usage: blueprint keys generate --out DIR")
			return nil
		}
		return usageErrorf("usage: blueprint keys generate --out DIR")
	}
	f := newFlags("keys generate", func(string) string { return "" })
	var out string
	f.String(&out, "out", "", "", "directory to write the keys into (created if missing)")
	if err := f.parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: blueprint keys generate --out DIR\n\nWrites one private key per service (<service>.pem), the access-token\nsigning key (access.pem) and the public trust bundle (trust.json); and the\nNATS users: an NKey seed per user (nats-orders.nk, nats-notifications.nk,\nnats-admin.nk) and nats-auth.conf, their public keys and permissions, for\nthe NATS servers. Mount into each service only its own key, its own NATS\nseed and trust.json; never share private keys.\n\nFlags:")
			f.usage(stdout)
			return nil
		}
		return err
	}
	if out == "" {
		return usageErrorf("--out is required")
	}
	kr, err := auth.GenerateKeyring(services)
	if err != nil {
		return err
	}
	if err := auth.WriteKeyring(out, kr); err != nil {
		return err
	}
	if err := writeNATSUsers(out); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s, %s and a key per service (%v) to %s\n"+
		"wrote the NATS users' seeds (%s) and the NATS servers' %s to %s\n",
		auth.AccessKeyFile, auth.BundleFile, services, out, natsSeedFiles(), natsAuthFile, out)
	return err
}

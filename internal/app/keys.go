package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
	var out, owner string
	f.String(&out, "out", "", "", "directory to write the keys into (created if missing)")
	f.String(&owner, "owner", "", "", "UID:GID to give the directory and files (needs the right to chown), e.g. 65532:65532, "+
		"the image's user, for keys that containers mount from the host")
	if err := f.parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: blueprint keys generate --out DIR [--owner UID:GID]\n\nWrites one private key per service (<service>.pem), the access-token\nsigning key (access.pem) and the public trust bundle (trust.json); and the\nNATS users: an NKey seed per user (nats-orders.nk, nats-notifications.nk,\nnats-admin.nk) and nats-auth.conf, their public keys and permissions, for\nthe NATS servers. Mount into each service only its own key, its own NATS\nseed and trust.json; never share private keys.\n\nFlags:")
			f.usage(stdout)
			return nil
		}
		return err
	}
	if out == "" {
		return usageErrorf("--out is required")
	}
	uid, gid, err := parseOwner(owner)
	if err != nil {
		return usageErrorf("--owner: %v", err)
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
	if owner != "" {
		if err := chownKeys(out, uid, gid); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "wrote %s, %s and a key per service (%v) to %s\n"+
		"wrote the NATS users' seeds (%s) and the NATS servers' %s to %s\n",
		auth.AccessKeyFile, auth.BundleFile, services, out, natsSeedFiles(), natsAuthFile, out)
	return err
}

// parseOwner reads UID:GID; empty is no owner.
func parseOwner(owner string) (uid, gid int, err error) {
	if owner == "" {
		return -1, -1, nil
	}
	u, g, ok := strings.Cut(owner, ":")
	if uid, err = strconv.Atoi(u); err == nil && ok {
		gid, err = strconv.Atoi(g)
	}
	if err != nil || !ok || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("%q is not UID:GID", owner)
	}
	return uid, gid, nil
}

// chownKeys gives dir and every file keys generate wrote in it to uid:gid,
// so a container running as that user can read the keys mounted from the
// host while they stay unreadable to everyone else (mode 0600).
func chownKeys(dir string, uid, gid int) error {
	names := []string{".", auth.AccessKeyFile, auth.BundleFile, natsAuthFile}
	for _, s := range services {
		names = append(names, auth.IdentityFile(s))
	}
	for _, u := range natsUsers {
		names = append(names, natsSeedFile(u.name))
	}
	for _, name := range names {
		if err := os.Lchown(filepath.Join(dir, name), uid, gid); err != nil {
			return fmt.Errorf("--owner: %w", err)
		}
	}
	return nil
}

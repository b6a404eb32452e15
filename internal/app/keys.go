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

const keysUsage = `Usage:
  blueprint keys generate --out DIR [--owner UID:GID]
  blueprint keys rotate --from DIR --out DIR [--owner UID:GID]

generate writes every key of a deployment: one private key per service
(<service>.pem), the access-token signing key (access.pem), the public trust
bundle (trust.json), and the NATS users: an NKey seed per user
(nats-orders.nk, nats-notifications.nk, nats-admin.nk) and nats-auth.conf,
their public keys and permissions, for the NATS servers. Mount into each
service only its own key, its own NATS seed and trust.json; never share
private keys.

rotate replaces every key of the deployment in --from without a moment in
which a token or a NATS user is refused. It writes three key directories
into --out, to roll out in order (docs/security.md#rotating-keys):
  1-trust-new  the old private keys; every key, old and new, trusted
  2-sign-new   the new private keys; every key still trusted
  3-drop-old   the new keys alone, once the old access tokens have expired
`

func keysCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("usage: blueprint keys generate | rotate; run `blueprint help keys`")
	}
	switch args[0] {
	case "-h", "-help", "--help":
		_, err := io.WriteString(stdout, keysUsage)
		return err
	case "generate", "rotate":
	default:
		return usageErrorf("unknown keys command %q; use generate or rotate", args[0])
	}
	f := newFlags("keys "+args[0], func(string) string { return "" })
	var from, out, owner string
	if args[0] == "rotate" {
		f.String(&from, "from", "", "", "directory of the keys in use (from 'blueprint keys generate')")
	}
	f.String(&out, "out", "", "", "directory to write the keys into (created if missing)")
	f.String(&owner, "owner", "", "", "UID:GID to give the directories and files (needs the right to chown), e.g. 65532:65532, "+
		"the image's user, for keys that containers mount from the host")
	if err := f.parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, keysUsage+"\nFlags:\n")
			f.usage(stdout)
			return nil
		}
		return err
	}
	if out == "" || (args[0] == "rotate" && from == "") {
		return usageErrorf("keys %s: --out is required (and --from, to rotate)", args[0])
	}
	uid, gid, err := parseOwner(owner)
	if err != nil {
		return usageErrorf("--owner: %v", err)
	}
	if args[0] == "rotate" {
		return rotateKeys(from, out, uid, gid, stdout)
	}
	kr, err := auth.GenerateKeyring(services)
	if err != nil {
		return err
	}
	nats, err := generateNATSKeys()
	if err != nil {
		return err
	}
	if err := writeKeys(out, kr, nats, uid, gid, nats); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s, %s and a key per service (%v) to %s\n"+
		"wrote the NATS users' seeds (%s) and the NATS servers' %s to %s\n",
		auth.AccessKeyFile, auth.BundleFile, services, out, natsSeedFiles(), natsAuthFile, out)
	return err
}

// writeKeys writes one complete key directory: kr's private keys and
// bundle, the NATS users' seeds from nats, and nats-auth.conf admitting the
// users of admitted. uid and gid, unless -1, own it all.
func writeKeys(dir string, kr *auth.Keyring, nats natsKeys, uid, gid int, admitted ...natsKeys) error {
	if err := auth.WriteKeyring(dir, kr); err != nil {
		return err
	}
	if err := writeNATSUsers(dir, nats, admitted...); err != nil {
		return err
	}
	if uid >= 0 {
		return chownKeys(dir, uid, gid)
	}
	return nil
}

// rotateKeys writes the three steps of a rotation from the keys in from to
// new ones. Tokens are verified with trust.json and NATS users admitted by
// nats-auth.conf, so each step first widens what is accepted, then switches
// what signs, then narrows: at no step does a running process hold a key
// another one refuses.
func rotateKeys(from, out string, uid, gid int, stdout io.Writer) error {
	old, err := auth.LoadKeyring(from, services, true)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	oldNATS, err := loadNATSKeys(from)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	next, err := auth.GenerateKeyring(services)
	if err != nil {
		return err
	}
	nextNATS, err := generateNATSKeys()
	if err != nil {
		return err
	}
	both := auth.MergeBundles(old.Bundle, next.Bundle)
	steps := []struct {
		dir      string
		kr       *auth.Keyring
		seeds    natsKeys
		admitted []natsKeys
		then     string
	}{
		{"1-trust-new", &auth.Keyring{Access: old.Access, Identities: old.Identities, Bundle: both}, oldNATS,
			[]natsKeys{oldNATS, nextNATS}, "roll out to every NATS server and every service"},
		{"2-sign-new", &auth.Keyring{Access: next.Access, Identities: next.Identities, Bundle: both}, nextNATS,
			[]natsKeys{oldNATS, nextNATS}, "roll out to every service, then wait 15 minutes: access tokens signed before live that long"},
		{"3-drop-old", next, nextNATS, []natsKeys{nextNATS}, "roll out to every NATS server and every service"},
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	for i, st := range steps {
		dir := filepath.Join(out, st.dir)
		if err := writeKeys(dir, st.kr, st.seeds, uid, gid, st.admitted...); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(stdout, "%d. %s: %s\n", i+1, dir, st.then); err != nil {
			return err
		}
	}
	if uid >= 0 {
		return os.Lchown(out, uid, gid)
	}
	return nil
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

// chownKeys gives dir and every file the keys commands write in it to uid:gid,
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

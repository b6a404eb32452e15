package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/ds-blueprint/blueprint/internal/events"
	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/platform/natsbus"
)

// A deployed NATS admits only the users `blueprint keys generate` makes,
// each allowed exactly the subjects its work needs. Without them anyone who
// reaches NATS could publish a well-formed orders.created for any user and
// have it notified. The server knows each user by its public NKey (in
// nats-auth.conf); only the user holds its seed (nats-<user>.nk), so the
// server's configuration holds no secret.
//
// Replies come back on a prefix of each user's own (natsbus.InboxPrefix of
// its public key), so no user can read the replies another user asked for.

// natsUser is one NATS identity and what it may do.
type natsUser struct {
	name    string
	purpose string
	// publish lists the subjects the user may publish to, JetStream API
	// requests and acknowledgements included; it may subscribe only to its
	// inbox.
	publish []string
}

// jsAPI is the subject of a JetStream API request.
func jsAPI(request string) string { return "$JS.API." + request }

// natsUsers lists every NATS user of a deployment. The gateway and users
// never touch NATS, so they have none.
var natsUsers = []natsUser{
	{
		name:    orders.Name,
		purpose: "publishes order events (the only service that may) and declares the " + events.Stream + " stream it owns",
		publish: []string{
			events.StreamSubject,
			jsAPI("INFO"), // readiness
			jsAPI("STREAM.INFO." + events.Stream), jsAPI("STREAM.CREATE." + events.Stream), jsAPI("STREAM.UPDATE." + events.Stream),
		},
	},
	{
		name: notifications.Name,
		purpose: "consumes " + events.OrderCreated + " through its durable consumer and dead-letters to " +
			notifications.DeadLetterSubject + "; it may create " + events.Stream + " if missing, never change it or publish to it",
		publish: []string{
			notifications.DeadLetterSubject,
			jsAPI("INFO"),
			jsAPI("STREAM.INFO." + events.Stream), jsAPI("STREAM.CREATE." + events.Stream),
			jsAPI("STREAM.INFO." + notifications.DeadLetterStream),
			jsAPI("STREAM.CREATE." + notifications.DeadLetterStream),
			jsAPI("STREAM.UPDATE." + notifications.DeadLetterStream),
			jsAPI("CONSUMER.CREATE." + events.Stream + "." + notifications.ConsumerName + ".>"),
			jsAPI("CONSUMER.INFO." + events.Stream + "." + notifications.ConsumerName),
			jsAPI("CONSUMER.MSG.NEXT." + events.Stream + "." + notifications.ConsumerName),
			"$JS.ACK." + events.Stream + "." + notifications.ConsumerName + ".>", // ack, nak, in progress
		},
	},
	{
		name:    "admin",
		purpose: "operators: every JetStream request, and replaying dead letters to their subject ('blueprint dlq'); never mount it into a service",
		publish: []string{jsAPI(">"), events.StreamSubject},
	},
}

// natsAuthFile is the server's side of the NATS users: their public keys
// and permissions.
const natsAuthFile = "nats-auth.conf"

// natsSeedFile is the file holding a NATS user's NKey seed.
func natsSeedFile(user string) string { return "nats-" + user + ".nk" }

// natsKeys are a deployment's NATS users by name: each one's key pair.
type natsKeys map[string]nkeys.KeyPair

// generateNATSKeys makes a new key pair for every NATS user.
func generateNATSKeys() (natsKeys, error) {
	keys := natsKeys{}
	for _, u := range natsUsers {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, fmt.Errorf("nats user %s: %w", u.name, err)
		}
		keys[u.name] = kp
	}
	return keys, nil
}

// loadNATSKeys reads every NATS user's seed from dir.
func loadNATSKeys(dir string) (natsKeys, error) {
	keys := natsKeys{}
	for _, u := range natsUsers {
		data, err := os.ReadFile(filepath.Join(dir, natsSeedFile(u.name)))
		if err != nil {
			return nil, fmt.Errorf("nats user %s: %w", u.name, err)
		}
		if keys[u.name], err = nkeys.ParseDecoratedNKey(data); err != nil {
			return nil, fmt.Errorf("nats user %s: %w", u.name, err)
		}
	}
	return keys, nil
}

// writeNATSUsers writes into dir each user's seed from seeds, and the
// servers' authorization block admitting every key of admitted: the seeds'
// own, and during a rotation the other generation's too. Like the other
// keys, it never overwrites a file.
func writeNATSUsers(dir string, seeds natsKeys, admitted ...natsKeys) error {
	files := map[string][]byte{}
	for name, kp := range seeds {
		seed, err := kp.Seed()
		if err != nil {
			return fmt.Errorf("nats user %s: %w", name, err)
		}
		files[natsSeedFile(name)] = append(seed, '\n')
	}
	var conf strings.Builder
	conf.WriteString(natsAuthHeader)
	conf.WriteString("authorization {\n  users = [\n")
	for _, u := range natsUsers {
		fmt.Fprintf(&conf, "    # %s: %s\n", u.name, u.purpose)
		for _, keys := range admitted {
			pub, err := keys[u.name].PublicKey()
			if err != nil {
				return fmt.Errorf("nats user %s: %w", u.name, err)
			}
			fmt.Fprintf(&conf, "    { nkey: %q, permissions: {\n", pub)
			fmt.Fprintf(&conf, "        publish: { allow: [%s] }\n", quoteList(u.publish))
			fmt.Fprintf(&conf, "        subscribe: { allow: [%q] }\n", natsbus.InboxPrefix(pub)+".>")
			conf.WriteString("    } }\n")
		}
	}
	conf.WriteString("  ]\n}\n")
	files[natsAuthFile] = []byte(conf.String())
	for name := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite keys", filepath.Join(dir, name))
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	for name, data := range files {
		mode := os.FileMode(0o600)
		if name == natsAuthFile {
			mode = 0o644 // public keys only
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

const natsAuthHeader = `# The NATS users of one Blueprint deployment, made by 'blueprint keys'.
# Give this block to every NATS server of the deployment ('blueprint nats
# --config nats-auth.conf', or include it in nats-server's configuration).
# It holds public NKeys only; each user's seed is in nats-<user>.nk, mounted
# into that service alone. A connection with no key, or an unknown one, is
# refused; a subject outside a user's list is a permissions violation.
`

func quoteList(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// natsSeedFiles names the seed files, for the command's output.
func natsSeedFiles() string {
	names := make([]string, len(natsUsers))
	for i, u := range natsUsers {
		names[i] = natsSeedFile(u.name)
	}
	return strings.Join(names, ", ")
}

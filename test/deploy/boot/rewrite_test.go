package boot

import (
	"strings"
	"testing"
)

func TestReplaceAddrsReplacesWholeAddressesOnly(t *testing.T) {
	m := map[string]string{"nats:4222": "127.0.0.1:1", "0.0.0.0:3002": "127.0.0.1:2", "blueprint-users:3002": "127.0.0.1:3"}
	for in, want := range map[string]string{
		"nats://nats:4222":                    "nats://127.0.0.1:1",
		"nats://mynats:4222":                  "nats://mynats:4222",
		"nats://nats:42220":                   "nats://nats:42220",
		"nats://nats:4222,nats://nats:4222":   "nats://127.0.0.1:1,nats://127.0.0.1:1",
		"0.0.0.0:3002":                        "127.0.0.1:2",
		"http://blueprint-users:3002/x":       "http://127.0.0.1:3/x",
		"http://blueprint-users.shop:3002":    "http://blueprint-users.shop:3002",
		"postgres://u:pw@db:5432/blueprint-x": "postgres://u:pw@db:5432/blueprint-x",
	} {
		if got := replaceAddrs(in, m); got != want {
			t.Errorf("replaceAddrs(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckLocalFindsAddressesLeftOver(t *testing.T) {
	for arg, foreign := range map[string]string{
		"USERS_URL=http://127.0.0.1:3002,http://blueprint-users:3002": "blueprint-users",
		"NATS_URL=nats://nats:4222":                                   "nats",
		"USERS_ADDR=0.0.0.0:3002":                                     "0.0.0.0",
		"--routes=nats://nats-1.nats-headless:6222":                   "nats-1.nats-headless",
		"USERS_DATABASE_URL=postgres://u@127.0.0.1:5432/db":           "",
		"USERS_DATABASE_URL=sqlite:/data/users.db":                    "",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod":   "",
		"--target=users": "",
	} {
		err := checkLocal([]string{arg})
		switch {
		case foreign == "" && err != nil:
			t.Errorf("checkLocal(%q) = %v, want no error: every address is local", arg, err)
		case foreign != "" && (err == nil || !strings.Contains(err.Error(), foreign)):
			t.Errorf("checkLocal(%q) = %v, want an error naming %s", arg, err, foreign)
		}
	}
}

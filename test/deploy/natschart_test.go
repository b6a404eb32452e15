package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// EnvNATSChart names the official NATS chart (a directory or .tgz, e.g.
// from `helm pull nats/nats --untar`), which this repository does not hold.
const EnvNATSChart = "BLUEPRINT_TEST_NATS_CHART"

// TestNATSChartAdmitsTheKeysUsers renders the official NATS chart with
// deploy/helm/nats-values.yaml and checks that its servers run the
// authorization block of the keys' nats-auth.conf: the Secret item mounted
// into the server (and its config reloader), the include in nats.conf, and
// the whole configuration accepted by nats-server with the three NATS users
// of `blueprint keys generate`, clustered and with JetStream.
func TestNATSChartAdmitsTheKeysUsers(t *testing.T) {
	chart := os.Getenv(EnvNATSChart)
	if chart == "" {
		t.Skipf("%s is not set: it names the official NATS chart to render (helm pull nats/nats --untar)", EnvNATSChart)
	}
	docs, err := renderChart(t, chart, "nats", mergeValues(t, []string{"../../deploy/helm/nats-values.yaml"}))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	var natsConf string
	var sts *appsv1.StatefulSet
	for _, doc := range docs {
		var head metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
				t.Fatal(err)
			}
			natsConf = cm.Data["nats.conf"]
		case "StatefulSet":
			sts = &appsv1.StatefulSet{}
			if err := yaml.Unmarshal([]byte(doc), sts); err != nil {
				t.Fatal(err)
			}
		}
	}
	if natsConf == "" || sts == nil {
		t.Fatal("the chart rendered no nats.conf or no StatefulSet")
	}

	const authPath = "/etc/nats-auth/nats-auth.conf"
	pod := sts.Spec.Template.Spec
	var authVolume string
	for _, v := range pod.Volumes {
		if v.Secret != nil && len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == "nats-auth.conf" {
			authVolume = v.Name
		}
	}
	if authVolume == "" {
		t.Fatalf("no volume of the Secret's nats-auth.conf alone: %+v", pod.Volumes)
	}
	for _, c := range pod.Containers {
		if c.Name != "nats" && c.Name != "reloader" {
			continue
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
			return vm.Name == authVolume && vm.MountPath == filepath.Dir(authPath)
		}) {
			t.Errorf("container %s does not mount nats-auth.conf at %s", c.Name, filepath.Dir(authPath))
		}
		if c.Name == "reloader" && !slices.Contains(c.Args, authPath) {
			t.Errorf("the config reloader does not watch %s: %q", authPath, c.Args)
		}
	}
	if deref(sts.Spec.Replicas) != 3 || len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("%d servers, %d volume claims; want 3 servers storing JetStream on a volume each", deref(sts.Spec.Replicas), len(sts.Spec.VolumeClaimTemplates))
	}

	// The chart's files as its pod sees them, with a fresh nats-auth.conf.
	root := t.TempDir()
	confPath := filepath.Join(root, "etc/nats-config/nats.conf")
	auth := generateKeys(t)["nats-auth.conf"]
	for path, data := range map[string][]byte{confPath: []byte(natsConf), filepath.Join(root, authPath): auth} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("SERVER_NAME", "nats-0") // set by the chart from the pod's name
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatalf("nats-server refuses the rendered nats.conf: %v\n%s", err, natsConf)
	}
	var want, got []string
	for _, m := range regexp.MustCompile(`nkey: "(U[A-Z2-7]{55})"`).FindAllStringSubmatch(string(auth), -1) {
		want = append(want, m[1])
	}
	for _, u := range opts.Nkeys {
		if u.Permissions == nil || u.Permissions.Publish == nil || len(u.Permissions.Publish.Allow) == 0 {
			t.Errorf("user %s has no publish permissions", u.Nkey)
		}
		got = append(got, u.Nkey)
	}
	slices.Sort(got)
	slices.Sort(want)
	if len(want) != 3 || !slices.Equal(got, want) {
		t.Errorf("servers admit %v, want the 3 users of nats-auth.conf %v", got, want)
	}
	if !opts.JetStream || opts.Cluster.Port == 0 || len(opts.Routes) != 3 || len(opts.Users) != 0 || opts.NoAuthUser != "" {
		t.Errorf("jetstream %t, cluster port %d, %d routes, %d password users, no-auth user %q; want JetStream clustered over 3 routes, NKey users only",
			opts.JetStream, opts.Cluster.Port, len(opts.Routes), len(opts.Users), opts.NoAuthUser)
	}
	if !strings.Contains(natsConf, "include ../nats-auth/nats-auth.conf;") {
		t.Errorf("nats.conf does not include nats-auth.conf:\n%s", natsConf)
	}
}

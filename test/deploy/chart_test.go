package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// services lists the Deployments of a release, in the binary's start order.
var services = []string{"users", "orders", "notifications", "gateway"}

// ports are each service's API and ops ports (README.md).
var ports = map[string][2]int32{
	"gateway": {3001, 9101}, "users": {3002, 9102}, "orders": {3003, 9103}, "notifications": {3004, 9104},
}

// ownKeys are the key files each service needs, and the only ones it may
// see: its own private key, the public trust bundle, the access-token key
// for the gateway, its NATS seed for orders and notifications.
var ownKeys = map[string][]string{
	"gateway":       {"access.pem", "gateway.pem", "trust.json"},
	"users":         {"trust.json", "users.pem"},
	"orders":        {"nats-orders.nk", "orders.pem", "trust.json"},
	"notifications": {"nats-notifications.nk", "notifications.pem", "trust.json"},
}

// keyFiles stands in for what `blueprint keys generate` writes; rendering
// only copies the files.
func keyFiles() map[string]any {
	files := map[string]any{"nats-admin.nk": "seed", "nats-auth.conf": "authorization {}"}
	for _, names := range ownKeys {
		for _, n := range names {
			files[n] = "content of " + n
		}
	}
	return files
}

func withKeys() map[string]any {
	return map[string]any{"keys": map[string]any{"files": keyFiles()}}
}

// release is a render: values files of the chart, then values.
type release struct {
	name   string
	files  []string
	values map[string]any
}

// releases are the two renders every structural test checks: the defaults
// (one replica each, SQLite) and values-production.yaml.
var releases = []release{
	{"defaults", nil, withKeys()},
	{"production", []string{"values-production.yaml"}, nil},
}

func mustRender(t *testing.T, files []string, values ...map[string]any) *manifest {
	t.Helper()
	m, err := render(t, files, values...)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return m
}

func deploymentOf(t *testing.T, m *manifest, service string) *appsv1.Deployment {
	t.Helper()
	return one[*appsv1.Deployment](t, m, releaseName+"-"+service)
}

// configOf is the environment the Deployment's ConfigMaps give it.
func configOf(t *testing.T, m *manifest, d *appsv1.Deployment) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range d.Spec.Template.Spec.Containers[0].EnvFrom {
		if from.ConfigMapRef == nil {
			continue
		}
		for k, v := range one[*corev1.ConfigMap](t, m, from.ConfigMapRef.Name).Data {
			env[k] = v
		}
	}
	return env
}

// TestChartPassesHelmLint runs `helm lint`'s checks on both renders and
// fails on any warning or error.
func TestChartPassesHelmLint(t *testing.T) {
	for _, r := range releases {
		t.Run(r.name, func(t *testing.T) {
			for _, m := range lint.RunAll(chartDir, chartValues(t, r.files, r.values), namespace).Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m.Error())
				}
			}
		})
	}
}

func TestDeploymentsRunRestricted(t *testing.T) {
	for _, r := range releases {
		t.Run(r.name, func(t *testing.T) {
			m := mustRender(t, r.files, r.values)
			if n := len(all[*appsv1.Deployment](m)); n != len(services) {
				t.Errorf("%d Deployments, want %d", n, len(services))
			}
			for _, svc := range services {
				pod := deploymentOf(t, m, svc).Spec.Template.Spec
				sc := pod.SecurityContext
				if sc == nil || !deref(sc.RunAsNonRoot) || deref(sc.RunAsUser) != 65532 || deref(sc.RunAsGroup) != 65532 ||
					deref(sc.FSGroup) != 65532 || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: pod security context %+v, want non-root 65532:65532, fsGroup 65532, seccomp RuntimeDefault", svc, sc)
				}
				if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
					t.Errorf("%s: mounts a service account token", svc)
				}
				if len(pod.Containers) != 1 {
					t.Fatalf("%s: %d containers, want 1", svc, len(pod.Containers))
				}
				c := pod.Containers[0]
				csc := c.SecurityContext
				if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
					!deref(csc.ReadOnlyRootFilesystem) || csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("%s: container security context %+v, want no privilege escalation, read-only root, every capability dropped", svc, csc)
				}
				if len(c.Command) != 0 || !slices.Equal(c.Args, []string{"run", "--target=" + svc}) {
					t.Errorf("%s: command %q args %q, want the image's entrypoint with run --target=%s", svc, c.Command, c.Args, svc)
				}
				for _, res := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
					if res.Cpu().IsZero() || res.Memory().IsZero() {
						t.Errorf("%s: resources %+v, want CPU and memory requests and limits", svc, c.Resources)
					}
				}
			}
		})
	}
}

func TestDeploymentsProbeTheOpsPort(t *testing.T) {
	for _, r := range releases {
		t.Run(r.name, func(t *testing.T) {
			m := mustRender(t, r.files, r.values)
			for _, svc := range services {
				d := deploymentOf(t, m, svc)
				c := d.Spec.Template.Spec.Containers[0]
				env := configOf(t, m, d)
				up := strings.ToUpper(svc)
				api, ops := ports[svc][0], ports[svc][1]
				if env[up+"_ADDR"] != fmt.Sprintf("0.0.0.0:%d", api) || env[up+"_OPS_ADDR"] != fmt.Sprintf("0.0.0.0:%d", ops) {
					t.Errorf("%s: listens on %q and %q, want 0.0.0.0:%d and 0.0.0.0:%d", svc, env[up+"_ADDR"], env[up+"_OPS_ADDR"], api, ops)
				}
				if env["LOG_FORMAT"] != "json" {
					t.Errorf("%s: LOG_FORMAT %q, want json", svc, env["LOG_FORMAT"])
				}
				for name, p := range map[string]struct {
					probe *corev1.Probe
					path  string
				}{
					"startup": {c.StartupProbe, "/healthz"}, "liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"},
				} {
					if p.probe == nil || p.probe.HTTPGet == nil {
						t.Errorf("%s: no %s probe over HTTP", svc, name)
						continue
					}
					if p.probe.HTTPGet.Path != p.path || containerPort(c, p.probe.HTTPGet.Port.String()) != ops {
						t.Errorf("%s: %s probe GET %s on port %s, want %s on the ops port %d", svc, name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, ops)
					}
				}
			}
		})
	}
}

// containerPort resolves a port as a probe or Service names it.
func containerPort(c corev1.Container, port string) int32 {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return 0
}

func TestRollingUpdatesLoseNoRequest(t *testing.T) {
	for _, r := range releases {
		t.Run(r.name, func(t *testing.T) {
			m := mustRender(t, r.files, r.values)
			for _, svc := range services {
				d := deploymentOf(t, m, svc)
				ru := d.Spec.Strategy.RollingUpdate
				if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
					ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" || ru.MaxSurge == nil || ru.MaxSurge.IntValue() < 1 {
					t.Errorf("%s: strategy %+v, want a rolling update with maxUnavailable 0 and maxSurge at least 1", svc, d.Spec.Strategy)
				}
				pod := d.Spec.Template.Spec
				c := pod.Containers[0]
				if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
					t.Fatalf("%s: no preStop sleep", svc)
				}
				preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
				// Callers through the headless Services look their names up
				// every 30 s: a shorter sleep refuses their calls.
				if svc != "gateway" && preStop < 30*time.Second {
					t.Errorf("%s: preStop sleeps %v, less than the callers' 30 s between lookups", svc, preStop)
				}
				drain, err := time.ParseDuration(configOf(t, m, d)["SHUTDOWN_TIMEOUT"])
				if err != nil {
					t.Fatalf("%s: SHUTDOWN_TIMEOUT: %v", svc, err)
				}
				if grace := time.Duration(deref(pod.TerminationGracePeriodSeconds)) * time.Second; grace <= preStop+drain {
					t.Errorf("%s: terminationGracePeriodSeconds %v leaves no margin after the preStop %v and the drain %v", svc, grace, preStop, drain)
				}
				spread := map[string]bool{}
				for _, tsc := range pod.TopologySpreadConstraints {
					sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
					if err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) && tsc.WhenUnsatisfiable == corev1.ScheduleAnyway {
						spread[tsc.TopologyKey] = true
					}
				}
				if !spread["kubernetes.io/hostname"] || !spread["topology.kubernetes.io/zone"] {
					t.Errorf("%s: pods spread over %v, want hostnames and zones (ScheduleAnyway)", svc, spread)
				}
			}
		})
	}
}

// TestEachServiceMountsOnlyItsKeys checks that a service sees its own key
// files in BLUEPRINT_KEYS_DIR and none of another service's.
func TestEachServiceMountsOnlyItsKeys(t *testing.T) {
	for _, r := range releases {
		t.Run(r.name, func(t *testing.T) {
			m := mustRender(t, r.files, r.values)
			for _, svc := range services {
				d := deploymentOf(t, m, svc)
				pod := d.Spec.Template.Spec
				keysDir := configOf(t, m, d)["BLUEPRINT_KEYS_DIR"]
				var mounted []string
				for _, vm := range pod.Containers[0].VolumeMounts {
					if vm.MountPath != keysDir {
						continue
					}
					if !vm.ReadOnly {
						t.Errorf("%s: keys mounted writable", svc)
					}
					v := volume(pod, vm.Name)
					if v == nil || v.Secret == nil || len(v.Secret.Items) == 0 {
						t.Fatalf("%s: keys are not a Secret volume with items: %+v", svc, v)
					}
					if deref(v.Secret.DefaultMode) != 0o440 {
						t.Errorf("%s: key files mode %o, want 0440", svc, deref(v.Secret.DefaultMode))
					}
					for _, item := range v.Secret.Items {
						if item.Key != item.Path {
							t.Errorf("%s: key %s mounted as %s", svc, item.Key, item.Path)
						}
						mounted = append(mounted, item.Path)
					}
				}
				slices.Sort(mounted)
				if !slices.Equal(mounted, ownKeys[svc]) {
					t.Errorf("%s: mounts %v in %s, want exactly %v", svc, mounted, keysDir, ownKeys[svc])
				}
				dataDir := configOf(t, m, d)["BLUEPRINT_DATA_DIR"]
				for _, dir := range []string{dataDir, "/tmp"} {
					if v := mountedVolume(pod, dir); v == nil || v.EmptyDir == nil {
						t.Errorf("%s: %s is not an emptyDir (the root filesystem is read-only)", svc, dir)
					}
				}
			}
		})
	}
}

func volume(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

func mountedVolume(pod corev1.PodSpec, path string) *corev1.Volume {
	for _, vm := range pod.Containers[0].VolumeMounts {
		if vm.MountPath == path {
			return volume(pod, vm.Name)
		}
	}
	return nil
}

// TestServices checks how the services are reached: the gateway through a
// ClusterIP Service, the others through headless Services whose names
// resolve to every replica, each with its ops port named for scraping.
func TestServices(t *testing.T) {
	m := mustRender(t, nil, withKeys())
	for _, svc := range services {
		s := one[*corev1.Service](t, m, releaseName+"-"+svc)
		d := deploymentOf(t, m, svc)
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(s.Spec.Selector) == 0 {
			t.Errorf("%s: Service selects %v, not the Deployment's pods", svc, s.Spec.Selector)
		}
		headless := s.Spec.ClusterIP == corev1.ClusterIPNone
		if headless == (svc == "gateway") {
			t.Errorf("%s: clusterIP %q; want a ClusterIP for the gateway, headless for the others", svc, s.Spec.ClusterIP)
		}
		got := map[string]int32{}
		for _, p := range s.Spec.Ports {
			if containerPort(d.Spec.Template.Spec.Containers[0], p.TargetPort.String()) != p.Port {
				t.Errorf("%s: Service port %s (%d) targets %s", svc, p.Name, p.Port, p.TargetPort.String())
			}
			got[p.Name] = p.Port
		}
		if want := map[string]int32{"http": ports[svc][0], "ops": ports[svc][1]}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Service ports %v, want %v", svc, got, want)
		}
	}
}

func TestProductionValues(t *testing.T) {
	m := mustRender(t, []string{"values-production.yaml"})
	for _, svc := range services {
		d := deploymentOf(t, m, svc)
		if d.Spec.Replicas != nil {
			t.Errorf("%s: replicas %d set beside its autoscaler, which every upgrade would undo", svc, *d.Spec.Replicas)
		}
		hpa := one[*autoscalingv2.HorizontalPodAutoscaler](t, m, d.Name)
		if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != d.Name || deref(hpa.Spec.MinReplicas) < 3 {
			t.Errorf("%s: autoscaler %+v, want at least 3 replicas of the Deployment", svc, hpa.Spec)
		}
		pdb := one[*policyv1.PodDisruptionBudget](t, m, d.Name)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) || pdb.Spec.MaxUnavailable == nil {
			t.Errorf("%s: disruption budget %+v does not bound the Deployment's pods", svc, pdb.Spec)
		}
		env := d.Spec.Template.Spec.Containers[0].Env
		if svc != "gateway" {
			ref := secretRef(env, strings.ToUpper(svc)+"_DATABASE_URL")
			if ref == nil || ref.Name != "pg-"+svc+"-app" || ref.Key != "uri" {
				t.Errorf("%s: database URL from %+v, want CloudNativePG's pg-%s-app Secret, key uri", svc, ref, svc)
			}
		} else if ref := secretRef(env, "REDIS_URL"); ref == nil || ref.Name != "blueprint-redis" {
			t.Errorf("gateway: REDIS_URL from %+v, want the blueprint-redis Secret", ref)
		}
		cfg := configOf(t, m, d)
		if cfg["OTEL_EXPORTER_OTLP_ENDPOINT"] == "" {
			t.Errorf("%s: no OTLP endpoint", svc)
		}
		if (svc == "orders" || svc == "notifications") && cfg["NATS_STREAM_REPLICAS"] != "3" {
			t.Errorf("%s: NATS_STREAM_REPLICAS %q, want 3 on the NATS cluster", svc, cfg["NATS_STREAM_REPLICAS"])
		}
	}
	ing := one[*networkingv1.Ingress](t, m, releaseName+"-gateway")
	if len(ing.Spec.TLS) == 0 || len(ing.Spec.Rules) == 0 {
		t.Fatalf("ingress %+v, want TLS and a rule", ing.Spec)
	}
	for _, rule := range ing.Spec.Rules {
		for _, p := range rule.HTTP.Paths {
			if b := p.Backend.Service; b == nil || b.Name != releaseName+"-gateway" || b.Port.Name != "http" {
				t.Errorf("ingress path %s goes to %+v, want the gateway's http port", p.Path, p.Backend)
			}
		}
	}
}

func secretRef(env []corev1.EnvVar, name string) *corev1.SecretKeySelector {
	for _, e := range env {
		if e.Name == name && e.ValueFrom != nil {
			return e.ValueFrom.SecretKeyRef
		}
	}
	return nil
}

// TestServiceMonitorLabelsAsTheRulesExpect checks that the ServiceMonitor
// scrapes every service's ops port with job="blueprint" and service=<name>,
// the labels of deploy/observability's rules and dashboards.
func TestServiceMonitorLabelsAsTheRulesExpect(t *testing.T) {
	m := mustRender(t, []string{"values-production.yaml"})
	sm := one[*monitoringv1.ServiceMonitor](t, m, releaseName)
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "ops" {
		t.Fatalf("endpoints %+v, want the ops port", sm.Spec.Endpoints)
	}
	for _, svc := range services {
		s := one[*corev1.Service](t, m, releaseName+"-"+svc)
		if !sel.Matches(labels.Set(s.Labels)) {
			t.Errorf("%s: Service not selected by the ServiceMonitor", svc)
		}
		got := map[string]string{}
		for _, rc := range sm.Spec.Endpoints[0].RelabelConfigs {
			v := rc.Replacement
			if len(rc.SourceLabels) == 1 && rc.SourceLabels[0] == "__meta_kubernetes_service_label_app_kubernetes_io_name" {
				v = ptr(s.Labels["app.kubernetes.io/name"])
			}
			got[rc.TargetLabel] = deref(v)
		}
		if got["job"] != "blueprint" || got["service"] != svc {
			t.Errorf("%s: scraped with job=%q service=%q, want job=blueprint service=%s", svc, got["job"], got["service"], svc)
		}
	}
}

// TestPrometheusRuleShipsTheRules checks that the PrometheusRule holds every
// group of deploy/observability/prometheus/rules, read through the chart's
// files/rules link.
func TestPrometheusRuleShipsTheRules(t *testing.T) {
	m := mustRender(t, []string{"values-production.yaml"})
	got := one[*monitoringv1.PrometheusRule](t, m, releaseName).Spec.Groups
	files, err := filepath.Glob("../../deploy/observability/prometheus/rules/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("rule files: %v", err)
	}
	var want []monitoringv1.RuleGroup
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var spec monitoringv1.PrometheusRuleSpec
		if err := yaml.UnmarshalStrict(data, &spec); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want = append(want, spec.Groups...)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PrometheusRule groups differ from the rule files:\n got %d groups %v\nwant %d groups %v", len(got), groupNames(got), len(want), groupNames(want))
	}
}

// TestPackagedChartKeepsTheRules checks that a chart made with `helm
// package` — the loader, which follows the files/rules link, then the
// archive — still renders the PrometheusRule: the rule files travel as
// files.
func TestPackagedChartKeepsTheRules(t *testing.T) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := chartutil.Save(chrt, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	docs, err := renderChart(t, archive, releaseName, chartValues(t, []string{"values-production.yaml"}))
	if err != nil {
		t.Fatalf("render %s: %v", filepath.Base(archive), err)
	}
	packaged := &manifest{}
	for _, doc := range docs {
		obj, err := decode(doc)
		if err != nil {
			t.Fatal(err)
		}
		packaged.objects = append(packaged.objects, obj)
	}
	want := one[*monitoringv1.PrometheusRule](t, mustRender(t, []string{"values-production.yaml"}), releaseName).Spec
	if got := one[*monitoringv1.PrometheusRule](t, packaged, releaseName).Spec; !reflect.DeepEqual(got, want) {
		t.Errorf("the packaged chart's PrometheusRule has groups %v, want %v", groupNames(got.Groups), groupNames(want.Groups))
	}
}

func groupNames(groups []monitoringv1.RuleGroup) []string {
	var names []string
	for _, g := range groups {
		names = append(names, fmt.Sprintf("%s(%d)", g.Name, len(g.Rules)))
	}
	return names
}

// TestRenderRefusesWhatCannotWork checks the release fails at render time,
// saying what to set, instead of starting pods that crash or lose data.
func TestRenderRefusesWhatCannotWork(t *testing.T) {
	missingTrust := keyFiles()
	delete(missingTrust, "trust.json")
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   []string
	}{
		{"no keys", nil, []string{"keys.existingSecret", "blueprint keys generate"}},
		{"a key file missing", map[string]any{"keys": map[string]any{"files": missingTrust}}, []string{"keys.files.trust.json"}},
		{"two users replicas on SQLite", map[string]any{"users": map[string]any{"replicas": 2}}, []string{"users", "PostgreSQL", "users.database"}},
		{"orders autoscaled on SQLite", map[string]any{"orders": map[string]any{"autoscaling": map[string]any{"enabled": true}}}, []string{"orders", "PostgreSQL"}},
		{"a webhook without its key", map[string]any{"notifications": map[string]any{"webhook": map[string]any{"url": "https://hooks.example.com/x"}}}, []string{"notifications.webhook.secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := []map[string]any{tc.values}
			if tc.name != "no keys" && tc.name != "a key file missing" {
				values = append([]map[string]any{withKeys()}, values...)
			}
			_, err := render(t, nil, values...)
			if err == nil {
				t.Fatal("rendered; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestDatabaseURLFromValues checks the other way to give a database: a URL
// in the values, which the chart keeps in a Secret of its own, and which
// lets the service run several replicas.
func TestDatabaseURLFromValues(t *testing.T) {
	const url = "postgres://users:pw@db.example.com:5432/users"
	m := mustRender(t, nil, withKeys(), map[string]any{"users": map[string]any{"replicas": 3, "database": map[string]any{"url": url}}})
	ref := secretRef(deploymentOf(t, m, "users").Spec.Template.Spec.Containers[0].Env, "USERS_DATABASE_URL")
	if ref == nil {
		t.Fatal("users: no USERS_DATABASE_URL from a Secret")
	}
	if got := string(one[*corev1.Secret](t, m, ref.Name).Data[ref.Key]); got != url {
		t.Errorf("Secret %s key %s holds %q, want %q", ref.Name, ref.Key, got, url)
	}
	for name, cm := range all[*corev1.ConfigMap](m) {
		for k, v := range cm.Data {
			if strings.Contains(v, "pw@") {
				t.Errorf("ConfigMap %s holds the database password in %s", name, k)
			}
		}
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptr[T any](v T) *T { return &v }

package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test.
const chartDir = "../../deploy/helm/blueprint"

// The release every test renders, as `helm install blueprint … -n shop` would.
const (
	releaseName = "blueprint"
	namespace   = "shop"
)

// kinds are the objects the chart may render, each with the apiVersion it
// must have and the type it must decode into with no field left over.
var kinds = map[string]struct {
	apiVersion string
	new        func() any
}{
	"ConfigMap":               {"v1", func() any { return &corev1.ConfigMap{} }},
	"Secret":                  {"v1", func() any { return &corev1.Secret{} }},
	"Service":                 {"v1", func() any { return &corev1.Service{} }},
	"ServiceAccount":          {"v1", func() any { return &corev1.ServiceAccount{} }},
	"Deployment":              {"apps/v1", func() any { return &appsv1.Deployment{} }},
	"HorizontalPodAutoscaler": {"autoscaling/v2", func() any { return &autoscalingv2.HorizontalPodAutoscaler{} }},
	"PodDisruptionBudget":     {"policy/v1", func() any { return &policyv1.PodDisruptionBudget{} }},
	"NetworkPolicy":           {"networking.k8s.io/v1", func() any { return &networkingv1.NetworkPolicy{} }},
	"Ingress":                 {"networking.k8s.io/v1", func() any { return &networkingv1.Ingress{} }},
	"ServiceMonitor":          {"monitoring.coreos.com/v1", func() any { return &monitoringv1.ServiceMonitor{} }},
	"PrometheusRule":          {"monitoring.coreos.com/v1", func() any { return &monitoringv1.PrometheusRule{} }},
}

// manifest is a rendered release: every object, decoded into its type.
type manifest struct {
	objects []any
}

// render renders the chart as `helm template blueprint -n shop` would, with
// the values files (relative to the chart) and then the values given,
// and decodes every object strictly. A template's `fail` comes back as the
// error.
func render(t *testing.T, files []string, values ...map[string]any) (*manifest, error) {
	t.Helper()
	docs, err := renderChart(t, chartDir, releaseName, chartValues(t, files, values...))
	if err != nil {
		return nil, err
	}
	m := &manifest{}
	for _, doc := range docs {
		obj, err := decode(doc)
		if err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if obj != nil {
			m.objects = append(m.objects, obj)
		}
	}
	return m, nil
}

// chartValues merges the chart's values files (relative to it), then the
// values given, in that order, as helm's -f and --set do.
func chartValues(t *testing.T, files []string, values ...map[string]any) map[string]any {
	t.Helper()
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = filepath.Join(chartDir, f)
	}
	return mergeValues(t, paths, values...)
}

// mergeValues merges values files, then the values given, in that order.
func mergeValues(t *testing.T, files []string, values ...map[string]any) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := loader.LoadValues(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vals = loader.MergeMaps(vals, v)
	}
	for _, v := range values {
		vals = loader.MergeMaps(vals, v)
	}
	return vals
}

// renderChart renders a chart (a directory or a .tgz) with the Helm SDK,
// no cluster involved, and returns its YAML documents.
func renderChart(t *testing.T, dir, release string, vals map[string]any) ([]string, error) {
	t.Helper()
	chrt, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	top, err := util.ToRenderValues(chrt, vals, common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	out, err := engine.Render(chrt, top)
	if err != nil {
		return nil, err
	}
	var docs []string
	for _, name := range slices.Sorted(maps.Keys(out)) {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt
		}
		split := releaseutil.SplitManifests(out[name])
		for _, key := range slices.Sorted(maps.Keys(split)) {
			docs = append(docs, split[key])
		}
	}
	return docs, nil
}

// decode turns one rendered YAML document into its Kubernetes type, failing
// on any field the type does not have, a duplicate key, or a wrong
// apiVersion. An empty document is nil.
func decode(doc string) (any, error) {
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return nil, err
	}
	var head metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &head); err != nil {
		return nil, err
	}
	if head.Kind == "" {
		return nil, nil
	}
	k, ok := kinds[head.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %s: not one the chart is expected to render", head.Kind)
	}
	if head.APIVersion != k.apiVersion {
		return nil, fmt.Errorf("%s: apiVersion %s, want %s", head.Kind, head.APIVersion, k.apiVersion)
	}
	obj := k.new()
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %v", head.Kind, strict)
	}
	return obj, nil
}

// all returns the objects of type T, by name.
func all[T interface{ GetName() string }](m *manifest) map[string]T {
	out := map[string]T{}
	for _, o := range m.objects {
		if v, ok := o.(T); ok {
			out[v.GetName()] = v
		}
	}
	return out
}

// one returns the object of type T with the name, failing the test if
// there is none.
func one[T interface{ GetName() string }](t *testing.T, m *manifest, name string) T {
	t.Helper()
	v, ok := all[T](m)[name]
	if !ok {
		var zero T
		t.Fatalf("no %T named %s", zero, name)
	}
	return v
}

package deploy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ds-blueprint/blueprint/test/deploy/boot"
)

// secrets are the Secrets a release finds in its namespace besides its own
// (the keys, CloudNativePG's), by name, then key.
type secrets map[string]map[string][]byte

// deploymentSpecs turns the release's Deployments into the processes they
// run, one per Deployment (its replicas are alike), in the services' start
// order: the container's arguments; its environment as the kubelet builds
// it, ConfigMaps and Secrets resolved; its volumes; the addresses of its
// ports as the release's Services name them; its readiness probe. A
// construct the conversion does not know fails the test rather than being
// guessed at.
func deploymentSpecs(t *testing.T, m *manifest, cluster secrets) []boot.Spec {
	t.Helper()
	var specs []boot.Spec
	for _, d := range all[*appsv1.Deployment](m) {
		specs = append(specs, deploymentSpec(t, m, cluster, d))
	}
	slices.SortFunc(specs, func(a, b boot.Spec) int {
		return slices.Index(services, a.Name) - slices.Index(services, b.Name)
	})
	return specs
}

func deploymentSpec(t *testing.T, m *manifest, cluster secrets, d *appsv1.Deployment) boot.Spec {
	t.Helper()
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%s: %d containers and %d init containers; the conversion knows one container", d.Name, len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	if len(c.Command) != 0 {
		t.Fatalf("%s: command %q replaces the image's entrypoint, the binary", d.Name, c.Command)
	}
	spec := boot.Spec{
		Name:   d.Spec.Template.Labels["app.kubernetes.io/name"],
		Args:   c.Args,
		Env:    append(boot.ImageEnv(t, dockerfile), containerEnv(t, m, cluster, d.Name, c)...),
		Mounts: map[string]map[string][]byte{},
		Listen: map[string][]string{},
	}
	for _, vm := range c.VolumeMounts {
		v := volume(pod, vm.Name)
		switch {
		case v == nil:
			t.Fatalf("%s: mounts volume %s, which it does not have", d.Name, vm.Name)
		case v.EmptyDir != nil:
			spec.Mounts[vm.MountPath] = nil
		case v.Secret != nil:
			data := secretData(t, m, cluster, v.Secret.SecretName)
			spec.Mounts[vm.MountPath] = projected(t, d.Name, "Secret "+v.Secret.SecretName, data, v.Secret.Items)
		case v.ConfigMap != nil:
			data := map[string][]byte{}
			for k, s := range one[*corev1.ConfigMap](t, m, v.ConfigMap.Name).Data {
				data[k] = []byte(s)
			}
			spec.Mounts[vm.MountPath] = projected(t, d.Name, "ConfigMap "+v.ConfigMap.Name, data, v.ConfigMap.Items)
		default:
			t.Fatalf("%s: volume %s is of a kind the conversion does not know", d.Name, v.Name)
		}
	}
	for _, p := range c.Ports {
		spec.Listen[fmt.Sprintf("0.0.0.0:%d", p.ContainerPort)] = serviceNames(m, d, p)
	}
	probe := c.ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		t.Fatalf("%s: no HTTP readiness probe", d.Name)
	}
	spec.Ready = fmt.Sprintf("http://0.0.0.0:%d%s", containerPort(c, probe.HTTPGet.Port.String()), probe.HTTPGet.Path)
	return spec
}

// containerEnv is the environment the kubelet gives the container: envFrom
// in order, then env, a later variable winning over an earlier one.
func containerEnv(t *testing.T, m *manifest, cluster secrets, deployment string, c corev1.Container) []string {
	t.Helper()
	var env []string
	for _, from := range c.EnvFrom {
		var data map[string][]byte
		switch {
		case from.ConfigMapRef != nil:
			data = map[string][]byte{}
			for k, v := range one[*corev1.ConfigMap](t, m, from.ConfigMapRef.Name).Data {
				data[k] = []byte(v)
			}
		case from.SecretRef != nil:
			data = secretData(t, m, cluster, from.SecretRef.Name)
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			env = append(env, from.Prefix+k+"="+string(data[k]))
		}
	}
	for _, e := range c.Env {
		value := e.Value
		if from := e.ValueFrom; from != nil {
			switch {
			case from.SecretKeyRef != nil:
				v, ok := secretData(t, m, cluster, from.SecretKeyRef.Name)[from.SecretKeyRef.Key]
				if !ok {
					t.Fatalf("%s: %s: Secret %s has no key %s", deployment, e.Name, from.SecretKeyRef.Name, from.SecretKeyRef.Key)
				}
				value = string(v)
			case from.ConfigMapKeyRef != nil:
				v, ok := one[*corev1.ConfigMap](t, m, from.ConfigMapKeyRef.Name).Data[from.ConfigMapKeyRef.Key]
				if !ok {
					t.Fatalf("%s: %s: ConfigMap %s has no key %s", deployment, e.Name, from.ConfigMapKeyRef.Name, from.ConfigMapKeyRef.Key)
				}
				value = v
			default:
				t.Fatalf("%s: %s comes from a source the conversion does not know", deployment, e.Name)
			}
		}
		if strings.Contains(value, "$(") {
			t.Fatalf("%s: %s refers to another variable, which the conversion does not expand", deployment, e.Name)
		}
		env = append(env, e.Name+"="+value)
	}
	return env
}

// secretData is a Secret of the release, or else one of the namespace's.
func secretData(t *testing.T, m *manifest, cluster secrets, name string) map[string][]byte {
	t.Helper()
	if s, ok := all[*corev1.Secret](m)[name]; ok {
		data := maps.Clone(s.Data)
		for k, v := range s.StringData {
			data[k] = []byte(v)
		}
		return data
	}
	if data, ok := cluster[name]; ok {
		return data
	}
	t.Fatalf("Secret %s: neither rendered nor in the namespace", name)
	return nil
}

// projected is what a Secret or ConfigMap volume shows: the items named,
// each a file, or every key.
func projected(t *testing.T, deployment, source string, data map[string][]byte, items []corev1.KeyToPath) map[string][]byte {
	t.Helper()
	if len(items) == 0 {
		return data
	}
	files := map[string][]byte{}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("%s: %s has no key %s to mount", deployment, source, it.Key)
		}
		files[it.Path] = v
	}
	return files
}

// serviceNames are the addresses the release's Services give a container
// port: name:port, in every form a pod of the namespace may write.
func serviceNames(m *manifest, d *appsv1.Deployment, p corev1.ContainerPort) []string {
	var names []string
	for _, s := range all[*corev1.Service](m) {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if target := sp.TargetPort.String(); target != p.Name && target != fmt.Sprint(p.ContainerPort) {
				continue
			}
			for _, host := range []string{s.Name, s.Name + "." + namespace, s.Name + "." + namespace + ".svc", s.Name + "." + namespace + ".svc.cluster.local"} {
				names = append(names, fmt.Sprintf("%s:%d", host, sp.Port))
			}
		}
	}
	return names
}

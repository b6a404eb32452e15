package deploy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ds-blueprint/blueprint/internal/notifications"
	"github.com/ds-blueprint/blueprint/internal/orders"
	"github.com/ds-blueprint/blueprint/internal/users"
)

// trusted is who each service accepts internal tokens from, read from the
// code: the only internal calls the network may carry.
var trusted = map[string][]string{
	"users":         users.TrustedCallers,
	"orders":        orders.TrustedCallers,
	"notifications": notifications.TrustedCallers,
}

// endpoint is one thing on the network: a pod, with its namespace's labels
// and its own, or an address outside the cluster (no namespace).
type endpoint struct {
	name      string
	namespace string
	nsLabels  map[string]string
	labels    map[string]string
	ip        netip.Addr
	ports     []corev1.ContainerPort
	// release is true for the release's pods, the ones its policies select.
	release bool
}

func neighbour(name, namespace string, podLabels map[string]string, ip string, ports ...corev1.ContainerPort) endpoint {
	return endpoint{name: name, namespace: namespace, nsLabels: map[string]string{"kubernetes.io/metadata.name": namespace},
		labels: podLabels, ip: netip.MustParseAddr(ip), ports: ports}
}

func tcp(port int32) corev1.ContainerPort {
	return corev1.ContainerPort{ContainerPort: port, Protocol: corev1.ProtocolTCP}
}

// neighbours are what the release's pods live among, labelled as the
// charts and operators that values.yaml and values-production.yaml name
// label them: DNS, the official NATS chart's servers, CloudNativePG's instances,
// Redis, an OpenTelemetry Collector, Prometheus, an ingress controller, an
// unrelated pod of the same namespace, a client on the internet and a
// webhook receiver.
var neighbours = []endpoint{
	neighbour("kube-dns", "kube-system", map[string]string{"k8s-app": "kube-dns"}, "10.96.0.10",
		corev1.ContainerPort{ContainerPort: 53, Protocol: corev1.ProtocolUDP}, tcp(53)),
	neighbour("nats", namespace, map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"},
		"10.0.1.1", tcp(4222), tcp(6222), tcp(8222)),
	neighbour("postgres", namespace, map[string]string{"cnpg.io/cluster": "pg-users", "cnpg.io/podRole": "instance"}, "10.0.1.2", tcp(5432)),
	neighbour("redis", namespace, map[string]string{"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"}, "10.0.1.3", tcp(6379)),
	neighbour("collector", "observability", map[string]string{"app.kubernetes.io/name": "opentelemetry-collector"}, "10.0.2.1", tcp(4317), tcp(4318)),
	neighbour("prometheus", "monitoring", map[string]string{"app.kubernetes.io/name": "prometheus"}, "10.0.3.1", tcp(9090)),
	neighbour("ingress-nginx", "ingress-nginx", map[string]string{"app.kubernetes.io/name": "ingress-nginx"}, "10.0.4.1", tcp(80), tcp(443)),
	neighbour("stranger", namespace, map[string]string{"app": "stranger"}, "10.0.1.9", tcp(8080)),
	{name: "internet", ip: netip.MustParseAddr("203.0.113.10")},
	{name: "webhook-receiver", ip: netip.MustParseAddr("198.51.100.20"), ports: []corev1.ContainerPort{tcp(443)}},
}

// edge is one connection the policies allow: from → to:port/protocol.
type edge struct {
	from, to string
	port     int32
	protocol corev1.Protocol
}

func (e edge) String() string {
	return fmt.Sprintf("%s → %s:%d/%s", e.from, e.to, e.port, e.protocol)
}

// allowedEdges evaluates the release's NetworkPolicies as the network
// plugin would: a connection is allowed when the policies selecting its
// source let it out (or none selects the source for egress) and those
// selecting its destination let it in (likewise). Only connections to or
// from the release's pods are listed; the neighbours' own policies are not
// the chart's.
func allowedEdges(m *manifest) []edge {
	world := slices.Clone(neighbours)
	for _, d := range all[*appsv1.Deployment](m) {
		name := d.Spec.Template.Labels["app.kubernetes.io/name"]
		world = append(world, endpoint{name: name, namespace: namespace,
			nsLabels: map[string]string{"kubernetes.io/metadata.name": namespace},
			labels:   d.Spec.Template.Labels, ip: netip.MustParseAddr("10.0.0." + fmt.Sprint(len(world))),
			ports: d.Spec.Template.Spec.Containers[0].Ports, release: true})
	}
	policies := slices.Collect(maps.Values(all[*networkingv1.NetworkPolicy](m)))
	var edges []edge
	for _, from := range world {
		for _, to := range world {
			if from.name == to.name || !(from.release || to.release) {
				continue
			}
			for _, p := range to.ports {
				proto := p.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				if allows(policies, networkingv1.PolicyTypeEgress, from, to, p) && allows(policies, networkingv1.PolicyTypeIngress, to, from, p) {
					edges = append(edges, edge{from.name, to.name, p.ContainerPort, proto})
				}
			}
		}
	}
	slices.SortFunc(edges, func(a, b edge) int { return strings.Compare(a.String(), b.String()) })
	return edges
}

// allows reports whether the policies of direction selecting subject let a
// connection to (egress) or from (ingress) peer on port through.
func allows(policies []*networkingv1.NetworkPolicy, direction networkingv1.PolicyType, subject, peer endpoint, port corev1.ContainerPort) bool {
	if !subject.release {
		return true
	}
	selected := false
	for _, np := range policies {
		if np.Namespace != "" && np.Namespace != subject.namespace || !selects(&np.Spec.PodSelector, subject.labels) || !hasType(np, direction) {
			continue
		}
		selected = true
		if direction == networkingv1.PolicyTypeEgress {
			for _, r := range np.Spec.Egress {
				if peersMatch(r.To, subject.namespace, peer) && portsMatch(r.Ports, port) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Ingress {
				if peersMatch(r.From, subject.namespace, peer) && portsMatch(r.Ports, port) {
					return true
				}
			}
		}
	}
	return !selected
}

func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 { // Ingress always, Egress if it has rules
		return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	return slices.Contains(np.Spec.PolicyTypes, t)
}

// peersMatch reports whether a rule's peers, in a policy of namespace ns,
// include ep. No peers means every one.
func peersMatch(peers []networkingv1.NetworkPolicyPeer, ns string, ep endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		switch {
		case p.IPBlock != nil:
			// Pods are matched by their IP too: plugins differ, and the
			// wider reading is the safe one to check.
			if inBlock(p.IPBlock, ep.ip) {
				return true
			}
		case ep.namespace == "":
			// Selectors only ever select pods.
		case p.NamespaceSelector == nil:
			if ep.namespace == ns && selects(p.PodSelector, ep.labels) {
				return true
			}
		default:
			if selects(p.NamespaceSelector, ep.nsLabels) && (p.PodSelector == nil || selects(p.PodSelector, ep.labels)) {
				return true
			}
		}
	}
	return false
}

func selects(sel *metav1.LabelSelector, set map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && sel != nil && s.Matches(labels.Set(set))
}

func inBlock(b *networkingv1.IPBlock, ip netip.Addr) bool {
	in := func(cidr string) bool {
		p, err := netip.ParsePrefix(cidr)
		return err == nil && p.Contains(ip)
	}
	if !in(b.CIDR) {
		return false
	}
	return !slices.ContainsFunc(b.Except, in)
}

// portsMatch reports whether a rule's ports include port. No ports means
// every one; a named port is the destination's port of that name.
func portsMatch(rule []networkingv1.NetworkPolicyPort, port corev1.ContainerPort) bool {
	if len(rule) == 0 {
		return true
	}
	for _, rp := range rule {
		proto := corev1.ProtocolTCP
		if rp.Protocol != nil {
			proto = *rp.Protocol
		}
		if p := port.Protocol; p != "" && p != proto || p == "" && proto != corev1.ProtocolTCP {
			continue
		}
		switch {
		case rp.Port == nil:
			return true
		case rp.Port.StrVal != "":
			if rp.Port.StrVal == port.Name {
				return true
			}
		case rp.EndPort != nil:
			if port.ContainerPort >= rp.Port.IntVal && port.ContainerPort <= *rp.EndPort {
				return true
			}
		case rp.Port.IntVal == port.ContainerPort:
			return true
		}
	}
	return false
}

// TestNetworkPoliciesAllowExactlyTheTrustedCalls evaluates the rendered
// NetworkPolicies and compares every connection they allow to and from
// the release's pods with what the services need: the internal calls of the
// trust lists in the code, DNS, NATS for orders and notifications, the
// databases, Redis, the collector and the webhook receiver when configured,
// Prometheus on the ops ports, and the public API of the gateway. A
// connection missing breaks the system; one extra is a hole.
func TestNetworkPoliciesAllowExactlyTheTrustedCalls(t *testing.T) {
	webhook := map[string]any{"notifications": map[string]any{"webhook": map[string]any{
		"url": "https://hooks.example.com/blueprint", "secret": strings.Repeat("k", 32)}}}
	cases := append(slices.Clone(releases), release{"webhook", nil, loader.MergeMaps(withKeys(), webhook)})
	for _, r := range cases {
		t.Run(r.name, func(t *testing.T) {
			m := mustRender(t, r.files, r.values)
			production := r.name == "production"

			want := map[edge]bool{}
			for callee, callers := range trusted {
				for _, caller := range callers {
					want[edge{caller, callee, ports[callee][0], corev1.ProtocolTCP}] = true
				}
			}
			if len(want) == 0 {
				t.Fatal("no trusted callers read from the code")
			}
			for _, svc := range services {
				want[edge{svc, "kube-dns", 53, corev1.ProtocolUDP}] = true
				want[edge{svc, "kube-dns", 53, corev1.ProtocolTCP}] = true
				want[edge{"prometheus", svc, ports[svc][1], corev1.ProtocolTCP}] = true
				if svc == "orders" || svc == "notifications" {
					want[edge{svc, "nats", 4222, corev1.ProtocolTCP}] = true
				}
				if production {
					want[edge{svc, "collector", 4318, corev1.ProtocolTCP}] = true
					if svc != "gateway" {
						want[edge{svc, "postgres", 5432, corev1.ProtocolTCP}] = true
					}
				}
			}
			if production {
				want[edge{"gateway", "redis", 6379, corev1.ProtocolTCP}] = true
				want[edge{"ingress-nginx", "gateway", 3001, corev1.ProtocolTCP}] = true
			} else {
				// The defaults let anyone call the public API.
				for _, n := range neighbours {
					want[edge{n.name, "gateway", 3001, corev1.ProtocolTCP}] = true
				}
			}
			if r.name == "webhook" {
				want[edge{"notifications", "webhook-receiver", 443, corev1.ProtocolTCP}] = true
			}

			got := allowedEdges(m)
			var lines []string
			for _, e := range got {
				lines = append(lines, e.String())
				if !want[e] {
					t.Errorf("allowed, and should not be: %s", e)
				}
				delete(want, e)
			}
			for e := range want {
				t.Errorf("not allowed, and should be: %s", e)
			}
			t.Logf("connections the %s release's NetworkPolicies allow:\n  %s", r.name, strings.Join(lines, "\n  "))
		})
	}
}

package observability

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string      `json:"name"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string      `json:"name"`
			Datasource *datasource `json:"datasource"`
			Expr       string      `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
		Expr       string      `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// query is one PromQL expression shipped in a dashboard or a rule file,
// and where it comes from.
type query struct {
	where, expr string
}

func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s is not valid JSON: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// allPanels flattens rows: a collapsed row keeps its panels inside it.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// provisionedDatasources returns the datasources' uids by type, and every
// uid the provisioning file itself links to (exemplars, trace to logs…).
func provisionedDatasources(t *testing.T) (uids map[string]string, links []string) {
	t.Helper()
	data, err := os.ReadFile("grafana/provisioning/datasources/datasources.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Datasources []struct {
			UID      string         `yaml:"uid"`
			Type     string         `yaml:"type"`
			JSONData map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	uids = map[string]string{}
	for _, d := range f.Datasources {
		if d.UID == "" {
			t.Errorf("datasource of type %s has no fixed uid", d.Type)
		}
		uids[d.UID] = d.Type
		links = append(links, linkedUIDs(d.JSONData)...)
	}
	return uids, links
}

// linkedUIDs finds every datasourceUid in a datasource's jsonData.
func linkedUIDs(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "datasourceUid" {
				out = append(out, s)
			}
			out = append(out, linkedUIDs(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, linkedUIDs(x)...)
		}
	}
	return out
}

func TestDashboards(t *testing.T) {
	uids, links := provisionedDatasources(t)
	for _, want := range []string{"prometheus", "tempo", "loki"} {
		if _, ok := uids[want]; !ok {
			t.Errorf("datasources provision %v, want one with uid %q", uids, want)
		}
	}
	for _, l := range links {
		if _, ok := uids[l]; !ok {
			t.Errorf("a datasource links to uid %q, which is not provisioned", l)
		}
	}
	known := func(where string, ds *datasource) {
		t.Helper()
		if ds == nil {
			return
		}
		if typ, ok := uids[ds.UID]; !ok || typ != ds.Type {
			t.Errorf("%s uses datasource %+v; provisioned: %v", where, *ds, uids)
		}
	}
	seen := map[string]string{}
	for file, d := range loadDashboards(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q, title %q; want both", file, d.UID, d.Title)
		}
		if other, dup := seen[d.UID]; dup {
			t.Errorf("%s and %s share the uid %q", file, other, d.UID)
		}
		seen[d.UID] = file
		ids := map[int]bool{}
		for _, p := range allPanels(d.Panels) {
			where := file + ": panel " + p.Title
			if ids[p.ID] {
				t.Errorf("%s: id %d is used twice", where, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			known(where, p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("%s has no query", where)
			}
			for _, tg := range p.Targets {
				known(where, tg.Datasource)
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: query %s is empty", where, tg.RefID)
				}
			}
		}
		for _, v := range d.Templating.List {
			known(file+": variable "+v.Name, v.Datasource)
		}
		for _, a := range d.Annotations.List {
			known(file+": annotation "+a.Name, a.Datasource)
		}
	}
	if len(seen) < 4 {
		t.Errorf("%d dashboards, want overview, gateway, events and runtime", len(seen))
	}
}

// rule is one recording or alerting rule of rules/*.yml.
type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t *testing.T) (rules []rule, files []string) {
	t.Helper()
	files, err := filepath.Glob("prometheus/rules/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []struct {
				Rules []rule `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(data, &rf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range rf.Groups {
			rules = append(rules, g.Rules...)
		}
	}
	return rules, files
}

// TestAlertsHaveRunbooks holds every alert to a summary, a description and
// a runbook link to a section that exists in docs/observability.md.
func TestAlertsHaveRunbooks(t *testing.T) {
	doc, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	heading := regexp.MustCompile(`(?m)^#+ (.+)$`)
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, m := range heading.FindAllStringSubmatch(string(doc), -1) {
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		anchors[a] = true
	}
	rules, _ := loadRules(t)
	var alerts []string
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		alerts = append(alerts, r.Alert)
		for _, k := range []string{"summary", "description", "runbook"} {
			if r.Annotations[k] == "" {
				t.Errorf("alert %s has no %s annotation", r.Alert, k)
			}
		}
		_, anchor, ok := strings.Cut(r.Annotations["runbook"], "docs/observability.md#")
		if !ok || !anchors[anchor] {
			t.Errorf("alert %s: runbook %q is not a section of docs/observability.md", r.Alert, r.Annotations["runbook"])
		}
	}
	for _, want := range []string{"BlueprintHighErrorRatio", "BlueprintHighLatency", "BlueprintBreakerOpen", "BlueprintReplicaEjected", "BlueprintOutboxStale",
		"BlueprintDeadLetters", "BlueprintErrorBudgetBurnFast", "BlueprintErrorBudgetBurnSlow", "BlueprintLatencyObjectiveMissed"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts %v, want %s among them", alerts, want)
		}
	}
}

// TestPromtool runs Prometheus's own checks: the config, the rules, and
// the rules' unit tests (prometheus/tests), which make every alert fire
// and stay quiet.
func TestPromtool(t *testing.T) {
	promtool := lookPath(t, "promtool")
	tests, _ := filepath.Glob("prometheus/tests/*.yml")
	_, rules := loadRules(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"check config", []string{"check", "config", "prometheus.yml"}},
		// Compose's variant: the same rules, targets found by DNS.
		{"check Compose's config", []string{"check", "config", "../../compose/prometheus.yml"}},
		{"check rules", append([]string{"check", "rules"}, trimDir(rules)...)},
		{"test rules", append([]string{"test", "rules"}, trimDir(tests)...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(promtool, c.args...)
			cmd.Dir = "prometheus"
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(c.args, " "), err, out)
			}
		})
	}
}

// trimDir makes paths under prometheus/ relative to it.
func trimDir(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = strings.TrimPrefix(p, "prometheus/")
	}
	return out
}

// lookPath finds a Prometheus tool or skips the test: CI (.ci/run)
// installs them, a laptop may not have them.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not on PATH (apt-get install prometheus); skipping", name)
	}
	return p
}

// prometheusQueries lists every PromQL expression of the dashboards (the
// Prometheus datasource's targets and annotations) and of the rules.
func prometheusQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for file, d := range loadDashboards(t) {
		for _, p := range allPanels(d.Panels) {
			for _, tg := range p.Targets {
				ds := tg.Datasource
				if ds == nil {
					ds = p.Datasource
				}
				if ds != nil && ds.Type == "prometheus" {
					qs = append(qs, query{file + ": " + p.Title + " " + tg.RefID, grafanaVars.Replace(tg.Expr)})
				}
			}
		}
		for _, a := range d.Annotations.List {
			if a.Datasource != nil && a.Datasource.Type == "prometheus" {
				qs = append(qs, query{file + ": annotation " + a.Name, grafanaVars.Replace(a.Expr)})
			}
		}
	}
	rules, _ := loadRules(t)
	for _, r := range rules {
		if r.Record != "" {
			qs = append(qs, query{"recording rule " + r.Record, r.Expr}, query{"recorded series " + r.Record, r.Record})
			continue
		}
		qs = append(qs, query{"alert " + r.Alert, comparisonsAsBool(r.Expr)})
	}
	slices.SortFunc(qs, func(a, b query) int { return strings.Compare(a.where, b.where) })
	return qs
}

// grafanaVars gives Grafana's variables concrete values: every service,
// and a rate window that spans several of the test's 1 s scrapes.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "15s",
	"$__range", "10m",
	"${service}", ".+",
	"$service", ".+",
)

// comparisonsAsBool turns an alert's filtering comparisons with a number
// (`> 0.05`, `== 2`) into `bool` ones, which keep every series as 0 or 1:
// the expression then returns data whenever the series it reads exist,
// whether or not the alert would fire.
func comparisonsAsBool(expr string) string {
	return comparison.ReplaceAllString(expr, "$1 bool $2")
}

var comparison = regexp.MustCompile(`(==|!=|>=|<=|>|<)\s*([0-9][0-9.eE+-]*)`)

func TestComparisonsAsBool(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`x > 0.05`, `x > bool 0.05`},
		{`max by (a) (x) == 2`, `max by (a) (x) == bool 2`},
		{`a{b!="1"} >= 1e3 and c < 4`, `a{b!="1"} >= bool 1e3 and c < bool 4`},
		{`x{le=~"0.5"}`, `x{le=~"0.5"}`},
	} {
		if got := comparisonsAsBool(c.in); got != c.want {
			t.Errorf("comparisonsAsBool(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const dashboardFile = "grafana/sse-gateway.json"

type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *panelDatasource         `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		Datasource *panelDatasource `json:"datasource"`
		Expr       string           `json:"expr"`
		RefID      string           `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

type panelDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

// allPanels flattens rows.
func (d *dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// templateQueries returns the PromQL (or label_values) queries of query variables.
func (d *dashboard) templateQueries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("variable %s: query is neither an object nor a string", v.Name)
			}
			q.Query = s
		}
		out["variable "+v.Name] = q.Query
	}
	return out
}

// panelExprs returns every panel query, keyed by panel title and refId.
func (d *dashboard) panelExprs() map[string]string {
	out := map[string]string{}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("panel %d %q %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	return out
}

var grafanaBuiltins = map[string]bool{"__rate_interval": true, "__interval": true, "__range": true, "__range_s": true, "__interval_ms": true}

func TestGrafanaDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Error("dashboard needs a title and a uid (stable links, provisioning)")
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current dashboard schema (>= 36)", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Error("no datasource variable: panels would be tied to one Prometheus data source uid")
	}
	ids := map[int]string{}
	rows := 0
	for _, p := range d.allPanels() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q gridPos %+v outside the 24-column grid", p.Title, g)
		}
		if p.Type == "row" {
			rows++
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q/%q needs an expr and a unique refId", p.Title, tg.RefID, tg.Expr)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource uid %q, want ${datasource}", p.Title, tg.RefID, tg.Datasource.UID)
			}
		}
	}
	if rows == 0 || len(ids)-rows < 10 {
		t.Errorf("%d rows and %d panels: want a dashboard organised in rows", rows, len(ids)-rows)
	}
	// Every $variable a query uses is defined.
	varRef := regexp.MustCompile(`\$\{?(\w+)`)
	exprs := d.panelExprs()
	for k, v := range d.templateQueries(t) {
		exprs[k] = v
	}
	for where, e := range exprs {
		for _, m := range varRef.FindAllStringSubmatch(e, -1) {
			if _, ok := vars[m[1]]; !ok && !grafanaBuiltins[m[1]] {
				t.Errorf("%s uses undefined variable $%s", where, m[1])
			}
		}
	}
}

func TestGrafanaDashboardUsesExportedMetrics(t *testing.T) {
	d := loadDashboard(t)
	exprs := d.panelExprs()
	for k, v := range d.templateQueries(t) {
		exprs[k] = v
	}
	checkReferences(t, "dashboard", exprs, exportedMetrics(t))
}

// TestGrafanaDashboardPromtool checks the syntax of every panel query with promtool, as
// recording rules with the Grafana variables replaced by plausible values.
func TestGrafanaDashboardPromtool(t *testing.T) {
	pt := promtool(t)
	d := loadDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
		"$job", ".*", "${job}", ".*", "$instance", ".*", "${instance}", ".*")
	type rec struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rec
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			rules = append(rules, rec{fmt.Sprintf("dashboard:panel_%d:%s", p.ID, tg.RefID), vars.Replace(tg.Expr)})
		}
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, ".", pt, "check", "rules", f)
}

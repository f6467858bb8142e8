package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	"sigs.k8s.io/yaml"
)

const (
	alertsFile     = "prometheus/alerts.yml"
	alertsTestFile = "prometheus/alerts_test.yml"
)

// ruleFile is the Prometheus rule file format (rulefmt), decoded strictly: an unknown
// key (a typo such as `annotation:`) fails.
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert         string            `json:"alert,omitempty"`
	Record        string            `json:"record,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func loadAlerts(t *testing.T) map[string]rule {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	alerts := map[string]rule{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("%s: rule %q is not an alert", alertsFile, r.Record)
				continue
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("%s: alert %s defined twice", alertsFile, r.Alert)
			}
			alerts[r.Alert] = r
		}
	}
	return alerts
}

// promtool returns the path of promtool or fails: the rules are validated by it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run scripts/ops-deps (installs Debian's prometheus package, which ships promtool)")
	}
	return p
}

func runTool(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

func TestPrometheusAlertsStructure(t *testing.T) {
	alerts := loadAlerts(t)
	want := []string{
		"SSEGatewayNotReady", "SSEGatewayRedisDisconnected", "SSEGatewayRedisProbeFailing",
		"SSEGatewaySlowClosesSpike", "SSEGatewayMalformedEvents", "SSEGatewayStreamsNearMax",
		"SSEGatewayFanoutLatencyHigh", "SSEGatewayReconnectStorm",
	}
	for _, w := range want {
		if _, ok := alerts[w]; !ok {
			t.Errorf("no alert %s", w)
		}
	}
	for name, r := range alerts {
		if !strings.HasPrefix(name, "SSEGateway") {
			t.Errorf("alert %s: name should start with SSEGateway", name)
		}
		switch r.Labels["severity"] {
		case "critical", "warning", "info":
		default:
			t.Errorf("alert %s: severity %q, want critical, warning or info", name, r.Labels["severity"])
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: no %s annotation", name, a)
			}
		}
		if r.For != "" {
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q: %v", name, r.For, err)
			}
		}
	}
}

// unitTests is the part of promtool's unit test format that this test reads.
type unitTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `json:"exp_labels"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestPrometheusRulesPromtool runs `promtool check rules` and `promtool test rules`.
// alerts_test.yml leaves out exp_annotations (they would repeat every annotation of
// alerts.yml); this test renders them from alerts.yml for each expected alert's labels,
// as Prometheus does, and runs promtool on that completed copy.
func TestPrometheusRulesPromtool(t *testing.T) {
	pt := promtool(t)
	runTool(t, ".", pt, "check", "rules", alertsFile)

	alerts := loadAlerts(t)
	raw, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var typed unitTests
	if err := yaml.Unmarshal(raw, &typed); err != nil {
		t.Fatal(err)
	}
	if len(typed.RuleFiles) != 1 || typed.RuleFiles[0] != filepath.Base(alertsFile) {
		t.Fatalf("%s rule_files %v, want [%s]", alertsTestFile, typed.RuleFiles, filepath.Base(alertsFile))
	}
	// Every alert fires in some test and is checked quiet in some test.
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range typed.Tests {
		for _, a := range tc.AlertRuleTest {
			if _, ok := alerts[a.Alertname]; !ok {
				t.Errorf("%s tests unknown alert %s", alertsTestFile, a.Alertname)
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for name := range alerts {
		if !fires[name] {
			t.Errorf("%s: no test where %s fires", alertsTestFile, name)
		}
		if !quiet[name] {
			t.Errorf("%s: no test where %s stays quiet", alertsTestFile, name)
		}
	}

	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range asList(doc["tests"]) {
		for _, art := range asList(asMap(tc)["alert_rule_test"]) {
			name, _ := asMap(art)["alertname"].(string)
			r := alerts[name]
			for _, ea := range asList(asMap(art)["exp_alerts"]) {
				labels := map[string]string{}
				for k, v := range asMap(asMap(ea)["exp_labels"]) {
					if _, static := r.Labels[k]; !static {
						labels[k] = fmt.Sprint(v)
					}
				}
				ann := map[string]any{}
				for k, text := range r.Annotations {
					s, err := renderAnnotation(text, labels)
					if err != nil {
						t.Fatalf("alert %s annotation %s: %v", name, k, err)
					}
					ann[k] = s
				}
				asMap(ea)["exp_annotations"] = ann
			}
		}
	}
	completed, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"alerts_test.yml": completed} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(alertsFile, filepath.Join(dir, filepath.Base(alertsFile))); err != nil {
		t.Fatal(err)
	}
	runTool(t, dir, pt, "test", "rules", "alerts_test.yml")
}

// renderAnnotation expands an annotation template as Prometheus does for an alert whose
// expression produced labels. $value is not known here, so a template using it fails.
func renderAnnotation(text string, labels map[string]string) (string, error) {
	tmpl, err := template.New("annotation").Option("missingkey=zero").Parse(
		"{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}" + text)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, struct {
		Labels, ExternalLabels map[string]string
		ExternalURL            string
	}{labels, map[string]string{}, ""})
	return b.String(), err
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func TestPrometheusAlertsUseExportedMetrics(t *testing.T) {
	alerts := loadAlerts(t)
	exprs := map[string]string{}
	var names []string
	for name, r := range alerts {
		exprs[name] = r.Expr
		names = append(names, name)
	}
	sort.Strings(names)
	checkReferences(t, "alert", exprs, exportedMetrics(t))
}

package deploy

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// A PromQL reader just deep enough to list the series selectors of an expression: the
// metric names, and the label matchers written on them. Syntax itself is promtool's job
// (TestPrometheusRulesPromtool checks the alerts and every dashboard query).

// matcher is one label matcher inside {...}.
type matcher struct {
	name, op, value string
}

// selectorRef is one series selector of an expression.
type selectorRef struct {
	metric   string
	matchers []matcher
}

// promqlKeywords are identifiers that are not metric names.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
	"atan2": true, "start": true, "end": true,
}

// promqlAggregations may put by/without before their arguments: `sum by (x) (...)`.
var promqlAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// promqlLabelLists are keywords followed by a parenthesised list of label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string literal starting at s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d", i)
}

// selectors lists the series selectors of a PromQL expression. Grafana's
// label_values(selector, label) is read as its selector.
func selectors(expr string) ([]selectorRef, error) {
	if inner, ok := strings.CutPrefix(strings.TrimSpace(expr), "label_values("); ok {
		inner = strings.TrimSuffix(strings.TrimSpace(inner), ")")
		if i := strings.LastIndex(inner, ","); i >= 0 {
			inner = inner[:i]
		} else {
			return nil, nil // label_values(label): no selector
		}
		expr = inner
	}
	var out []selectorRef
	s := expr
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated [ at %d in %q", i, expr)
			}
			i += j + 1
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				i++
			}
		case c == '$':
			// A Grafana variable outside a selector (e.g. $__range as a duration).
			i++
			for i < len(s) && isIdentChar(s[i]) {
				i++
			}
		case c == '{':
			end, ms, err := readMatchers(s, i)
			if err != nil {
				return nil, fmt.Errorf("%w in %q", err, expr)
			}
			ref := selectorRef{}
			for _, m := range ms {
				if m.name == "__name__" && m.op == "=" {
					ref.metric = m.value
				} else {
					ref.matchers = append(ref.matchers, m)
				}
			}
			out = append(out, ref)
			i = end
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word := s[i:j]
			k := skipSpace(s, j)
			switch {
			case promqlLabelLists[strings.ToLower(word)]:
				i = j
				if k < len(s) && s[k] == '(' {
					e := strings.IndexByte(s[k:], ')')
					if e < 0 {
						return nil, fmt.Errorf("unterminated label list in %q", expr)
					}
					i = k + e + 1
				}
			case promqlKeywords[strings.ToLower(word)], promqlAggregations[strings.ToLower(word)]:
				i = j
			case k < len(s) && s[k] == '(':
				i = k // a function or aggregation: its arguments are read next
			default:
				ref := selectorRef{metric: word}
				i = j
				if k < len(s) && s[k] == '{' {
					end, ms, err := readMatchers(s, k)
					if err != nil {
						return nil, fmt.Errorf("%w in %q", err, expr)
					}
					ref.matchers, i = ms, end
				}
				out = append(out, ref)
			}
		default:
			i++
		}
	}
	return out, nil
}

// readMatchers reads {...} at s[i] and returns the index after it.
func readMatchers(s string, i int) (int, []matcher, error) {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			e, err := skipString(s, j)
			if err != nil {
				return 0, nil, err
			}
			j = e - 1
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				ms, err := parseMatchers(s[i+1 : j])
				return j + 1, ms, err
			}
		}
	}
	return 0, nil, fmt.Errorf("unterminated { at %d", i)
}

// parseMatchers reads `a="x", b=~"y"` (the inside of {...}, also of an exposition line).
func parseMatchers(s string) ([]matcher, error) {
	var out []matcher
	i := 0
	for {
		i = skipSpace(s, i)
		if i >= len(s) {
			return out, nil
		}
		j := i
		for j < len(s) && isIdentChar(s[j]) {
			j++
		}
		if j == i {
			return nil, fmt.Errorf("bad matcher at %q", s[i:])
		}
		m := matcher{name: s[i:j]}
		j = skipSpace(s, j)
		for _, op := range []string{"=~", "!~", "!=", "="} {
			if strings.HasPrefix(s[j:], op) {
				m.op = op
				break
			}
		}
		if m.op == "" {
			return nil, fmt.Errorf("bad matcher operator at %q", s[j:])
		}
		j = skipSpace(s, j+len(m.op))
		if j >= len(s) || (s[j] != '"' && s[j] != '\'' && s[j] != '`') {
			return nil, fmt.Errorf("matcher %s without a quoted value", m.name)
		}
		e, err := skipString(s, j)
		if err != nil {
			return nil, err
		}
		m.value = unquote(s[j+1 : e-1])
		out = append(out, m)
		i = skipSpace(s, e)
		if i < len(s) && s[i] == ',' {
			i++
		}
	}
}

func unquote(s string) string {
	return strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n").Replace(s)
}

// targetLabels are added by Prometheus (and Kubernetes service discovery relabelling),
// not by the exporter: a matcher on them is not checked against the scrape.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "container": true, "service": true}

// checkReferences fails t for every selector of exprs that names a metric the gateway
// does not export, or matches a label value that no exported series has.
func checkReferences(t *testing.T, what string, exprs map[string]string, s scrape) {
	t.Helper()
	var names []string
	for n := range exprs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, where := range names {
		refs, err := selectors(exprs[where])
		if err != nil {
			t.Errorf("%s %s: %v", what, where, err)
			continue
		}
		if len(refs) == 0 && !strings.HasPrefix(strings.TrimSpace(exprs[where]), "label_values(") && !strings.Contains(exprs[where], "vector(") {
			t.Errorf("%s %s: no metric in %q", what, where, exprs[where])
		}
		for _, r := range refs {
			series, ok := s[r.metric]
			if !ok {
				t.Errorf("%s %s: metric %q is not exported by the gateway", what, where, r.metric)
				continue
			}
			for _, m := range r.matchers {
				if targetLabels[m.name] || m.op != "=" {
					continue
				}
				has, hasLabel := false, false
				for _, l := range series {
					v, ok := l[m.name]
					hasLabel = hasLabel || ok
					has = has || v == m.value
				}
				switch {
				case !hasLabel:
					t.Errorf("%s %s: %s has no label %q", what, where, r.metric, m.name)
				case !has:
					t.Errorf("%s %s: no %s series has %s=%q", what, where, r.metric, m.name, m.value)
				}
			}
		}
	}
}

func TestPromQLSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want string
	}{
		{`sse_gateway_ready == 0`, `sse_gateway_ready`},
		{`sum without (reason) (rate(sse_gateway_stream_closes_total{reason="slow", job=~"$job"}[5m])) > 0.1`,
			`sse_gateway_stream_closes_total{reason="slow",job=~"$job"}`},
		{`histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="}"}[$__rate_interval])))`, `x_bucket{a="}"}`},
		{`a / on (instance) group_left sum by (instance) (b) and c offset 5m`, `a b c`},
		{`label_values(sse_gateway_build_info{job=~"$job"}, instance)`, `sse_gateway_build_info{job=~"$job"}`},
		{`label_values(job)`, ``},
		{`{__name__="m", x="1"}`, `m{x="1"}`},
		{`count(up == 0) or vector(0)`, `up`},
	} {
		refs, err := selectors(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, r := range refs {
			s := r.metric
			if len(r.matchers) > 0 {
				var ms []string
				for _, m := range r.matchers {
					ms = append(ms, m.name+m.op+fmt.Sprintf("%q", m.value))
				}
				s += "{" + strings.Join(ms, ",") + "}"
			}
			got = append(got, s)
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("selectors(%s) = %s, want %s", tc.expr, g, tc.want)
		}
	}
}

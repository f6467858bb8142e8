package main

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/result"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

const (
	gateway  = "gateway"
	baseline = "baseline"
)

// cell is one server's figure for one row: the median over repeats of the
// runs where the figure is defined, or a note when it is not.
type cell struct {
	median   float64
	min, max float64
	n        int
	note     string // non-empty: the figure is undefined (e.g. "stalled: 0% delivered")
}

func (c cell) ok() bool { return c.note == "" && c.n > 0 }

func (c cell) format(digits int) string {
	if c.n == 0 && c.note == "" {
		return "–"
	}
	if c.note != "" {
		return c.note
	}
	s := fmtNum(c.median, digits)
	if c.n > 1 {
		s += fmt.Sprintf(" <sub>(%s–%s, n=%d)</sub>", fmtNum(c.min, digits), fmtNum(c.max, digits), c.n)
	}
	return s
}

func fmtNum(v float64, digits int) string {
	if math.Abs(v) >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.*f", digits, v)
}

// value extracts a figure from one run; a non-empty note means "undefined".
type value func(s result.Summary) (float64, string)

func collect(rs []run, v value) cell {
	var vals []float64
	var c cell
	for _, r := range rs {
		x, note := v(r.s)
		if note != "" {
			c.note = note // one undefined run makes the figure undefined: say so, do not hide it
			continue
		}
		vals = append(vals, x)
	}
	if len(vals) > 0 {
		c.median = stats.Median(vals)
		c.min, c.max = vals[0], vals[0]
		for _, x := range vals {
			c.min, c.max = math.Min(c.min, x), math.Max(c.max, x)
		}
		c.n = len(vals)
	}
	return c
}

// Figures picked from a summary.
func perConnKiB(s result.Summary) (float64, string) {
	if s.Server == nil {
		return 0, "no --server-pid"
	}
	return s.Server.PerConnKiB, ""
}

func needPublish(s result.Summary) (*result.Publish, string) {
	p := s.Publish
	if p == nil || p.Publishes == 0 {
		return nil, "no publishes"
	}
	if p.Delivered < p.Expected {
		return nil, fmt.Sprintf("stalled: %.1f%% delivered", 100*p.DeliveredFraction)
	}
	return p, ""
}

// publishFigure is a figure of the publish phase, undefined (needPublish's note) when the
// run did not publish or did not deliver every event.
func publishFigure(s result.Summary, pick func(p *result.Publish) float64) (float64, string) {
	p, note := needPublish(s)
	if p == nil {
		return 0, note
	}
	return pick(p), ""
}

func lastP99(s result.Summary) (float64, string) {
	return publishFigure(s, func(p *result.Publish) float64 { return p.LastDelivery.P99 })
}

func lastP50(s result.Summary) (float64, string) {
	return publishFigure(s, func(p *result.Publish) float64 { return p.LastDelivery.P50 })
}

func latP50(s result.Summary) (float64, string) {
	return publishFigure(s, func(p *result.Publish) float64 { return p.Latency.P50 })
}

func latP99(s result.Summary) (float64, string) {
	return publishFigure(s, func(p *result.Publish) float64 { return p.Latency.P99 })
}

func latMax(s result.Summary) (float64, string) {
	return publishFigure(s, func(p *result.Publish) float64 { return p.Latency.Max })
}

func deliveredPct(s result.Summary) (float64, string) {
	if s.Publish == nil {
		return 0, "no publishes"
	}
	return 100 * s.Publish.DeliveredFraction, ""
}

func connectRate(s result.Summary) (float64, string) { return s.Connect.RatePerS, "" }

func connectFailures(s result.Summary) (float64, string) { return float64(s.Connect.Failed), "" }

func connectP99(s result.Summary) (float64, string) { return s.Connect.Latency.P99, "" }

func cpuPerDelivery(s result.Summary) (float64, string) {
	if s.Server == nil || s.Server.CPUPerDeliveryUs == 0 {
		return 0, "not measured"
	}
	return s.Server.CPUPerDeliveryUs, ""
}

func cpuPerPublish(s result.Summary) (float64, string) {
	if s.Server == nil || s.Server.CPUPerPublishUs == 0 {
		return 0, "not measured"
	}
	return s.Server.CPUPerPublishUs, ""
}

func cpuPerConnect(s result.Summary) (float64, string) {
	if s.Server == nil {
		return 0, "not measured"
	}
	return s.Server.CPUPerConnectUs, ""
}

func rssMaxMiB(s result.Summary) (float64, string) {
	if s.Server == nil {
		return 0, "not measured"
	}
	return float64(s.Server.RSSMax) / (1 << 20), ""
}

func slowClosed(s result.Summary) (float64, string) {
	if s.Publish == nil {
		return 0, "no publishes"
	}
	return float64(s.Publish.ClosedSlow), ""
}

// row is one line of the headline table.
type row struct {
	label    string
	target   string
	scenario string
	v        value
	digits   int
	ratio    bool                            // print gateway/baseline
	verdict  func(g, b cell, rs runs) string // "met", "missed", or "" (informational)
}

func ratioOf(g, b cell) (float64, bool) {
	if !g.ok() || !b.ok() || b.median == 0 {
		return 0, false
	}
	return g.median / b.median, true
}

// ratioAtMost is the verdict of a "≤ k × baseline" target; a gateway figure
// beside an undefined baseline one (the baseline stalled) meets it.
func ratioAtMost(k float64) func(g, b cell, rs runs) string {
	return func(g, b cell, _ runs) string {
		r, ok := ratioOf(g, b)
		if !ok {
			if g.ok() && !b.ok() {
				return "met (baseline undefined)"
			}
			return "missed"
		}
		return verdict(r <= k)
	}
}

// rows are issue 12's targets; floorUs is the 1000-socket write(2) floor
// measured in the same run (0: not measured).
func rows(rs runs, floorUs float64) []row {
	atMost := func(limit float64) func(g, b cell, rs runs) string {
		return func(g, _ cell, _ runs) string {
			if !g.ok() {
				return "missed"
			}
			return verdict(g.median <= limit)
		}
	}
	cpuTarget := "≤ 1.3 × floor"
	cpuVerdict := func(g, _ cell, _ runs) string {
		if !g.ok() || floorUs <= 0 {
			return "missed (no floor measured)"
		}
		return fmt.Sprintf("%s (%.2f× the %.2f µs floor)", verdict(g.median <= 1.3*floorUs), g.median/floorUs, floorUs)
	}
	out := []row{
		{label: "Idle RSS per connection (KiB)", target: "≤ 3 KiB", scenario: "fanout", v: perConnKiB, digits: 2, ratio: true, verdict: atMost(3)},
		{label: "1 ch × N: last delivery, p99 over 20 publishes (ms)", target: "≤ 0.8 × baseline", scenario: "fanout", v: lastP99, digits: 1, ratio: true, verdict: ratioAtMost(0.8)},
		{label: "1 ch × N: last delivery, median publish (ms)", scenario: "fanout", v: lastP50, digits: 1, ratio: true},
		{label: "1 ch × N: delivery latency p50 (ms)", scenario: "fanout", v: latP50, digits: 1, ratio: true},
		{label: "1 ch × N: delivery latency p99 (ms)", scenario: "fanout", v: latP99, digits: 1, ratio: true},
		{label: "100 ch × N/100: delivery latency p99 (ms)", target: "≤ 0.7 × baseline", scenario: "channels", v: latP99, digits: 2, ratio: true, verdict: ratioAtMost(0.7)},
		{label: "100 ch × N/100: delivery latency max (ms)", scenario: "channels", v: latMax, digits: 1, ratio: true},
		{label: "Connect storm: rate (streams/s)", target: "≥ 1.5 × baseline", scenario: "storm", v: connectRate, digits: 0, ratio: true,
			verdict: func(g, b cell, _ runs) string {
				r, ok := ratioOf(g, b)
				return verdict(ok && r >= 1.5)
			}},
		{label: "Connect storm: failures", target: "0", scenario: "storm", v: connectFailures, digits: 0, verdict: func(g, _ cell, _ runs) string {
			return verdict(g.ok() && g.max == 0)
		}},
		{label: "Connect storm: connect latency p99 (ms)", scenario: "storm", v: connectP99, digits: 1, ratio: true},
		{label: "Connect storm: CPU per accepted stream (µs)", target: "≤ 0.5 × baseline", scenario: "storm", v: cpuPerConnect, digits: 0, ratio: true, verdict: ratioAtMost(0.5)},
		{label: "10% slow: readers' delivery p99 (ms)", target: "≤ 1.2 × own 100-ch p99", scenario: "slow", v: latP99, digits: 2, ratio: true,
			verdict: func(g, _ cell, rs runs) string {
				ref := collect(rs.get(gateway, "channels"), latP99)
				if !g.ok() || !ref.ok() {
					return "missed"
				}
				return fmt.Sprintf("%s (%.2f×)", verdict(g.median <= 1.2*ref.median), g.median/ref.median)
			}},
		{label: "10% slow: delivered to readers (%)", target: "100", scenario: "slow", v: deliveredPct, digits: 1,
			verdict: func(g, _ cell, _ runs) string { return verdict(g.ok() && g.min >= 100) }},
		{label: "10% slow: server RSS max (MiB)", target: "bounded", scenario: "slow", v: rssMaxMiB, digits: 0, ratio: true},
		{label: "10% slow: slow streams closed by the server", scenario: "slow", v: slowClosed, digits: 0},
		{label: "1 ch × N: CPU per delivery (µs)", target: cpuTarget, scenario: "fanout", v: cpuPerDelivery, digits: 2, ratio: true, verdict: cpuVerdict},
	}
	for _, rate := range smallfanRates(rs) {
		scen := smallfanScenario(rate)
		out = append(out,
			row{label: fmt.Sprintf("Small fan-outs at %d/s: CPU per publish (µs)", rate), target: "≤ 0.8 × baseline", scenario: scen, v: cpuPerPublish, digits: 1, ratio: true, verdict: ratioAtMost(0.8)},
			row{label: fmt.Sprintf("Small fan-outs at %d/s: delivery latency p99 (ms)", rate), target: "≤ baseline", scenario: scen, v: latP99, digits: 2, ratio: true, verdict: ratioAtMost(1)},
			row{label: fmt.Sprintf("Small fan-outs at %d/s: delivered (%%)", rate), target: "100", scenario: scen, v: deliveredPct, digits: 2,
				verdict: func(g, _ cell, _ runs) string { return verdict(g.ok() && g.min >= 100) }},
		)
	}
	return out
}

// The small fan-outs scenario is one run per publish rate, named
// smallfan<rate> by scripts/bench.
const smallfanPrefix = "smallfan"

func smallfanScenario(rate int) string { return smallfanPrefix + strconv.Itoa(rate) }

// smallfanRates are the publish rates with a run of either server, ascending.
func smallfanRates(rs runs) []int {
	seen := map[int]bool{}
	for _, byScen := range rs {
		for scen := range byScen {
			if r, err := strconv.Atoi(strings.TrimPrefix(scen, smallfanPrefix)); err == nil && strings.HasPrefix(scen, smallfanPrefix) {
				seen[r] = true
			}
		}
	}
	var out []int
	for r := range seen {
		out = append(out, r)
	}
	sort.Ints(out)
	return out
}

// sustainedLatencyMs is the p99 a sustained small fan-out rate stays under.
const sustainedLatencyMs = 50

// sustains reports whether every run of srv at rate published at (nearly)
// the asked rate and delivered every event, with a median p99 under
// sustainedLatencyMs.
func sustains(rs runs, srv string, rate int) bool {
	runs := rs.get(srv, smallfanScenario(rate))
	if len(runs) == 0 {
		return false
	}
	for _, r := range runs {
		p, note := needPublish(r.s)
		if note != "" || p.RatePerS < 0.95*p.TargetRatePerS {
			return false
		}
	}
	c := collect(runs, latP99)
	return c.ok() && c.median < sustainedLatencyMs
}

// maxSustained is the highest tested rate srv sustains with every lower
// tested rate sustained too (0: not even the lowest), and whether it is the
// highest tested rate (the real maximum may then be higher).
func maxSustained(rs runs, srv string) (rate int, top bool) {
	rates := smallfanRates(rs)
	for i, r := range rates {
		if !sustains(rs, srv, r) {
			return rate, false
		}
		rate, top = r, i == len(rates)-1
	}
	return rate, top
}

// renderSustained is the row of the highest sustained small fan-out rate.
func renderSustained(rs runs) string {
	if len(smallfanRates(rs)) == 0 {
		return ""
	}
	fmtRate := func(r int, top bool) string {
		switch {
		case r == 0:
			return "none of the tested"
		case top:
			return fmt.Sprintf("≥ %d (highest tested)", r)
		}
		return strconv.Itoa(r)
	}
	g, gTop := maxSustained(rs, gateway)
	b, bTop := maxSustained(rs, baseline)
	ratio, v := "", ""
	switch {
	case len(rs.get(gateway, smallfanScenario(smallfanRates(rs)[0]))) == 0:
	case g == 0:
		v = "missed"
	case len(rs.get(baseline, smallfanScenario(smallfanRates(rs)[0]))) == 0:
		v = "missed (no baseline run)"
	case b == 0:
		v = "met (the baseline sustains none of the tested rates)"
	case bTop:
		v = "missed (undecided: the baseline sustains every tested rate; raise SMALLFAN_RATES)"
	default:
		ratio = fmt.Sprintf("%.2f×", float64(g)/float64(b))
		v = verdict(float64(g) >= 1.5*float64(b))
		if v == "missed" && gTop {
			v = "missed (undecided: the gateway sustains every tested rate; raise SMALLFAN_RATES)"
		}
	}
	switch {
	case v == "":
	case strings.HasPrefix(v, "met"):
		v = "✅ " + v
	default:
		v = "❌ " + v
	}
	return fmt.Sprintf("| Small fan-outs: highest sustained rate (publishes/s; every event delivered, p99 < %d ms) | ≥ 1.5 × baseline | %s | %s | %s | %s |\n",
		sustainedLatencyMs, fmtRate(g, gTop), fmtRate(b, bTop), ratio, v)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func render(rs runs, floorUs float64, machine, commands, svgRel string) string {
	var b strings.Builder
	n := 0
	if r := rs.get(gateway, "fanout"); len(r) > 0 {
		n = r[0].s.Config.Conns
	} else if r := rs.get(baseline, "fanout"); len(r) > 0 {
		n = r[0].s.Config.Conns
	}
	fmt.Fprintf(&b, "## Measured figures (N = %d connections)\n\n", n)
	b.WriteString("Medians over the repeats, with the range and the number of runs in small print. A figure is\n")
	b.WriteString("undefined (and shown as such) when a run did not deliver every event. The ratio is\n")
	b.WriteString("gateway ÷ baseline (lower is better for memory, latency and CPU; higher for connect rate).\n\n")
	b.WriteString("| figure | target | gateway | baseline | ratio | verdict |\n|---|---|---|---|---|---|\n")
	for _, r := range rows(rs, floorUs) {
		g := collect(rs.get(gateway, r.scenario), r.v)
		bl := collect(rs.get(baseline, r.scenario), r.v)
		ratio := ""
		if x, ok := ratioOf(g, bl); ok && r.ratio {
			ratio = fmt.Sprintf("%.2f×", x)
		}
		v := ""
		if r.verdict != nil && len(rs.get(gateway, r.scenario)) > 0 {
			v = r.verdict(g, bl, rs)
			if strings.HasPrefix(v, "met") {
				v = "✅ " + v
			} else {
				v = "❌ " + v
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.label, r.target, g.format(r.digits), bl.format(r.digits), ratio, v)
	}
	b.WriteString(renderSustained(rs))
	fmt.Fprintf(&b, "\n![Delivery latency distribution and idle memory per connection](%s)\n\n", svgRel)

	b.WriteString("### Every run\n\n")
	b.WriteString("| server | scenario | # | up / failed | connect/s | KiB/conn | p50 ms | p99 ms | max ms | last p99 ms | delivered | publishes/s | CPU µs/delivery | CPU µs/publish | RSS max MiB | loadgen CPU s | load avg | problems |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	scens := []string{"fanout", "channels", "storm", "slow"}
	for _, rate := range smallfanRates(rs) {
		scens = append(scens, smallfanScenario(rate))
	}
	for _, server := range []string{gateway, baseline} {
		for _, scen := range scens {
			for _, r := range rs.get(server, scen) {
				s := r.s
				kib, rssMax, cpu, cpuPub, rate := "–", "–", "–", "–", "–"
				if s.Server != nil {
					kib = fmt.Sprintf("%.2f", s.Server.PerConnKiB)
					rssMax = fmt.Sprintf("%.0f", float64(s.Server.RSSMax)/(1<<20))
					if s.Server.CPUPerDeliveryUs > 0 {
						cpu = fmt.Sprintf("%.2f", s.Server.CPUPerDeliveryUs)
					}
					if s.Server.CPUPerPublishUs > 0 {
						cpuPub = fmt.Sprintf("%.2f", s.Server.CPUPerPublishUs)
					}
				}
				p50, p99, mx, last, del := "–", "–", "–", "–", "–"
				if p := s.Publish; p != nil && p.Publishes > 0 {
					p50, p99, mx = fmt.Sprintf("%.2f", p.Latency.P50), fmt.Sprintf("%.2f", p.Latency.P99), fmt.Sprintf("%.1f", p.Latency.Max)
					last = fmt.Sprintf("%.1f", p.LastDelivery.P99)
					del = fmt.Sprintf("%.2f%%", 100*p.DeliveredFraction)
					if p.RatePerS > 0 {
						rate = fmt.Sprintf("%.0f", p.RatePerS)
					}
				}
				probs := strings.ReplaceAll(strings.Join(s.Problems, "; "), "|", "/")
				if len(probs) > 160 {
					probs = probs[:160] + "…"
				}
				fmt.Fprintf(&b, "| %s | %s | %d | %d / %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %.1f→%.1f | %s |\n",
					server, scen, r.repeat, s.Connect.Established, s.Connect.Failed, s.Connect.RatePerS, kib, p50, p99, mx, last, del, rate, cpu, cpuPub, rssMax,
					s.Generator.CPUS, s.Generator.LoadAvg1Start, s.Generator.LoadAvg1End, probs)
			}
		}
	}
	if strings.TrimSpace(machine) != "" {
		b.WriteString("\n### Machine\n\n```\n" + strings.TrimSpace(machine) + "\n```\n")
	}
	if strings.TrimSpace(commands) != "" {
		b.WriteString("\n### Commands\n\n```sh\n" + strings.TrimSpace(commands) + "\n```\n")
	}
	return b.String()
}

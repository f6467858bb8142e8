package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

var colors = map[string]string{gateway: "#1f77b4", baseline: "#ff7f0e"}

// plot draws three panels: the delivery latency CDF of the 1-channel and the
// 100-channel scenarios (all repeats merged), and idle memory per connection.
func plot(rs runs) string {
	const w, h = 1260, 460
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	cdfPanel(&b, rs, "fanout", "Delivery latency, 1 channel × N (CDF, all runs)", 60, 40, 340, 300)
	cdfPanel(&b, rs, "channels", "Delivery latency, 100 channels (CDF, all runs)", 480, 40, 340, 300)
	memPanel(&b, rs, 900, 40, 300, 300)
	b.WriteString("</svg>\n")
	return b.String()
}

func mergedHist(rs []run) *stats.Hist {
	var h stats.Hist
	for _, r := range rs {
		if r.s.Publish != nil {
			h.Merge(stats.FromSnapshot(r.s.Publish.LatencyHist))
		}
	}
	return &h
}

func cdfPanel(b *strings.Builder, rs runs, scenario, title string, x0, y0, pw, ph float64) {
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="14" font-weight="bold">%s</text>`+"\n", x0, y0-15, title)
	hs := map[string]*stats.Hist{}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, srv := range []string{gateway, baseline} {
		h := mergedHist(rs.get(srv, scenario))
		if h.Count() == 0 {
			continue
		}
		hs[srv] = h
		lo = math.Min(lo, math.Max(float64(h.Min())/1e6, 0.01))
		hi = math.Max(hi, float64(h.Max())/1e6)
	}
	frame(b, x0, y0, pw, ph)
	if len(hs) == 0 {
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f">no data</text>`+"\n", x0+pw/2-25, y0+ph/2)
		return
	}
	// Log x axis over whole decades.
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	xOf := func(ms float64) float64 {
		ms = math.Max(ms, math.Pow(10, dlo))
		return x0 + (math.Log10(ms)-dlo)/(dhi-dlo)*pw
	}
	// "Nines" y axis: equal room for 0-90%, 90-99%, 99-99.9%, 99.9-99.99%,
	// so the tail that the p99 targets are about is visible.
	const nines = 4.0
	yOf := func(f float64) float64 {
		v := nines
		if f < 1 {
			v = math.Min(-math.Log10(1-f), nines)
		}
		return y0 + ph - v/nines*ph
	}
	for d := dlo; d <= dhi; d++ {
		x := xOf(math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, y0, x, y0+ph)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, y0+ph+15, fmtMs(math.Pow(10, d)))
	}
	for _, f := range []float64{0, 0.5, 0.9, 0.99, 0.999, 0.9999} {
		y := yOf(f)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+pw, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%g%%</text>`+"\n", x0-4, y+4, math.Round(f*1e6)/1e4)
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="middle">latency (ms, log scale)</text>`+"\n", x0+pw/2, y0+ph+32)
	ly := y0 + ph + 52
	for _, srv := range []string{gateway, baseline} {
		h, ok := hs[srv]
		if !ok {
			continue
		}
		var pts []string
		var cum uint64
		snap := h.Snapshot()
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(float64(h.Min())/1e6), yOf(0)))
		for _, bk := range snap.Buckets {
			cum += bk.Count
			x := xOf(math.Min(float64(bk.Hi), float64(h.Max())) / 1e6)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, yOf(float64(cum)/float64(h.Count()))))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[srv], strings.Join(pts, " "))
		q := h.Summary()
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f" fill="%s">%s: p50 %s, p99 %s, max %s</text>`+"\n",
			x0, ly, colors[srv], srv, fmtMs(q.P50), fmtMs(q.P99), fmtMs(q.Max))
		ly += 16
	}
}

func memPanel(b *strings.Builder, rs runs, x0, y0, pw, ph float64) {
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="14" font-weight="bold">Idle RSS per connection (KiB, median)</text>`+"\n", x0-20, y0-15)
	frame(b, x0, y0, pw, ph)
	vals := map[string]cell{}
	top := 4.0
	for _, srv := range []string{gateway, baseline} {
		c := collect(rs.get(srv, "fanout"), perConnKiB)
		if c.ok() {
			vals[srv] = c
			top = math.Max(top, c.max)
		}
	}
	top = math.Ceil(top/5) * 5
	yOf := func(v float64) float64 { return y0 + ph - v/top*ph }
	for v := 0.0; v <= top; v += top / 5 {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, yOf(v), x0+pw, yOf(v))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%g</text>`+"\n", x0-4, yOf(v)+4, v)
	}
	for i, srv := range []string{gateway, baseline} {
		c, ok := vals[srv]
		x := x0 + 40 + float64(i)*130
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x+40, y0+ph+15, srv)
		if !ok {
			continue
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="80" height="%.1f" fill="%s"/>`+"\n", x, yOf(c.median), y0+ph-yOf(c.median), colors[srv])
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.2f</text>`+"\n", x+40, yOf(c.median)-5, c.median)
	}
	// The target line, over the bars.
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="green" stroke-dasharray="5,4"/>`+"\n", x0, yOf(3), x0+pw, yOf(3))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="green">target 3 KiB</text>`+"\n", x0+4, yOf(3)-4)
}

func frame(b *strings.Builder, x0, y0, pw, ph float64) {
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n", x0, y0, pw, ph)
}

func fmtMs(ms float64) string {
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%.2g s", ms/1000)
	case ms >= 1:
		return fmt.Sprintf("%.3g ms", ms)
	default:
		return fmt.Sprintf("%.3g µs", ms*1000)
	}
}

package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// plot draws the run's two figures side by side as one SVG: the drain's closes and
// reconnects per 100 ms bucket since SIGTERM, and the delivery latency distribution (CDF)
// of every measured round.
func plot(s *summary) string {
	const w, h = 1200, 440
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	drainPanel(&b, s, 70, 50, 480, 320)
	cdfPanel(&b, s, 680, 50, 460, 320)
	b.WriteString("</svg>\n")
	return b.String()
}

func frame(b *strings.Builder, x0, y0, pw, ph float64) {
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", x0, y0, pw, ph)
}

// buckets counts event times (ms) per 100 ms, over [0, span).
func buckets(ms []float64, n int) []int {
	c := make([]int, n)
	for _, v := range ms {
		if i := int(v / 100); i >= 0 && i < n {
			c[i]++
		}
	}
	return c
}

func drainPanel(b *strings.Builder, s *summary, x0, y0, pw, ph float64) {
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="14" font-weight="bold">Drain of one gateway: streams per 100 ms since SIGTERM</text>`+"\n", x0-40, y0-20)
	frame(b, x0, y0, pw, ph)
	end := 1000.0
	if n := len(s.ReconnectsMs); n > 0 {
		end = math.Max(end, s.ReconnectsMs[n-1])
	}
	if n := len(s.ClosesMs); n > 0 {
		end = math.Max(end, s.ClosesMs[n-1])
	}
	nb := int(math.Ceil(end/1000)) * 10
	closes, reconns := buckets(s.ClosesMs, nb), buckets(s.ReconnectsMs, nb)
	top := 10
	for i := range nb {
		top = max(top, closes[i], reconns[i])
	}
	top = int(math.Ceil(float64(top)/10)) * 10
	xOf := func(i float64) float64 { return x0 + i/float64(nb)*pw }
	yOf := func(v float64) float64 { return y0 + ph - v/float64(top)*ph }
	for k := 0; k <= 5; k++ {
		v := float64(top) * float64(k) / 5
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, yOf(v), x0+pw, yOf(v))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", x0-4, yOf(v)+4, v)
	}
	step := max(1, nb/10/10) * 10
	for i := 0; i <= nb; i += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%ds</text>`+"\n", xOf(float64(i)), y0+ph+16, i/10)
	}
	bw := pw / float64(nb)
	for i := range nb {
		if closes[i] > 0 {
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.2f" height="%.1f" fill="#ff7f0e" fill-opacity="0.6"/>`+"\n", xOf(float64(i)), yOf(float64(closes[i])), bw, y0+ph-yOf(float64(closes[i])))
		}
	}
	pts := make([]string, nb)
	for i := range nb {
		pts[i] = fmt.Sprintf("%.1f,%.1f", xOf(float64(i)+0.5), yOf(float64(reconns[i])))
	}
	fmt.Fprintf(b, `<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="%s"/>`+"\n", strings.Join(pts, " "))
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" fill="#ff7f0e">closed by the draining gateway (%d, over %.1fs; --drain %s)</text>`+"\n", x0, y0+ph+36, len(s.ClosesMs), s.CloseSpreadS, s.Drain)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" fill="#1f77b4">reconnected to another gateway with Last-Event-ID (%d of %d)</text>`+"\n", x0, y0+ph+52, s.ResumedWithID, len(s.ReconnectsMs))
}

func cdfPanel(b *strings.Builder, s *summary, x0, y0, pw, ph float64) {
	h := stats.FromSnapshot(s.LatencyHist)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="14" font-weight="bold">Delivery latency, every measured round (CDF)</text>`+"\n", x0-20, y0-20)
	frame(b, x0, y0, pw, ph)
	if h.Count() == 0 {
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f">no data</text>`+"\n", x0+pw/2-25, y0+ph/2)
		return
	}
	lo := math.Floor(math.Log10(math.Max(float64(h.Min())/1e6, 0.01)))
	hi := math.Ceil(math.Log10(math.Max(float64(h.Max())/1e6, 0.1)))
	if hi <= lo {
		hi = lo + 1
	}
	xOf := func(ms float64) float64 { return x0 + (math.Log10(math.Max(ms, 1e-3))-lo)/(hi-lo)*pw }
	yOf := func(f float64) float64 { return y0 + ph - f*ph }
	for d := lo; d <= hi; d++ {
		x := xOf(math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, y0, x, y0+ph)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%g ms</text>`+"\n", x, y0+ph+16, math.Pow(10, d))
	}
	for k := 0; k <= 4; k++ {
		f := float64(k) / 4
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, yOf(f), x0+pw, yOf(f))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%.0f%%</text>`+"\n", x0-4, yOf(f)+4, f*100)
	}
	var pts []string
	var cum uint64
	for _, bk := range s.LatencyHist.Buckets {
		cum += bk.Count
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(float64(bk.Hi)/1e6), yOf(float64(cum)/float64(h.Count()))))
	}
	fmt.Fprintf(b, `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="%s"/>`+"\n", strings.Join(pts, " "))
	q := h.Summary()
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" fill="#1f77b4">%d deliveries in %d rounds: p50 %.1f ms, p99 %.1f ms, max %.1f ms</text>`+"\n",
		x0, y0+ph+36, q.N, len(s.Rounds), q.P50, q.P99, q.Max)
}

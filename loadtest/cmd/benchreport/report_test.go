package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/result"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

func summary(kib, p99, last, rate float64, delivered, expected uint64) result.Summary {
	var h stats.Hist
	for i := int64(1); i <= 100; i++ {
		h.Record(i * int64(p99*1e6) / 99)
	}
	s := result.Summary{
		Config:  result.Config{Conns: 15000},
		Connect: result.Connect{Established: 15000, RatePerS: rate},
		Server:  &result.Server{PerConnKiB: kib, CPUPerDeliveryUs: 2, RSSMax: 100 << 20},
		Publish: &result.Publish{
			Publishes: 20, Expected: expected, Delivered: delivered,
			DeliveredFraction: float64(delivered) / max(float64(expected), 1),
			Latency:           h.Summary(), LatencyHist: h.Snapshot(),
			LastDelivery: stats.Quantiles{P99: last, P50: last / 2},
		},
	}
	if expected == 0 {
		s.Publish = nil
	}
	return s
}

func writeRun(t *testing.T, dir, name string, s result.Summary) {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	for i, g := range []float64{3, 3.5, 3.2} {
		writeRun(t, dir, "gateway-fanout-"+string(rune('1'+i))+".json", summary(g, 40, 50, 9000, 300000, 300000))
		writeRun(t, dir, "baseline-fanout-"+string(rune('1'+i))+".json", summary(28, 300, 320, 5000, 300000, 300000))
	}
	writeRun(t, dir, "gateway-channels-1.json", summary(3, 5, 6, 9000, 100, 100))
	writeRun(t, dir, "gateway-slow-1.json", summary(3, 5.5, 6, 9000, 100, 100))
	writeRun(t, dir, "baseline-slow-1.json", summary(28, 0, 0, 5000, 0, 100))
	// Small fan-outs: the gateway sustains 4000 and 15000/s, the baseline only 4000/s.
	for _, sf := range []struct {
		name      string
		p99, cpu  float64
		delivered uint64
	}{
		{"gateway-smallfan4000-1.json", 2, 20, 100},
		{"baseline-smallfan4000-1.json", 3, 40, 100},
		{"gateway-smallfan15000-1.json", 4, 20, 100},
		{"baseline-smallfan15000-1.json", 60, 40, 100},
		{"gateway-smallfan30000-1.json", 70, 20, 100},
		{"baseline-smallfan30000-1.json", 80, 40, 90},
	} {
		s := summary(3, sf.p99, sf.p99, 9000, sf.delivered, 100)
		s.Server.CPUPerPublishUs = sf.cpu
		rate := strings.TrimSuffix(strings.TrimPrefix(sf.name[strings.Index(sf.name, "smallfan"):], "smallfan"), "-1.json")
		s.Publish.TargetRatePerS, _ = strconv.ParseFloat(rate, 64)
		s.Publish.RatePerS = s.Publish.TargetRatePerS
		writeRun(t, dir, sf.name, s)
	}
	writeRun(t, dir, "gateway-storm-1.json", summary(3, 0, 0, 9000, 0, 0))
	writeRun(t, dir, "baseline-storm-1.json", summary(28, 0, 0, 5000, 0, 0))
	os.WriteFile(filepath.Join(dir, "machine.txt"), []byte("cpu: test"), 0o644)
	os.WriteFile(filepath.Join(dir, "commands.txt"), []byte("loadgen --conns 15000"), 0o644)
	os.WriteFile(filepath.Join(dir, "floor.txt"), []byte("BenchmarkLoopbackWrite/conns=1000-2 \t 200000\t 30057 ns/op\t 1600 cpu-ns/write\n"), 0o644)

	md := filepath.Join(dir, "PERFORMANCE.md")
	hand := "# Performance\n\nHand-written intro.\n"
	os.WriteFile(md, []byte(hand), 0o644)
	svg := filepath.Join(dir, "perf.svg")
	if err := generate(dir, md, svg); err != nil {
		t.Fatal(err)
	}
	// A second run replaces the section and keeps the text around it.
	f, _ := os.OpenFile(md, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("\n## Analysis\n\nKept.\n")
	f.Close()
	if err := generate(dir, md, svg); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(md)
	doc := string(b)
	for _, want := range []string{
		"Hand-written intro.", "## Analysis\n\nKept.",
		"| Idle RSS per connection (KiB) | ≤ 3 KiB | 3.20 <sub>(3.00–3.50, n=3)</sub> | 28.00",
		"✅ met", "0.16×", // last delivery 50/320
		"| 1 ch × N: CPU per delivery (µs) | ≤ 1.3 × floor | 2.00 <sub>(2.00–2.00, n=3)</sub> | 2.00 <sub>(2.00–2.00, n=3)</sub> | 1.00× | ✅ met (1.25× the 1.60 µs floor) |",
		"| Small fan-outs at 4000/s: CPU per publish (µs) | ≤ 0.8 × baseline | 20.0 | 40.0 | 0.50× | ✅ met |",
		"| Small fan-outs at 15000/s: delivery latency p99 (ms) | ≤ baseline |",
		"| Small fan-outs at 30000/s: delivered (%) | 100 | 100.00 | 90.00 |  | ✅ met |",
		"| Small fan-outs: highest sustained rate (publishes/s; every event delivered, p99 < 50 ms) | ≥ 1.5 × baseline | 15000 | 4000 | 3.75× | ✅ met |",
		"| gateway | smallfan30000 | 1 |",
		"stalled: 0.0% delivered",
		"cpu: test", "loadgen --conns 15000", "perf.svg",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
	if strings.Count(doc, beginMarker) != 1 || strings.Count(doc, endMarker) != 1 {
		t.Errorf("markers duplicated:\n%s", doc)
	}
	raw, _ := os.ReadFile(svg)
	dec := xml.NewDecoder(strings.NewReader(string(raw)))
	for {
		if _, err := dec.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("SVG is not well-formed XML: %v", err)
			}
			break
		}
	}
	if !strings.Contains(string(raw), "polyline") || !strings.Contains(string(raw), "target 3 KiB") {
		t.Errorf("SVG lacks curves or the memory target")
	}
}

func TestSpliceNewDocument(t *testing.T) {
	got := splice("", "X\n")
	if !strings.HasPrefix(got, "# Performance\n\n"+beginMarker+"\nX\n"+endMarker) {
		t.Fatalf("splice = %q", got)
	}
}

func TestParseFloor(t *testing.T) {
	out := `goos: linux
BenchmarkLoopbackWrite/conns=1-2         	  200000	      2956 ns/op	  96.77 MB/s	      2588 cpu-ns/write
BenchmarkLoopbackWrite/conns=1-2         	  200000	      5723 ns/op	  49.97 MB/s	      3839 cpu-ns/write
BenchmarkLoopbackWrite/conns=1-2         	  200000	      3465 ns/op	  82.55 MB/s	      2291 cpu-ns/write
BenchmarkLoopbackWrite/conns=1000-2      	  200000	     30057 ns/op	   9.52 MB/s	     12125 cpu-ns/write
PASS`
	f := parseFloor(out)
	if f[1] != 2.588 || f[1000] != 12.125 {
		t.Fatalf("parseFloor = %v", f)
	}
	rs := runs{gateway: {"fanout": {{s: summary(3, 1, 1, 1, 1, 1)}}}}
	got := renderFloor(rs, out)
	if !strings.Contains(got, "| 1000 | 12.12 |") && !strings.Contains(got, "| 1000 | 12.13 |") {
		t.Fatalf("renderFloor:\n%s", got)
	}
	if !strings.Contains(got, "gateway: 2.00 µs of server CPU per delivery") {
		t.Fatalf("renderFloor lacks the ratio:\n%s", got)
	}
	if renderFloor(rs, "") != "" {
		t.Fatal("no floor output must render nothing")
	}
}

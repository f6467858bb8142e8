package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// floorRE matches a line of `go test -bench LoopbackWrite ./loadtest/floor`.
var floorRE = regexp.MustCompile(`^BenchmarkLoopbackWrite/conns=(\d+)-\d+\s.*?([\d.]+) cpu-ns/write`)

// parseFloor returns the median writer CPU per write (µs) by socket count.
func parseFloor(out string) map[int]float64 {
	vals := map[int][]float64{}
	for _, line := range strings.Split(out, "\n") {
		m := floorRE.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		ns, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		vals[n] = append(vals[n], ns/1000)
	}
	res := map[int]float64{}
	for n, v := range vals {
		res[n] = stats.Median(v)
	}
	return res
}

// renderFloor says what one delivery cannot cost less than on this machine.
func renderFloor(rs runs, out string) string {
	f := parseFloor(out)
	if len(f) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n### Floor: one write(2) per delivery\n\n")
	b.WriteString("`go test -run '^$' -bench LoopbackWrite -benchtime 200000x -count 3 ./loadtest/floor`: the CPU time of the\n")
	b.WriteString("writing thread per write(2) of a ~290-byte event frame to a loopback TCP socket whose reader drains it\n")
	b.WriteString("(medians of 3; on loopback the writer also runs the receive path and wakes the reader).\n\n")
	b.WriteString("| sockets written round-robin | CPU per write (µs) |\n|---|---|\n")
	for _, n := range []int{1, 1000} {
		if v, ok := f[n]; ok {
			fmt.Fprintf(&b, "| %d | %.2f |\n", n, v)
		}
	}
	if v, ok := f[1000]; ok {
		for _, srv := range []string{gateway, baseline} {
			c := collect(rs.get(srv, "fanout"), cpuPerDelivery)
			if c.ok() {
				fmt.Fprintf(&b, "\n%s: %.2f µs of server CPU per delivery = %.2f× the 1000-socket floor.", srv, c.median, c.median/v)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

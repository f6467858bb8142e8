// Command cpusplit says where a CPU profile's time goes, by kind of work: write(2) to the
// streams, epoll, locking, wake-ups and scheduling, time, metrics, GC, allocation, Redis I/O,
// JSON, other. It reads `go tool pprof -traces` output on stdin and prints a markdown table.
//
//	go tool pprof -traces bin/sse-gateway cpu-publish.pb.gz | cpusplit
//
// Each sample goes to one kind: walking its stack from the leaf, the first frame that matches
// a kind's pattern decides (so a malloc under a JSON encoder is allocation, a write(2) under
// the stream package is a delivery's write).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// kind is one row of the split: a sample whose stack matches re (leaf first) is counted here.
type kind struct {
	name string
	re   *regexp.Regexp
}

// kinds, in the order rows are printed. Patterns are tried frame by frame from the leaf; at
// one frame the first kind that matches wins.
var kinds = []kind{
	{"write(2) to streams", regexp.MustCompile(`^(golang\.org/x/sys/unix\.write|syscall\.write|internal/poll\.\(\*FD\)\.Write|golang\.org/x/sys/unix\.Writev|syscall\.writev)$`)},
	{"epoll", regexp.MustCompile(`epoll|netpoll`)},
	{"locking", regexp.MustCompile(`^(sync\.\(\*Mutex\)|sync\.\(\*RWMutex\)|runtime\.lock2|runtime\.unlock2|sync\.runtime_Sem|runtime\.semacquire|runtime\.semrelease|sync\.\(\*Cond\))`)},
	{"wake-ups, scheduling", regexp.MustCompile(`^runtime\.(futex|schedule|findRunnable|park_m|ready|notewakeup|notesleep|wakep|mcall|gopark|goready|stopm|startm|runqgrab|stealWork|goschedImpl)`)},
	{"time", regexp.MustCompile(`^(time\.Now|time\.Since|time\.runtimeNow|runtime\.nanotime|runtime\.walltime|time\.now)`)},
	{"metrics", regexp.MustCompile(`prometheus`)},
	{"GC", regexp.MustCompile(`^runtime\.(gcBgMarkWorker|gcAssist|gcDrain|bgsweep|bgscavenge|markroot|scanobject|scanObjectsSmall|tryDeferToSpanScan|sweepone|gcMark)`)},
	{"allocation", regexp.MustCompile(`^runtime\.(mallocgc|newobject|makeslice|growslice|makemap|mapassign|newarray)`)},
	{redisIO, regexp.MustCompile(`go-redis|^syscall\.read$|^internal/poll\.\(\*FD\)\.Read$`)},
	{"JSON (payload parse, frame encode)", regexp.MustCompile(`^encoding/json\.`)},
}

const (
	other   = "other"
	redisIO = "Redis I/O (go-redis, read/write)"
)

// sample is one stack of the -traces output with its value.
type sample struct {
	value  time.Duration
	frames []string // leaf first
}

// parseTraces reads `go tool pprof -traces` output.
func parseTraces(r io.Reader) ([]sample, error) {
	var out []sample
	var cur *sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			cur = nil
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasPrefix(line, " ") && cur == nil {
			continue // the header
		}
		if cur == nil && len(fields) >= 2 {
			d, err := time.ParseDuration(fields[0])
			if err != nil {
				continue
			}
			out = append(out, sample{value: d, frames: []string{fields[1]}})
			cur = &out[len(out)-1]
			continue
		}
		if cur != nil {
			cur.frames = append(cur.frames, fields[0])
		}
	}
	return out, sc.Err()
}

// classify is the kind of one sample. A write(2) made for go-redis is Redis I/O.
func classify(s sample) string {
	for _, f := range s.frames {
		for _, k := range kinds {
			if !k.re.MatchString(f) {
				continue
			}
			if k.name == kinds[0].name && slices.ContainsFunc(s.frames, func(f string) bool { return strings.Contains(f, "go-redis") }) {
				return redisIO
			}
			return k.name
		}
	}
	return other
}

// split sums the samples by kind.
func split(samples []sample) (map[string]time.Duration, time.Duration) {
	by := map[string]time.Duration{}
	var total time.Duration
	for _, s := range samples {
		by[classify(s)] += s.value
		total += s.value
	}
	return by, total
}

func render(w io.Writer, by map[string]time.Duration, total time.Duration) {
	fmt.Fprintln(w, "| where | CPU s | share |")
	fmt.Fprintln(w, "|---|---|---|")
	names := make([]string, 0, len(kinds)+1)
	for _, k := range kinds {
		names = append(names, k.name)
	}
	for _, n := range append(names, other) {
		share := 0.0
		if total > 0 {
			share = 100 * float64(by[n]) / float64(total)
		}
		fmt.Fprintf(w, "| %s | %s | %.1f%% |\n", n, strconv.FormatFloat(by[n].Seconds(), 'f', 2, 64), share)
	}
	fmt.Fprintf(w, "| total | %.2f | 100%% |\n", total.Seconds())
}

func main() {
	samples, err := parseTraces(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpusplit:", err)
		os.Exit(1)
	}
	if len(samples) == 0 {
		fmt.Fprintln(os.Stderr, "cpusplit: no samples on stdin (expected go tool pprof -traces output)")
		os.Exit(1)
	}
	by, total := split(samples)
	render(os.Stdout, by, total)
}

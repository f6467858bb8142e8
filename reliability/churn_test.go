package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// churnKind is how one churn cycle ends.
type churnKind int

const (
	churnEvent   churnKind = iota // read the stream up to the first event, then close
	churnResume                   // Last-Event-ID equal to the newest: read the heartbeat, close
	churnAbrupt                   // send the request and close without reading anything
	churnReset                    // read the headers, then close with RST (SO_LINGER 0)
	churnPartial                  // send half a request line and close
)

// churnMix is the share of each kind, out of 10 cycles.
var churnMix = [10]churnKind{churnEvent, churnEvent, churnEvent, churnEvent, churnResume, churnResume, churnAbrupt, churnReset, churnReset, churnPartial}

// churnCycle runs one connect/disconnect cycle. It returns an error only for what a correct
// gateway never does (a refused stream, a malformed response, a missing event).
func churnCycle(addr, src, channel, lastID string, kind churnKind) error {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + streamPath(channel) + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if kind == churnResume {
		req += "Last-Event-ID: " + lastID + "\r\n"
	}
	req += "\r\n"
	if kind == churnPartial {
		req = req[:len(req)/2]
	}
	if _, err := io.WriteString(c, req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	switch kind {
	case churnAbrupt, churnPartial:
		return nil
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		rest, _ := br.Peek(br.Buffered())
		return fmt.Errorf("stream refused: %q %q", status, rest)
	}
	want := "data:"
	switch kind {
	case churnReset:
		_ = c.(*net.TCPConn).SetLinger(0)
		return nil
	case churnResume:
		want = ":"
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("waiting for %q: %w", want, err)
		}
		if strings.HasPrefix(line, want) {
			return nil
		}
	}
}

// churn runs n cycles on workers goroutines and returns how many failed and the first
// failures.
func churn(addr string, n, workers int, channels []string, lastIDs []string) (int64, []string) {
	var next, failed atomic.Int64
	var mu sync.Mutex
	var samples []string
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				k := i % len(channels)
				if err := churnCycle(addr, source(w+i), channels[k], lastIDs[k], churnMix[i%len(churnMix)]); err != nil {
					failed.Add(1)
					mu.Lock()
					if len(samples) < 5 {
						samples = append(samples, err.Error())
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return failed.Load(), samples
}

// TestChurn is scenario 6: 50,000 connect/disconnect cycles (5,000 in the quick run; the
// full count runs under RELIABILITY_FULL=1) from eight source addresses, mixing clean
// closes after the first event, resumes, requests abandoned before the answer, resets and
// half-sent requests. The gateway's goroutines and RSS must come back to within 10% of
// what they were after a warm-up of 1,000 cycles, once the streams are gone (RSS only for
// a gateway built without -race: the race runtime's shadow memory never shrinks back), and
// every stream opened must have been closed and counted.
func TestChurn(t *testing.T) {
	cycles := scaled(50000, 5000)
	const workers = 32
	r := startRedis(t)
	g := startGateway(t, "churn", r.URL(), "--pprof", "--metrics-addr", "127.0.0.1:0")
	metricsAddr := metricsListener(t, g)
	g.metricsAddr = metricsAddr
	channels := make([]string, 10)
	lastIDs := make([]string, len(channels))
	base := time.Now().UnixMilli()
	for i := range channels {
		channels[i] = fmt.Sprintf("churn-%d", i)
		lastIDs[i] = versionOf(`"c1"`, base).String()
	}
	publishCLIAll(t, r.URL(), channels, `"c1"`, base)

	gauge := func(name string) float64 { return g.metrics().get(name) }
	// settle waits until no stream is open and a GC has run, then returns goroutines and RSS.
	settle := func() (float64, int64) {
		t.Helper()
		waitFor(t, 30*time.Second, func() string {
			return fmt.Sprintf("streams still open after churn: %v", gauge("sse_gateway_streams_open"))
		}, func() bool { return gauge("sse_gateway_streams_open") == 0 })
		// /debug/pprof/heap?gc=1 runs a GC first: RSS then reflects live memory plus what
		// the runtime has not yet returned to the kernel.
		_, _ = httpGet("http://" + metricsAddr + "/debug/pprof/heap?gc=1")
		return gauge("go_goroutines"), g.rss()
	}

	if failed, samples := churn(g.Addr, 1000, workers, channels, lastIDs); failed > 0 {
		t.Fatalf("warm-up: %d of 1000 cycles failed: %v", failed, samples)
	}
	gor0, rss0 := settle()
	heap0 := g.metrics().get("go_memstats_heap_inuse_bytes")
	// A race-built gateway's RSS includes the race runtime's shadow memory, which does not
	// shrink back: there only goroutines are held to the 10%, and the figures are reported.
	race := gatewayRace(t)

	start := time.Now()
	failed, samples := churn(g.Addr, cycles, workers, channels, lastIDs)
	took := time.Since(start)
	if failed > 0 {
		t.Errorf("%d of %d cycles failed; first failures: %v", failed, cycles, samples)
	}
	var gor float64
	var rss int64
	settled, ok := eventually(60*time.Second, func() bool {
		gor, rss = settle()
		return gor <= gor0*1.1 && (race || float64(rss) <= float64(rss0)*1.1)
	})
	heap := g.metrics().get("go_memstats_heap_inuse_bytes")
	m := g.metrics()
	opened, open := m.get("sse_gateway_stream_opens_total", `result="ok"`), m.get("sse_gateway_streams_open")
	if closed := m.get("sse_gateway_stream_closes_total"); opened != closed+open {
		t.Errorf("stream accounting does not add up: %v opened, %v closed, %v open", opened, closed, open)
	}
	t.Logf("%d cycles in %v (%.0f/s, %d workers, 8 source addresses): streams opened %v, closed by reason client=%v; after settling %v: goroutines %v -> %v, RSS %s -> %s (%+.1f%%), Go heap in use %s -> %s (race-built gateway: %v)",
		cycles, took.Round(time.Millisecond), float64(cycles)/took.Seconds(), workers,
		opened, m.get("sse_gateway_stream_closes_total", `reason="client"`),
		settled.Round(time.Millisecond), gor0, gor, mb(rss0), mb(rss), 100*(float64(rss)/float64(rss0)-1), mb(int64(heap0)), mb(int64(heap)), race)
	if !ok {
		t.Errorf("after %d cycles the gateway did not come back within 10%% of its warmed-up state: goroutines %v -> %v, RSS %s -> %s (RSS held to it: %v)",
			cycles, gor0, gor, mb(rss0), mb(rss), !race)
	}
}

// metricsListener returns the --metrics-addr the gateway logged.
func metricsListener(t testing.TB, g *gateway) string {
	t.Helper()
	line, ok := g.log.waitLine(10*time.Second, 0, func(l string) bool { return strings.Contains(l, `"msg":"metrics listening"`) })
	if !ok {
		t.Fatalf("gateway %s did not log its metrics address", g.name)
	}
	i := strings.Index(line, `"addr":"`)
	rest := line[i+len(`"addr":"`):]
	return rest[:strings.IndexByte(rest, '"')]
}

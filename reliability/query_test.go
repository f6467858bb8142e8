package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// holdStreams opens n streams with the given query (after the key) from the test's source
// addresses, reads each one's response head, and keeps them open, unread, until the test
// ends.
func holdStreams(t *testing.T, addr string, n int, query string) {
	t.Helper()
	for i := range n {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source(i))}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET "+streamPath("padded")+query+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %v %v", i, resp, err)
		}
	}
}

// TestPaddedQueryPinsNothing (issue 10, item 8): what a stream keeps of its request is
// copied out of it, so a query padded with an unused parameter costs nothing once the
// stream is open. Before, channel names were substrings of the request line, which pinned
// the whole line (6 KB here) for the stream's life.
func TestPaddedQueryPinsNothing(t *testing.T) {
	t.Parallel()
	const n, pad = 500, 6000
	r := startRedis(t)
	g := startGateway(t, "padded", r.URL(), "--pprof", "--metrics-addr", "127.0.0.1:0")
	g.metricsAddr = metricsListener(t, g)
	measure := func() (heap float64, rss int64) {
		// /debug/pprof/heap?gc=1 collects first: the heap then holds what is live.
		_, _ = httpGet("http://" + g.metricsAddr + "/debug/pprof/heap?gc=1")
		return g.metrics().get("go_memstats_heap_inuse_bytes"), g.rss()
	}
	holdStreams(t, g.Addr, n, "") // warm-up: buffers, maps and the registry grown once
	heap0, rss0 := measure()
	holdStreams(t, g.Addr, n, "")
	heap1, rss1 := measure()
	holdStreams(t, g.Addr, n, "&pad="+strings.Repeat("p", pad))
	heap2, rss2 := measure()
	kib := func(d float64) string { return fmt.Sprintf("%.1f KiB", d/float64(n)/1024) }
	plain, padded := heap1-heap0, heap2-heap1
	t.Logf("Go heap in use per stream: plain query %s, with %d bytes of an unused parameter %s; RSS per stream %s and %s (race-built gateway: %v)",
		kib(plain), pad, kib(padded), kib(float64(rss1-rss0)), kib(float64(rss2-rss1)), gatewayRace(t))
	// A pinned request line costs at least its 6,000 bytes per stream; the heap of a loaded,
	// race-built gateway moves by about a KiB per stream between measurements either way.
	if extra := (padded - plain) / n; extra > pad/2 {
		t.Errorf("a padded stream keeps %.0f bytes more heap than a plain one: its request line is still referenced", extra)
	}
}

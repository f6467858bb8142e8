package reliability

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/gwtest"
)

// TestStreamMemory measures what an idle stream costs the gateway on each path: plain
// HTTP/1.1 (taken over from net/http, no goroutine), HTTP/1.1 over TLS and HTTP/2 over TLS
// (one connection per stream, as SDKs in separate processes open them; both on net/http with
// a goroutine each). Each path gets a fresh gateway and n streams (2,000; 10,000 under
// RELIABILITY_FULL=1, below this machine's limit of 20,000 open files per process); the
// gateway's RSS and its Go heap and stacks in use are read before and after (the kernel's
// socket memory is not: /proc/net/sockstat is the whole machine's, which other work shares). Asserted, on the Go heap and stacks (which the race detector does not inflate
// the way it does RSS): a plain stream costs less than 6 KiB, and a TLS or HTTP/2 stream at
// least 4 KiB more than a plain one. Reported: the figures per stream, and how many plain
// streams 1 GiB of RSS holds at the measured slope (an extrapolation: this machine cannot
// open that many).
func TestStreamMemory(t *testing.T) {
	n := scaled(10000, 2000)
	certs := gwtest.NewCerts(t)
	certFile, keyFile, pool := certs.CertFile, certs.KeyFile, certs.Pool
	r := startRedis(t)
	type cost struct{ rss, goMem float64 } // bytes per stream
	measure := func(name string, tlsOn bool, open func(addr string) (io.Closer, error)) cost {
		t.Helper()
		// Idle: no heartbeat, and no write deadline left to fire (an HTTP/2 stream's write
		// deadline resets the stream when it passes even with nothing to write).
		args := []string{"--heartbeat", "1h", "--write-timeout", "1h", "--metrics-addr", "127.0.0.1:0", "--pprof"}
		if tlsOn {
			args = append(args, "--tls-cert", certFile, "--tls-key", keyFile)
		}
		g := newGateway(t, "memory-"+name, r.URL(), args...)
		g.start()
		g.metricsAddr = metricsListener(t, g)
		waitFor(t, 30*time.Second, func() string { return "gateway " + name + " not ready" }, func() bool { return g.metrics().get("sse_gateway_ready") == 1 })
		settle := func() (rss int64, goMem float64) {
			// A GC first (/debug/pprof/heap?gc=1): live memory, not garbage.
			_, _ = httpGet("http://" + g.metricsAddr + "/debug/pprof/heap?gc=1")
			m := g.metrics()
			return g.rss(), m.get("go_memstats_heap_inuse_bytes") + m.get("go_memstats_stack_inuse_bytes")
		}
		rss0, go0 := settle()
		conns := make([]io.Closer, 0, n)
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 50)
		var firstErr error
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := open(source(i) + ">" + g.Addr)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					return
				}
				conns = append(conns, c)
			}()
		}
		wg.Wait()
		t.Cleanup(func() {
			for _, c := range conns {
				c.Close()
			}
		})
		if firstErr != nil {
			t.Fatalf("%s: opening %d streams: %v", name, n, firstErr)
		}
		waitFor(t, 60*time.Second, func() string {
			return fmt.Sprintf("%s: streams_open %v, want %d", name, g.metrics().get("sse_gateway_streams_open"), n)
		}, func() bool { return g.metrics().get("sse_gateway_streams_open") == float64(n) })
		rss1, go1 := settle()
		c := cost{rss: float64(rss1-rss0) / float64(n), goMem: (go1 - go0) / float64(n)}
		for _, conn := range conns {
			conn.Close()
		}
		conns = conns[:0]
		g.kill()
		return c
	}

	plain := measure("http1", false, func(target string) (io.Closer, error) {
		src, addr, _ := strings.Cut(target, ">")
		return openRaw(src, addr, nil)
	})
	tlsCfg := &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}
	overTLS := measure("tls", true, func(target string) (io.Closer, error) {
		src, addr, _ := strings.Cut(target, ">")
		return openRaw(src, addr, tlsCfg)
	})
	h2 := measure("h2", true, func(target string) (io.Closer, error) {
		src, addr, _ := strings.Cut(target, ">")
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2: true,
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext,
		}
		resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + streamPath("memory"))
		if err != nil {
			return nil, err
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("h2 stream: %s %s", resp.Proto, resp.Status)
		}
		return closerFunc(func() error { err := resp.Body.Close(); tr.CloseIdleConnections(); return err }), nil
	})

	kib := func(b float64) string { return fmt.Sprintf("%.2f KiB", b/1024) }
	race := gatewayRace(t)
	for _, p := range []struct {
		name string
		c    cost
	}{{"HTTP/1.1 (taken over)", plain}, {"HTTP/1.1 over TLS", overTLS}, {"HTTP/2 over TLS", h2}} {
		rss := "RSS " + kib(p.c.rss) + ", "
		if race {
			rss = "" // a race-built gateway's RSS is mostly the race runtime's shadow memory
		}
		t.Logf("%d idle %s streams: %sGo heap+stacks %s per stream", n, p.name, rss, kib(p.c.goMem))
	}
	if !race {
		t.Logf("over the plain path: TLS +%s, HTTP/2 +%s RSS per stream; 1 GiB of RSS holds %.0f plain streams at %s each (extrapolated from %d)",
			kib(overTLS.rss-plain.rss), kib(h2.rss-plain.rss), float64(1<<30)/plain.rss, kib(plain.rss), n)
	}
	if plain.goMem > 6<<10 {
		t.Errorf("a plain HTTP/1.1 stream holds %s of Go heap and stacks, bound 6 KiB: taken-over streams are supposed to hold no goroutine and no buffers", kib(plain.goMem))
	}
	for name, c := range map[string]cost{"TLS": overTLS, "HTTP/2": h2} {
		if c.goMem < plain.goMem+4<<10 {
			t.Errorf("a %s stream holds %s of Go heap and stacks, a plain one %s: a goroutine and net/http's buffers should cost at least 4 KiB more; is the plain path still taken over?", name, kib(c.goMem), kib(plain.goMem))
		}
	}
}

// openRaw opens a stream from source address src with a raw HTTP/1.1 request (over TLS when
// cfg is set), reads the response head and keeps the connection open and unread.
func openRaw(src, addr string, cfg *tls.Config) (io.Closer, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = tls.DialWithDialer(&d, "tcp", addr, cfg)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET "+streamPath("memory")+" HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("stream: %s", resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/gateway"
	"github.com/sse-gateway/sse-gateway/internal/gwtest"
)

// With --tls-cert/--tls-key the gateway serves HTTPS with HTTP/2, and streams over h2
// receive events; several streams share one connection.
func TestTLSStreamsOverHTTP2(t *testing.T) {
	t.Parallel()
	certs := gwtest.NewCerts(t)
	g := startGateway(t, "--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	g.waitReady(c)

	s1 := mustOpen(t, c, g.streamURL(testKeys["k1"], "h2chan"))
	s2 := mustOpen(t, c, g.streamURL(testKeys["k2"], "h2chan"))
	for _, s := range []*sseStream{s1, s2} {
		if s.resp.ProtoMajor != 2 || s.resp.TLS == nil {
			t.Fatalf("stream protocol %s (TLS %v), want HTTP/2 over TLS", s.resp.Proto, s.resp.TLS != nil)
		}
		if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type %q", ct)
		}
		if s.resp.Header.Get("Connection") != "" {
			t.Fatal("Connection header on HTTP/2 (forbidden there)")
		}
	}
	g.publish(c, "h2chan", `"v1"`, 1700000000000)
	for i, s := range []*sseStream{s1, s2} {
		var ev struct {
			Channel string `json:"channel"`
			Data    string `json:"data"`
		}
		if err := json.Unmarshal([]byte(s.data(t, waitLimit)), &ev); err != nil || ev.Channel != "h2chan" {
			t.Fatalf("stream %d: event %+v (%v)", i+1, ev, err)
		}
	}
	if open := g.openStreams(c, "h2"); open != 2 {
		t.Fatalf("sse_gateway_streams_open{protocol=h2} = %v, want 2", open)
	}

	// Plain HTTP on the TLS port gets no stream.
	plain := newClient(t)
	resp, err := plain.Get("http://" + g.addr + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served on the TLS listener")
		}
	}
}

// openStreams reads sse_gateway_streams_open summed over keys for one protocol from /metrics.
func (g *testGateway) openStreams(c *http.Client, protocol string) float64 {
	g.t.Helper()
	resp, err := c.Get(g.url("/metrics"))
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "sse_gateway_streams_open{") && strings.Contains(line, `protocol="`+protocol+`"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				g.t.Fatalf("metric line %q: %v", line, err)
			}
			sum += v
		}
	}
	return sum
}

// A client that never finishes its request headers (slowloris) is cut off after
// --read-header-timeout, even while it keeps sending a byte now and then (the deadline is
// for the whole header, not per read); one that does finish gets its answer.
func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	g := startGateway(t, "--read-header-timeout", timeout.String())
	start := time.Now() // before the dial: the gateway's deadline cannot start earlier
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /event-stream?channels=a&key=x HTTP/1.1\r\nHost: gw\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	// Trickle a byte every 50ms, as slowloris does, until the gateway hangs up.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("a")); err != nil {
					return
				}
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	_, err = io.Copy(io.Discard, conn) // returns at EOF (or reset) once the server hangs up
	took := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v of trickled headers (read-header timeout %v)", took, timeout)
	}
	if took < timeout {
		t.Fatalf("slow client cut after %v, before the %v read-header timeout", took, timeout)
	}
	t.Logf("slowloris client cut %v after it connected (read-header timeout %v)", took.Round(time.Millisecond), timeout)

	c := newClient(t)
	if code := status(t, c, g.url("/healthz")); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
}

// --read-header-timeout defaults to 5s (the stream package tests the server settings).
func TestReadHeaderTimeoutDefault(t *testing.T) {
	t.Parallel()
	var cfg gateway.Config
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	serveFlags(fs, &cfg)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg.ReadHeaderTimeout != 5*time.Second {
		t.Fatalf("--read-header-timeout defaults to %v, want 5s", cfg.ReadHeaderTimeout)
	}
}

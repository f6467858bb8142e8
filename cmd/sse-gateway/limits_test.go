package main

import (
	"net/http"
	"testing"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// --max-streams-per-key counts streams of a key on every instance sharing the Redis.
func TestMaxStreamsPerKeyAcrossInstances(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	keys := writeKeysFile(t)
	args := []string{"--redis-url", srv.URL(), "--max-streams-per-key", "2", "--keys-file", keys}
	a := startGateway(t, append(args, "--instance-id", "a")...)
	b := startGateway(t, append(args, "--instance-id", "b")...)
	c := newClient(t)
	a.waitReady(c)
	b.waitReady(c)

	mustOpen(t, c, a.streamURL(testKeys["k1"], "ch"))
	sb := mustOpen(t, c, b.streamURL(testKeys["k1"], "ch"))
	for _, g := range []*testGateway{a, b} {
		_, resp := openStream(t, c, g.streamURL(testKeys["k1"], "ch"))
		refusal(t, resp, http.StatusTooManyRequests)
	}
	// Another key has its own quota.
	mustOpen(t, c, a.streamURL(testKeys["k2"], "ch"))

	// Closing a stream on one instance frees a place on the other.
	sb.Close()
	waitFor(t, waitLimit, "the released place to be usable on the other instance", func() bool {
		s, resp := openStream(t, c, a.streamURL(testKeys["k1"], "ch"))
		if s == nil {
			resp.Body.Close()
		}
		return s != nil
	})
	_, resp := openStream(t, c, b.streamURL(testKeys["k1"], "ch"))
	refusal(t, resp, http.StatusTooManyRequests)

	// An instance that stops gives its places back at once.
	a.stop()
	waitFor(t, waitLimit, "the stopped instance's places to be free", func() bool {
		s, resp := openStream(t, c, b.streamURL(testKeys["k1"], "ch"))
		if s == nil {
			resp.Body.Close()
		}
		return s != nil
	})
}

// The instance-local limits answer 429 (or 503 for the instance cap) with Retry-After and a
// JSON error.
func TestInstanceLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		flags  []string
		status int
	}{
		{"max-streams-per-ip", []string{"--max-streams-per-ip", "1"}, http.StatusTooManyRequests},
		{"accept-rate", []string{"--accept-rate", "0.1"}, http.StatusTooManyRequests},
		{"max-streams", []string{"--max-streams", "1"}, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startGateway(t, tc.flags...)
			c := newClient(t)
			mustOpen(t, c, g.streamURL(testKeys["k1"], "ch"))
			_, resp := openStream(t, c, g.streamURL(testKeys["k2"], "ch"))
			refusal(t, resp, tc.status)
		})
	}
}

// X-Forwarded-For names the client only when the peer is a trusted proxy; checked through
// the per-address limit.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	t.Parallel()
	xff := func(addr string) []string { return []string{"X-Forwarded-For", addr} }
	t.Run("untrusted", func(t *testing.T) {
		t.Parallel()
		for _, flags := range [][]string{
			{"--max-streams-per-ip", "1"},
			{"--max-streams-per-ip", "1", "--trusted-proxies", "10.0.0.0/8"}, // the peer is not one of them
		} {
			g := startGateway(t, flags...)
			c := newClient(t)
			mustOpen(t, c, g.streamURL(testKeys["k1"], "ch"), xff("192.0.2.1")...)
			_, resp := openStream(t, c, g.streamURL(testKeys["k1"], "ch"), xff("192.0.2.2")...)
			refusal(t, resp, http.StatusTooManyRequests) // both are 127.0.0.1
		}
	})
	t.Run("trusted", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, "--max-streams-per-ip", "1", "--trusted-proxies", "127.0.0.1, 10.0.0.0/8")
		c := newClient(t)
		mustOpen(t, c, g.streamURL(testKeys["k1"], "ch"), xff("192.0.2.1")...)
		mustOpen(t, c, g.streamURL(testKeys["k1"], "ch"), xff("192.0.2.2")...)
		// The client behind two trusted proxies is still 192.0.2.1.
		_, resp := openStream(t, c, g.streamURL(testKeys["k1"], "ch"), xff("192.0.2.1, 10.1.2.3")...)
		refusal(t, resp, http.StatusTooManyRequests)
		// A client cannot get a fresh address by prepending one: the rightmost untrusted
		// entry is the one the proxy saw.
		_, resp = openStream(t, c, g.streamURL(testKeys["k1"], "ch"), xff("198.51.100.9, 192.0.2.2")...)
		refusal(t, resp, http.StatusTooManyRequests)
	})
}

// Without --max-streams, the cap derives from the open-files limit, so an instance answers
// 503 before it runs out of descriptors.
func TestMaxStreamsDefaultsFromOpenFilesLimit(t *testing.T) {
	t.Parallel()
	// The formula is stream.DefaultMaxStreams's, tested there; this checks the command
	// applies it.
	// In a child with a low limit: 400 files -> (400-256) less 5% = 137 streams, then 503.
	const nofile, want = 400, 137
	keys := writeKeysFile(t)
	addr, rec := childGateway(t, nofile, "serve", "--addr", "127.0.0.1:0", "--keys-file", keys,
		"--admin-token", "x", "--drain", "100ms", "--heartbeat", "10s")
	if got, _ := rec["max_streams"].(float64); int(got) != want {
		t.Fatalf("child with ulimit -n %d logs max_streams %v, want %d", nofile, rec["max_streams"], want)
	}
	c := newClient(t)
	url := "http://" + addr + "/event-stream?channels=ch&key=" + testKeys["k1"]
	for i := range want {
		s, resp := openStream(t, c, url)
		if s == nil {
			t.Fatalf("stream %d of %d: %s", i+1, want, resp.Status)
		}
	}
	_, resp := openStream(t, c, url)
	refusal(t, resp, http.StatusServiceUnavailable)
}

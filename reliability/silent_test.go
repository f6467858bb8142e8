package reliability

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSilentSubscriptionDeath is scenario 3 at binary level: the gateway talks to Redis
// through a proxy that stops forwarding Redis -> gateway while the TCP connections stay up
// and gateway -> Redis still flows. Nothing errors; only the liveness probe (published every
// --probe-interval, 200ms here) can notice. /readyz must go 503 (the number of probe
// intervals it took is reported), and the streams must get what was published meanwhile
// once Redis is reachable again:
//
//   - frozen: every connection, present and future, is frozen; after a thaw the gateway is
//     ready again and both the event published while frozen and a new one reach clients.
//   - frozen-existing: only the connections open at the freeze are frozen; the gateway
//     must re-subscribe around them (new connections pass) without any thaw.
func TestSilentSubscriptionDeath(t *testing.T) {
	t.Parallel()
	const probe = 200 * time.Millisecond
	r := startRedis(t)
	p := startProxy(t, r.Addr())
	g := startGateway(t, "silent", p.URL(), "--probe-interval", probe.String())
	cs := newClients(t)
	const ch = "silent"
	var list []*sseClient
	for i := range 20 {
		list = append(list, cs.start(clientConfig{channels: ch, source: source(i), target: fixed(g.Addr)}))
	}
	waitOpen(t, 20*time.Second, list)
	base := time.Now().UnixMilli()
	publish := func(i int) version {
		t.Helper()
		etag := `"s` + itoa(int64(i)) + `"`
		if out := publishCLI(t, r.URL(), ch, etag, base+int64(i)); !strings.HasPrefix(out, "published") {
			t.Fatalf("publish v%d: %s", i, out)
		}
		return versionOf(etag, base+int64(i))
	}
	waitHave(t, 10*time.Second, list, ch, publish(1))

	// Only the probe can notice a silent subscription: without it /readyz would stay 200
	// for ever, so the bound is a generous one and the time it took is reported.
	notReady := func(phase string) time.Duration {
		t.Helper()
		d, ok := eventually(30*time.Second, func() bool { return g.readyz() == http.StatusServiceUnavailable })
		if !ok {
			t.Fatalf("%s: /readyz still 200 %v (%d probe intervals) after the subscription went silent", phase, d, int(d/probe))
		}
		return d
	}
	ready := func(phase string) time.Duration {
		t.Helper()
		d, ok := eventually(30*time.Second, func() bool { return g.readyz() == http.StatusOK })
		if !ok {
			t.Fatalf("%s: /readyz not 200 again after %v; log:\n%s", phase, d, g.log.tail(20))
		}
		return d
	}
	stayedOpen := func(phase string) {
		t.Helper()
		for _, c := range list {
			c.mu.Lock()
			bad := c.conns != 1 || !c.open
			c.mu.Unlock()
			if bad {
				t.Fatalf("%s: a stream did not stay open: %s", phase, c.describe())
			}
		}
	}

	t.Run("frozen", func(t *testing.T) {
		p.freezeAll()
		d := notReady("frozen")
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if s := g.readyz(); s != http.StatusServiceUnavailable {
				t.Fatalf("frozen: /readyz answered %d while nothing comes back from Redis", s)
			}
		}
		v2 := publish(2)
		p.thaw()
		back := ready("frozen")
		waitHave(t, 10*time.Second, list, ch, v2)
		v3 := publish(3)
		waitHave(t, 10*time.Second, list, ch, v3)
		stayedOpen("frozen")
		t.Logf("everything frozen: /readyz 503 after %v (%.1f probe intervals); ready %v after the thaw; the event published while frozen and a new one reached every client",
			d.Round(time.Millisecond), float64(d)/float64(probe), back.Round(time.Millisecond))
	})

	t.Run("frozen-existing", func(t *testing.T) {
		ready("frozen-existing")
		n := p.freezeExisting()
		defer p.thaw()
		d := notReady("frozen-existing")
		back := ready("frozen-existing")
		v4 := publish(4)
		waitHave(t, 10*time.Second, list, ch, v4)
		stayedOpen("frozen-existing")
		t.Logf("%d existing connections frozen, new ones pass: /readyz 503 after %v (%.1f probe intervals), ready again %v later by re-subscribing on a new connection (no thaw); a publish reached every client",
			n, d.Round(time.Millisecond), float64(d)/float64(probe), back.Round(time.Millisecond))
	})
}

package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Mobile networks (issue 15): clients in a network namespace behind an impaired link (see
// newImpairedNetns), against a gateway listening on the root side. Heartbeat and write timeout
// are short so that the scenarios take seconds; what they show scales with the flags.
const (
	mobileHeartbeat    = 2 * time.Second
	mobileWriteTimeout = 4 * time.Second
	// mobileIdle is the clients' read timeout: a stream silent for three heartbeats is dead.
	mobileIdle = 3 * mobileHeartbeat
	// abandonSlack is what the gateway may take beyond --write-timeout + one heartbeat to close
	// a stream whose peer is gone: the sweeper's tick and a loaded 2-core machine.
	abandonSlack = 2 * time.Second
)

// startMobileGateway starts a gateway on the namespace's host address.
func startMobileGateway(t *testing.T, name string, ns *netns, r *redisProc) *gateway {
	t.Helper()
	return startGateway(t, name, r.URL(), "--addr", ns.hostIP+":0",
		"--heartbeat", mobileHeartbeat.String(), "--write-timeout", mobileWriteTimeout.String())
}

// mobileCase is one flaky-network case: n clients in an impaired namespace (one-way delay,
// loss) with a read timeout, reconnecting with their Last-Event-ID, all streaming from a
// gateway on the host side.
type mobileCase struct {
	ns      *netns
	r       *redisProc
	g       *gateway
	ch      string
	clients []*sseClient
	took    time.Duration // until every client streamed
}

// startMobileCase sets a case up; dial, when set, makes the clients' dial function (default:
// from the namespace, the kernel choosing the address).
func startMobileCase(t *testing.T, name string, delay time.Duration, loss float64, n int,
	dial func(ns *netns) func(ctx context.Context, addr string) (net.Conn, error)) *mobileCase {
	t.Helper()
	ns := newImpairedNetns(t)
	ns.link.set(delay, loss)
	r := startRedis(t)
	mc := &mobileCase{ns: ns, r: r, g: startMobileGateway(t, name, ns, r), ch: "mobile-" + name}
	d := ns.dial
	if dial != nil {
		d = dial(ns)
	}
	cs := newClients(t)
	start := time.Now()
	for range n {
		mc.clients = append(mc.clients, cs.start(clientConfig{channels: mc.ch, target: fixed(mc.g.Addr), dial: d, reconnect: true, idleTimeout: mobileIdle}))
	}
	waitOpen(t, 60*time.Second, mc.clients)
	mc.took = time.Since(start)
	return mc
}

// streamsClosed waits until the gateway's stream_closes_total is at least want and returns
// how long that took from since, and the closes by reason.
func streamsClosed(t *testing.T, g *gateway, want float64, since time.Time, timeout time.Duration) (time.Duration, string) {
	t.Helper()
	var m metricSet
	waitFor(t, timeout, func() string {
		return fmt.Sprintf("the gateway closed %v streams, want %v (streams_open %v)", m.get("sse_gateway_stream_closes_total"), want, m.get("sse_gateway_streams_open"))
	}, func() bool {
		m = g.metrics()
		return m.get("sse_gateway_stream_closes_total") >= want
	})
	took := time.Since(since)
	var reasons []string
	for _, rs := range []string{"client", "slow", "drain", "revoked", "lifetime"} {
		if n := m.get("sse_gateway_stream_closes_total", `reason="`+rs+`"`); n > 0 {
			reasons = append(reasons, fmt.Sprintf("%s=%v", rs, n))
		}
	}
	return took, strings.Join(reasons, " ")
}

// delivery is publish -> the client holds that version (or a newer one), for every client
// and every publish: min, median, 99th percentile and max.
func delivery(list []*sseClient, channel string, published []version, at []time.Time) string {
	var d []time.Duration
	for _, c := range list {
		evs := c.snapshot()
		for i, v := range published {
			for _, e := range evs {
				if e.channel == channel && !e.v.less(v) {
					d = append(d, e.at.Sub(at[i]))
					break
				}
			}
		}
	}
	if len(d) == 0 {
		return "no deliveries"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	r := func(x time.Duration) time.Duration { return x.Round(time.Millisecond) }
	return fmt.Sprintf("n=%d min %v, median %v, p99 %v, max %v", len(d), r(d[0]), r(d[len(d)/2]), r(d[len(d)*99/100]), r(d[len(d)-1]))
}

// TestFlakyNetwork is issue 15's flaky networks, each with clients behind an impaired link:
//   - lossy: 300 ms RTT and 2% loss each way; 40 clients, 20 publishes: every client ends at
//     the newest version within 10 s of the last publish (delivery times are reported);
//   - outage: the link drops everything for 20 s while a version is published; the gateway
//     must close all 20 abandoned streams within --write-timeout + one heartbeat (plus slack),
//     and every client, whose read timeout gives up on its silent stream, must hold the
//     newest version within 15 s of the link's return;
//   - move: the clients move to a new address (the old one blackholed: their old connections
//     are half-open); they reconnect from the new one with Last-Event-ID and must hold the
//     version published right after the move within 10 s, and the gateway must close the 20
//     abandoned streams within --write-timeout + one heartbeat (plus slack).
func TestFlakyNetwork(t *testing.T) {
	t.Parallel()
	const clientsPerCase = 20
	bound := mobileWriteTimeout + mobileHeartbeat + abandonSlack

	t.Run("lossy", func(t *testing.T) {
		t.Parallel()
		const n, publishes = 40, 20
		mc := startMobileCase(t, "lossy", 150*time.Millisecond, 0.02, n, nil)
		ns, r, ch, list, connected := mc.ns, mc.r, mc.ch, mc.clients, mc.took
		base := time.Now().UnixMilli()
		var published []version
		var at []time.Time
		for i := range publishes {
			etag := fmt.Sprintf(`"l%d"`, i)
			at = append(at, time.Now())
			r.publishRaw(ch, payload(etag, base+int64(i), 0, false))
			published = append(published, versionOf(etag, base+int64(i)))
			time.Sleep(300 * time.Millisecond)
		}
		last := time.Now()
		waitHave(t, 10*time.Second, list, ch, published[len(published)-1])
		took := time.Since(last)
		conns := 0
		for _, c := range list {
			c.mu.Lock()
			conns += c.conns
			c.mu.Unlock()
		}
		carried, dropped := ns.link.counts()
		t.Logf("300 ms RTT, 2%% loss each way: %d clients connected in %v; every client had the last of %d publishes %v after it (%d streams opened in all for %d clients); publish -> client holds it: %s; link carried %d packets, dropped %d",
			n, connected.Round(time.Millisecond), publishes, took.Round(time.Millisecond), conns, n, delivery(list, ch, published, at), carried, dropped)
	})

	t.Run("outage", func(t *testing.T) {
		t.Parallel()
		const outage = 20 * time.Second
		mc := startMobileCase(t, "outage", 50*time.Millisecond, 0, clientsPerCase, nil)
		ns, r, g, ch, list := mc.ns, mc.r, mc.g, mc.ch, mc.clients
		base := time.Now().UnixMilli()
		r.publishRaw(ch, payload(`"o1"`, base, 0, false))
		waitHave(t, 10*time.Second, list, ch, versionOf(`"o1"`, base))
		closes0 := g.metrics().get("sse_gateway_stream_closes_total")

		down := time.Now()
		ns.link.setDown(true)
		time.Sleep(time.Second)
		r.publishRaw(ch, payload(`"o2"`, base+1, 0, false))
		v2 := versionOf(`"o2"`, base+1)
		closed, reasons := streamsClosed(t, g, closes0+clientsPerCase, down, bound+5*time.Second)
		if closed > bound {
			t.Errorf("the gateway closed the %d streams of the cut-off link %v after the cut, want <= --write-timeout %v + heartbeat %v + %v", clientsPerCase, closed.Round(time.Millisecond), mobileWriteTimeout, mobileHeartbeat, abandonSlack)
		}
		time.Sleep(time.Until(down.Add(outage)))
		up := time.Now()
		ns.link.setDown(false)
		waitHave(t, 15*time.Second, list, ch, v2)
		took := time.Since(up)
		t.Logf("20 s outage of the client link (nothing delivered, no FIN/RST): the gateway closed all %d streams %v after the cut (bound %v; closes by reason: %s); the version published during the outage reached every client %v after the link came back (clients' read timeout %v)",
			clientsPerCase, closed.Round(time.Millisecond), bound, reasons, took.Round(time.Millisecond), mobileIdle)
	})

	t.Run("move", func(t *testing.T) {
		t.Parallel()
		var src atomic.Value
		mc := startMobileCase(t, "move", 40*time.Millisecond, 0, clientsPerCase, func(ns *netns) func(ctx context.Context, addr string) (net.Conn, error) {
			src.Store(ns.peerIP)
			return ns.dialFrom(func() string { return src.Load().(string) })
		})
		ns, r, g, ch, list := mc.ns, mc.r, mc.g, mc.ch, mc.clients
		base := time.Now().UnixMilli()
		r.publishRaw(ch, payload(`"m1"`, base, 0, false))
		waitHave(t, 10*time.Second, list, ch, versionOf(`"m1"`, base))
		m0 := g.metrics()
		closes0 := m0.get("sse_gateway_stream_closes_total")

		// Wi-Fi -> cellular: the old address is gone (its packets go nowhere), the phone drops
		// its sockets and the app reconnects from the new address.
		moved := time.Now()
		ns.link.drop(ns.peerIP)
		src.Store(ns.spareIP)
		for _, c := range list {
			c.drop()
		}
		r.publishRaw(ch, payload(`"m2"`, base+1, 0, false))
		waitHave(t, 10*time.Second, list, ch, versionOf(`"m2"`, base+1))
		reached := time.Since(moved)
		for _, c := range list {
			c.mu.Lock()
			addr, conns, lastErr := c.localAddr, c.conns, c.lastErr
			c.mu.Unlock()
			if !strings.HasPrefix(addr, ns.spareIP+":") || conns != 2 {
				t.Errorf("a client is on %s after %d streams (last error %q), want its second stream from the new address %s", addr, conns, lastErr, ns.spareIP)
			}
		}
		closed, reasons := streamsClosed(t, g, closes0+clientsPerCase, moved, bound+5*time.Second)
		if closed > bound {
			t.Errorf("the gateway closed the %d abandoned streams %v after the move, want <= --write-timeout %v + heartbeat %v + %v", clientsPerCase, closed.Round(time.Millisecond), mobileWriteTimeout, mobileHeartbeat, abandonSlack)
		}
		if open := g.metrics().get("sse_gateway_streams_open"); open != clientsPerCase {
			t.Errorf("streams_open = %v after the move, want %d (one per client)", open, clientsPerCase)
		}
		t.Logf("address change (old address blackholed, old streams half-open): every client reconnected from the new address and held the version published at the move %v later; the gateway closed the %d abandoned streams %v after the move (bound %v; closes by reason: %s)",
			reached.Round(time.Millisecond), clientsPerCase, closed.Round(time.Millisecond), bound, reasons)
	})
}

// cpuSeconds is the user + system CPU time of process pid.
func cpuSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading the gateway's CPU time: %v", err)
	}
	// Fields after the command name (which ends with ')'): utime and stime are 14 and 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// TestAppLifecycle is issue 15's app lifecycle: 2,000 clients that each keep their stream for
// 1-4 s, hang up (the app goes to the background), and come back 0.3-1.5 s later with their
// Last-Event-ID, while each channel gets a publish every 2 s (one channel every 500 ms). Each client must see its
// channel's versions strictly increase across all its streams (a version it already had is
// never sent again: every frame is counted) and hold the last version within 10 s of the last
// publish; after the run the gateway's goroutines and heap (and, built without -race, RSS)
// must come back to within 10% (heap: 4 MiB) of a warmed-up baseline. The gateway's CPU time
// per reconnect is reported.
func TestAppLifecycle(t *testing.T) {
	const (
		n        = 2000
		channels = 4
		run      = 30 * time.Second
		every    = 500 * time.Millisecond
	)
	r := startRedis(t)
	g := startGateway(t, "lifecycle", r.URL(), "--pprof", "--metrics-addr", "127.0.0.1:0")
	g.metricsAddr = metricsListener(t, g)
	chans := make([]string, channels)
	base := time.Now().UnixMilli()
	for i := range chans {
		chans[i] = fmt.Sprintf("lifecycle-%d", i)
	}
	publishCLIAll(t, r.URL(), chans, `"v0"`, base)
	cfg := func(i int) clientConfig {
		return clientConfig{channels: chans[i%channels], source: source(i), target: fixed(g.Addr), reconnect: true,
			foreground: func() time.Duration { return time.Second + rand.N(3*time.Second) },
			background: func() time.Duration { return 300*time.Millisecond + rand.N(1200*time.Millisecond) }}
	}
	settle := func() (float64, float64, int64) {
		t.Helper()
		waitFor(t, 30*time.Second, func() string { return "streams still open" }, func() bool {
			return g.metrics().get("sse_gateway_streams_open") == 0
		})
		_, _ = httpGet("http://" + g.metricsAddr + "/debug/pprof/heap?gc=1")
		m := g.metrics()
		return m.get("go_goroutines"), m.get("go_memstats_heap_inuse_bytes"), g.rss()
	}

	// Warm-up: the same clients for 8 s, then all gone.
	warm := newClients(t)
	for i := range n {
		warm.start(cfg(i))
	}
	time.Sleep(8 * time.Second)
	warm.stop()
	gor0, heap0, rss0 := settle()

	cs := newClients(t)
	var list []*sseClient
	for i := range n {
		list = append(list, cs.start(cfg(i)))
	}
	m0 := g.metrics()
	cpu0 := cpuSeconds(t, g.pid())
	start := time.Now()
	var last [channels]version
	publishes := 0
	// One channel per tick, so each channel gets a version every 2 s: many comebacks find
	// nothing new, and then the gateway must send nothing.
	for i := 1; time.Since(start) < run; i++ {
		k := i % channels
		etag := fmt.Sprintf(`"v%d"`, i)
		r.publishRaw(chans[k], payload(etag, base+int64(i), 0, false))
		last[k] = versionOf(etag, base+int64(i))
		publishes++
		time.Sleep(every)
	}
	lastPublish := time.Now()
	for k, ch := range chans {
		var on []*sseClient
		for i, c := range list {
			if i%channels == k {
				on = append(on, c)
			}
		}
		waitHave(t, 10*time.Second, on, ch, last[k])
	}
	caughtUp := time.Since(lastPublish)
	m1 := g.metrics()
	cpu := cpuSeconds(t, g.pid()) - cpu0
	elapsed := time.Since(start)
	cs.stop()

	// Frames: per client, its channel's versions strictly increase over all its streams.
	frames, cycles, dup := 0, 0, 0
	for _, c := range list {
		evs := c.snapshot()
		frames += len(evs)
		c.mu.Lock()
		cycles += c.cycles
		c.mu.Unlock()
		var prev version
		for _, e := range evs {
			if !prev.less(e.v) {
				if dup < 5 {
					t.Errorf("client %d got %s on its stream %d after it had %s: a version re-sent or out of order", c.n, e.v, e.conn, prev)
				}
				dup++
			}
			prev = e.v
		}
	}
	opens := m1.get("sse_gateway_stream_opens_total", `result="ok"`) - m0.get("sse_gateway_stream_opens_total", `result="ok"`)
	refused := m1.get("sse_gateway_stream_opens_total") - m0.get("sse_gateway_stream_opens_total") - opens

	gor, heap, rss := settle()
	race := gatewayRace(t)
	t.Logf("%d clients, 1-4 s foreground / 0.3-1.5 s background, %d publishes over %v: %v streams opened (%.0f/s), %v refused, %d hang-ups; every client had its channel's last version %v after the last publish; %d frames received, %d re-sent or out of order; gateway CPU %.1f s = %.0f µs per reconnect (everything included: %.0f reconnects/s per core at that cost; race-built: %v); after settling: goroutines %v -> %v, heap in use %s -> %s, RSS %s -> %s",
		n, publishes, elapsed.Round(time.Millisecond), opens, opens/elapsed.Seconds(), refused, cycles, caughtUp.Round(time.Millisecond),
		frames, dup, cpu, 1e6*cpu/opens, opens/cpu, race, gor0, gor, mb(int64(heap0)), mb(int64(heap)), mb(rss0), mb(rss))
	if refused > 0 {
		t.Errorf("%v stream requests were refused during the run", refused)
	}
	if gor > gor0*1.1 {
		t.Errorf("goroutines grew from %v to %v", gor0, gor)
	}
	if heap > heap0*1.1 && heap-heap0 > 4<<20 {
		t.Errorf("heap in use grew from %s to %s", mb(int64(heap0)), mb(int64(heap)))
	}
	if !race && float64(rss) > float64(rss0)*1.1 {
		t.Errorf("RSS grew from %s to %s", mb(rss0), mb(rss))
	}
}

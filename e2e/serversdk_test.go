package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// serverSDK describes a DevCycle server SDK on a runtime other than Node (python_test.go,
// java_test.go): how to start its driver, and what it logs and requests, read from its source.
// testServerSDK and testServerSDKReadLoop drive any of them the same way.
type serverSDK struct {
	name  string // e.g. "python-server-sdk"
	start func(t *testing.T, opts map[string]any) *scriptProc

	// connectRequests is how many conditional requests (304 while it holds the newest config)
	// a fresh stream costs it.
	connectRequests int
	// ifModifiedSince is the If-Modified-Since it sends when message msg makes it refetch while
	// it holds config held.
	ifModifiedSince func(held, msg configVersion) time.Time

	// Its log: substrings of the lines for a stream opened (first or again) and for its stream
	// failing (a drain, a lifetime close), and the whole line for a heartbeat comment read.
	connected, fault, heartbeat string
	// networkFaults are the substrings by which a fault line, or the log line after it, says
	// that the connection was cut, reset or refused (while the gateway restarts), rather than
	// that something the gateway sent could not be handled.
	networkFaults []string
}

const (
	serverCfgPath = "/config/v2/server/"
	// sdkPollMS is the polling interval the server SDKs are given: ten minutes, so within a
	// test only an SSE message (or a reconnect) explains a new config.
	sdkPollMS = 600000
)

// sdkFixture is a gateway on a private Redis, the CDN stand-in serving one server config whose
// sse {hostname, path} names sseHost (the gateway or a proxy in front of it), and version 0 of
// that config published and stored.
type sdkFixture struct {
	rs      *redisServer
	gw      *gateway
	cdn     *cdn
	channel string
	sdkKey  string
	version func(i int) configVersion
	set     func(v configVersion) // serve v at the CDN
}

func newSDKFixture(t *testing.T, name string, cfg gatewayConfig, sseHost func(*gateway) string) *sdkFixture {
	t.Helper()
	key := "e2e-key-" + name
	f := &sdkFixture{channel: devcycleChannel("dvc_server", t.Name()), version: versions(name),
		sdkKey: "dvc_server_e2e_" + strings.ReplaceAll(name, "-", "_")}
	f.rs = startRedis(t)
	cfg.RedisURL, cfg.KeysFile = f.rs.URL(), writeKeysFile(t, key, "dvc_server_*")
	f.gw = startGateway(t, cfg)
	f.cdn = startCDN(t)
	host, path := sseHost(f.gw), streamPath(f.channel, key)
	f.set = func(v configVersion) {
		f.cdn.setServerConfig(f.sdkKey, flagKey, v.Value, v.Etag, v.LastModified, host, path)
	}
	v0 := f.version(0)
	f.set(v0)
	f.rs.publish(t, f.channel, v0.Etag, v0.LastModified.UnixMilli())
	awaitLatestStored(t, f.gw, f.channel, key, v0)
	return f
}

// startSDK starts the driver on the fixture and waits for it to serve version 0; it returns
// the index of that value line.
func (f *sdkFixture) startSDK(t *testing.T, sdk serverSDK) (*scriptProc, int) {
	t.Helper()
	p := sdk.start(t, map[string]any{"sdkKey": f.sdkKey, "cdnURL": f.cdn.URL, "variable": flagKey,
		"default": "default", "pollMS": sdkPollMS})
	p.wait(30*time.Second, 0, "initialization ({\"ev\":\"ready\"})", func(l scriptLine) bool { return l.Ev == "ready" })
	_, at := p.waitValue(5*time.Second, 0, f.version(0).Value)
	return p, at
}

// expectCDN waits until the CDN has answered ok 200s and notModified 304s for the server
// config, and fails if it has answered more.
func (f *sdkFixture) expectCDN(t *testing.T, client, when string, ok, notModified int) {
	t.Helper()
	var gotOK, got304 int
	waitFor(t, updateBudget, func() string {
		return fmt.Sprintf("%s: %s: expected %d config downloads (200) and %d conditional requests answered 304, got %d and %d:%s",
			client, when, ok, notModified, gotOK, got304, f.cdn.describe(serverCfgPath))
	}, func() bool {
		gotOK, got304 = f.cdn.statuses(serverCfgPath)
		return gotOK >= ok && got304 >= notModified
	})
	if gotOK != ok || got304 != notModified {
		t.Fatalf("%s: %s: expected %d config downloads (200) and %d conditional requests answered 304, got %d and %d:%s",
			client, when, ok, notModified, gotOK, got304, f.cdn.describe(serverCfgPath))
	}
}

// testServerSDK: initialised with polling slowed to ten minutes, each publish makes the SDK
// serve the new value (timed), downloading it exactly once, with the conditional headers its
// source says; a repeated version costs a 304 and no download; after a drain (SIGTERM, with a
// version published during it) and after a --max-lifetime close it reconnects by itself and
// ends at the newest version.
func testServerSDK(t *testing.T, sdk serverSDK) {
	drain := []string{"--drain", "2s"}
	f := newSDKFixture(t, sdk.name, gatewayConfig{Extra: drain}, func(gw *gateway) string { return "http://" + gw.Addr })
	p, at := f.startSDK(t, sdk)
	// The gateway sends the channel's newest event to the new stream: version 0, which the SDK
	// holds, so it costs conditional requests only.
	f.expectCDN(t, sdk.name, "after connecting", 1, sdk.connectRequests)

	tm := &timings{name: sdk.name}
	for i := 1; i <= flips; i++ {
		v, held := f.version(i), f.version(i-1)
		f.set(v)
		start := f.rs.publish(t, f.channel, v.Etag, v.LastModified.UnixMilli())
		var l scriptLine
		l, at = p.wait(updateBudget, at, fmt.Sprintf("variable %s = %q after PUBLISH of etag %s (last value seen %v; CDN requests:%s)",
			flagKey, v.Value, v.Etag, p.lastValue(), f.cdn.describe(serverCfgPath)),
			func(l scriptLine) bool { return l.Ev == "value" && l.Value == v.Value })
		tm.add(l.at().Sub(start))
		f.expectCDN(t, sdk.name, fmt.Sprintf("after %d config changes", i), 1+i, sdk.connectRequests)
		reqs := f.cdn.requests(serverCfgPath)
		r := reqs[len(reqs)-1]
		wantIMS := sdk.ifModifiedSince(held, v).UTC().Format(http.TimeFormat)
		if r.IfNoneMatch != held.Etag || r.IfModifiedSince != wantIMS {
			t.Fatalf("%s: refetch after the message for %s: want If-None-Match %s and If-Modified-Since %q, got %s",
				sdk.name, v.Etag, held.Etag, wantIMS, r)
		}
	}
	tm.report(t)

	// The newest version again (a later lastModified, so the gateway forwards it): the SDK asks
	// the CDN conditionally, gets a 304 and downloads nothing.
	last := f.version(flips)
	f.rs.publish(t, f.channel, last.Etag, last.LastModified.UnixMilli()+1000)
	f.expectCDN(t, sdk.name, "after the newest version was published again", 1+flips, sdk.connectRequests+1)
	if v := p.lastValue(); v != last.Value {
		t.Fatalf("%s: value %v after a repeated version, want %q", sdk.name, v, last.Value)
	}

	// Drain: SIGTERM, a version published while the gateway drains, the gateway back on the
	// same address (now closing streams after 3.2-4 s; on the taken-over HTTP/1.1 path a
	// lifetime is checked once per heartbeat interval, hence --heartbeat 1s). The SDK's stream
	// fails, it reconnects on its own and ends at that version.
	vd := f.version(flips + 1)
	f.set(vd)
	from := len(p.lines())
	drainStart := time.Now()
	f.gw.drainPublishing(f.rs, f.channel, vd, append(drain, "--max-lifetime", "4s", "--heartbeat", "1s")...)
	newest, at := p.waitValue(45*time.Second, at, vd.Value)
	drained := newest.at().Sub(drainStart)
	fault, fi := p.wait(5*time.Second, from, "its stream failing on the drain (log "+sdk.fault+")",
		func(l scriptLine) bool { return l.isLog(sdk.fault) })
	back, bi := p.wait(30*time.Second, fi, "a reconnect after the drain (log "+sdk.connected+")",
		func(l scriptLine) bool { return l.isLog(sdk.connected) })
	checkFaults(t, sdk, p, from, bi)

	// The new stream is live: a publish reaches it.
	va := f.version(flips + 2)
	f.set(va)
	start := f.rs.publish(t, f.channel, va.Etag, va.LastModified.UnixMilli())
	l, at := p.waitValue(updateBudget, max(at, bi), va.Value)
	afterDrain := l.at().Sub(start)

	// The restarted gateway closes the stream at its lifetime; a version published then reaches
	// the SDK once it has reconnected.
	fault2, fi2 := p.wait(10*time.Second, bi, "its stream failing at --max-lifetime 4s (log "+sdk.fault+")",
		func(l scriptLine) bool { return l.isLog(sdk.fault) })
	vg := f.version(flips + 3)
	f.set(vg)
	f.rs.publish(t, f.channel, vg.Etag, vg.LastModified.UnixMilli())
	p.waitValue(30*time.Second, at, vg.Value)
	back2, bi2 := p.wait(30*time.Second, fi2, "a reconnect after the lifetime close (log "+sdk.connected+")",
		func(l scriptLine) bool { return l.isLog(sdk.connected) })
	checkFaults(t, sdk, p, fi2, bi2)
	ok, nm := f.cdn.statuses(serverCfgPath)
	summary := fmt.Sprintf("%s: drain -> newest value %v (reconnect %v after its stream failed), then publish -> new value %v; "+
		"lifetime close -> reconnect %v; CDN 200s %d (of %d versions), 304s %d",
		sdk.name, drained.Round(100*time.Millisecond), back.at().Sub(fault.at()).Round(100*time.Millisecond),
		afterDrain.Round(100*time.Microsecond), back2.at().Sub(fault2.at()).Round(100*time.Millisecond), ok, flips+4, nm)
	t.Log(summary)
	appendTimings(summary)
}

// checkFaults fails when a fault the SDK logged between lines from and to was not the network's
// (the gateway cutting the stream, or refusing connections while it restarts): the retry: frame
// that precedes a cut must not be what ended its read loop.
func checkFaults(t *testing.T, sdk serverSDK, p *scriptProc, from, to int) {
	t.Helper()
	lines := p.lines()
	for i := from; i < to; i++ {
		if !lines[i].isLog(sdk.fault) {
			continue
		}
		msg := lines[i].Msg
		if i+1 < len(lines) && lines[i+1].Ev == "log" {
			msg += "\n" + lines[i+1].Msg
		}
		if !slices.ContainsFunc(sdk.networkFaults, func(s string) bool { return strings.Contains(msg, s) }) {
			t.Fatalf("%s: its stream failed for another reason than the connection being cut or refused: %q", sdk.name, msg)
		}
	}
}

// testServerSDKReadLoop puts a splitProxy between the SDK and a gateway sending a heartbeat
// every 200 ms: heartbeats and events split across TCP writes (and HTTP chunks) must neither
// end the SDK's read loop nor its stream: the proxy relays one stream from start to end, the
// SDK logs no fault, it reads the heartbeats, and every publish makes it serve the new value.
func testServerSDKReadLoop(t *testing.T, sdk serverSDK) {
	t.Parallel() // mostly waiting; it records no timings
	var proxy *splitProxy
	f := newSDKFixture(t, sdk.name, gatewayConfig{Heartbeat: 200 * time.Millisecond}, func(gw *gateway) string {
		proxy = startSplitProxy(t, gw)
		return proxy.URL
	})
	p, at := f.startSDK(t, sdk)
	const beats = 10
	waitFor(t, 15*time.Second, func() string {
		return fmt.Sprintf("%s: expected %d heartbeats read (log %q); it printed:\n%s", sdk.name, beats, sdk.heartbeat, p.stdout.tail(15))
	}, func() bool {
		return p.count(func(l scriptLine) bool { return l.Ev == "log" && l.Msg == sdk.heartbeat }) >= beats
	})
	for i := 1; i <= 3; i++ {
		v := f.version(i)
		f.set(v)
		f.rs.publish(t, f.channel, v.Etag, v.LastModified.UnixMilli())
		_, at = p.waitValue(updateBudget, at, v.Value)
	}
	if n := p.count(func(l scriptLine) bool { return l.isLog(sdk.fault) }); n > 0 {
		t.Fatalf("%s: its stream failed %d times while heartbeats and split frames arrived", sdk.name, n)
	}
	if n := proxy.opened(); n != 1 {
		t.Fatalf("%s: opened %d streams through the proxy, want 1 (its read loop must not end)", sdk.name, n)
	}
	// An exception that escaped a thread (its read loop's among them) is printed to stderr.
	if l, _ := p.stderr.snapshot(); containsAny(l, "Exception in thread") || containsAny(l, "Traceback") {
		t.Fatalf("%s: an exception escaped a thread:\n%s", sdk.name, strings.Join(l, "\n"))
	}
}

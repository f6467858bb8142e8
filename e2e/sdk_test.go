package e2e

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// flips is how many changes each test publishes and times: 5, or $E2E_FLIPS (more samples for
// docs/CLIENTS.md).
var flips = envInt("E2E_FLIPS", 5)

const (
	flagKey = "e2e-flag"
	// updateBudget bounds publish -> new value. Both SDKs poll every 60 s (server) or never
	// (client), so anything near this budget means SSE did not do its job.
	updateBudget = 5 * time.Second
)

// devcycleChannel is a channel named like DevCycle's: <prefix>_<40 hex>_v1.
func devcycleChannel(prefix, seed string) string {
	h := sha1.Sum([]byte(seed))
	return prefix + "_" + hex.EncodeToString(h[:]) + "_v1"
}

// configVersion i of a test's config: a quoted etag, and a Last-Modified 10 s after version
// i-1 (the SDK keeps a new config only when its Last-Modified is later, at second precision).
type configVersion struct {
	Etag         string
	LastModified time.Time
	Value        string
}

func versions(name string) func(i int) configVersion {
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	return func(i int) configVersion {
		return configVersion{
			Etag:         fmt.Sprintf(`"%s-%d"`, name, i),
			LastModified: base.Add(time.Duration(i) * 10 * time.Second),
			Value:        fmt.Sprintf("value-%d", i),
		}
	}
}

// awaitLatestStored waits until a fresh raw connection gets want as its first event: the
// gateway has stored the channel's latest event, so an SDK connecting now gets it on connect.
func awaitLatestStored(t *testing.T, gw *gateway, channel, key string, v configVersion) {
	t.Helper()
	want := eventID(v.LastModified.UnixMilli(), v.Etag)
	var got string
	waitFor(t, 5*time.Second, func() string {
		return fmt.Sprintf("a fresh connection to %s should first get the channel's latest event id %q; got %q", channel, want, got)
	}, func() bool {
		s := openRawStream(t, gw.streamURL(channel, key), nil)
		defer s.close()
		it, ok := s.next(time.Second)
		got = it.ID
		return ok && it.ID == want
	})
}

// TestNodeServerSDK drives @devcycle/nodejs-server-sdk: its config comes from the CDN stand-in
// with sse {hostname: gateway, path: /event-stream?...}; a PUBLISH must make it refetch and
// serve the new value long before its next poll (10 min while its stream is up); an event whose
// etag it holds must not. After a drain (SIGTERM) with a version published during it, it falls
// back to polling (every 2 s here), reopens its stream and ends at the newest version.
func TestNodeServerSDK(t *testing.T) {
	const (
		sdkKey = "dvc_server_e2e_node_server_sdk"
		key    = "e2e-key-node-server"
		client = "node-server-sdk"
	)
	requireNodeModules(t)
	channel := devcycleChannel("dvc_server", t.Name())
	rs := startRedis(t)
	drain := []string{"--drain", "2s"}
	gw := startGateway(t, gatewayConfig{RedisURL: rs.URL(), KeysFile: writeKeysFile(t, key, "dvc_server_*"), Extra: drain})
	cdn := startCDN(t)
	const cfgPath = "/config/v2/server/"
	host, path := "http://"+gw.Addr, streamPath(channel, key)
	version := versions("node-server")
	set := func(v configVersion) {
		cdn.setServerConfig(sdkKey, flagKey, v.Value, v.Etag, v.LastModified, host, path)
	}

	// The channel's latest event names the config version the SDK is about to download.
	v0 := version(0)
	set(v0)
	rs.publish(t, channel, v0.Etag, v0.LastModified.UnixMilli())
	awaitLatestStored(t, gw, channel, key, v0)

	p := startNode(t, client, "server-sdk.mjs", map[string]any{
		"sdkKey": sdkKey, "cdnURL": cdn.URL, "variable": flagKey, "default": "default", "pollMS": 2000})
	p.wait(20*time.Second, 0, "initialization ({\"ev\":\"ready\"})", func(l scriptLine) bool { return l.Ev == "ready" })
	_, at := p.waitValue(5*time.Second, 0, v0.Value)

	// Fresh connection: the gateway sends the latest event on connect; the SDK holds that etag,
	// so it must not ask the CDN again (checked once the first change below has arrived).
	_, onConnect := p.wait(10*time.Second, at, "the gateway's latest event on connect (SDK debug log \"SSE message: ...\" naming "+v0.Etag+")",
		func(l scriptLine) bool { return isSSEMessage(l, etagInLog(v0.Etag)) })

	// Flip the value at the CDN, PUBLISH, and time the SDK's switch to the new value.
	tm := &timings{name: client}
	for i := 1; i <= flips; i++ {
		v := version(i)
		set(v)
		start := rs.publish(t, channel, v.Etag, v.LastModified.UnixMilli())
		var l scriptLine
		l, at = p.wait(updateBudget, at, fmt.Sprintf("variable %s = %q after PUBLISH of etag %s (last value seen %v; CDN requests:%s)",
			flagKey, v.Value, v.Etag, p.lastValue(), cdn.describe(cfgPath)),
			func(l scriptLine) bool { return l.Ev == "value" && l.Value == v.Value })
		tm.add(l.at().Sub(start))
		if n := cdn.count(cfgPath); n != 1+i {
			t.Fatalf("%s: after %d config changes expected %d CDN requests, got %d:%s", client, i, 1+i, n, cdn.describe(cfgPath))
		}
		if i == 1 {
			requireNoRefetch(t, p, client, onConnect, etagInLog(v.Etag), "the latest event on connect, whose etag it held")
		}
	}
	tm.report(t)

	// The same etag again (a later lastModified so the gateway forwards it): no refetch. A new
	// version published after it marks the moment: the SDK handles messages in order.
	last := version(flips)
	again := last.LastModified.UnixMilli() + 1000
	rs.publish(t, channel, last.Etag, again)
	_, repeated := p.wait(updateBudget, at, fmt.Sprintf("SDK debug log \"SSE message: ...\" for the repeated etag %s (lastModified %d)", last.Etag, again),
		func(l scriptLine) bool { return isSSEMessage(l, strconv.FormatInt(again, 10)) })
	marker := version(flips + 1)
	set(marker)
	rs.publish(t, channel, marker.Etag, marker.LastModified.UnixMilli())
	_, at = p.waitValue(updateBudget, at, marker.Value)
	requireNoRefetch(t, p, client, repeated, etagInLog(marker.Etag), "an event with the etag it held")
	if n := cdn.count(cfgPath); n != 2+flips {
		t.Fatalf("%s: an event with the etag the SDK already holds must not cause a refetch; expected %d CDN requests, got %d:%s",
			client, 2+flips, n, cdn.describe(cfgPath))
	}

	// Drain. The stream fails; the SDK closes it and polls every 2 s; a poll that succeeds
	// reopens the stream (to the restarted gateway). It must end at the version published
	// during the drain, and its new stream must carry the next one.
	vd := version(flips + 2)
	set(vd)
	from := len(p.lines())
	gw.drainPublishing(rs, channel, vd, drain...)
	fault, failed := p.wait(10*time.Second, from, "its stream failing on the drain (log \"SSE connection error, switching to polling\")",
		func(l scriptLine) bool { return l.isLog("SSE connection error, switching to polling") })
	_, at = p.waitValue(20*time.Second, at, vd.Value)
	back, reopened := p.wait(20*time.Second, failed, "its stream reopened after the drain (log \"SSE connection opened\")",
		func(l scriptLine) bool { return l.isLog("SSE connection opened") })
	logReconnect(t, client, back.at().Sub(fault.at()))
	va := version(flips + 3)
	set(va)
	rs.publish(t, channel, va.Etag, va.LastModified.UnixMilli())
	p.wait(updateBudget, reopened, "the next version over its reopened stream (SDK debug log \"SSE message: ...\" naming "+va.Etag+")",
		func(l scriptLine) bool { return isSSEMessage(l, etagInLog(va.Etag)) })
	p.waitValue(updateBudget, at, va.Value)
}

// logReconnect logs (and appends to $E2E_TIMINGS_FILE) how long a client took from its stream
// failing on a drain to its next stream opening, for docs/CLIENTS.md.
func logReconnect(t *testing.T, client string, d time.Duration) {
	t.Helper()
	line := fmt.Sprintf("%s: drain -> stream open again after %v", client, d.Round(100*time.Millisecond))
	t.Log(line)
	appendTimings(line)
}

// isSSEMessage reports whether l is the Node server SDK's debug log of a stream message
// containing s.
func isSSEMessage(l scriptLine, s string) bool {
	return l.Ev == "log" && strings.HasPrefix(l.Msg, "SSE message:") && strings.Contains(l.Msg, s)
}

// requireNoRefetch fails if the Node server SDK started a config request for the message it
// logged at line from, what that message was. The SDK handles a message synchronously up to
// the request ("Requesting new config ..." is logged before it goes out), so the next message
// it logs (the one containing marker) closes the window.
func requireNoRefetch(t *testing.T, p *scriptProc, client string, from int, marker, what string) {
	t.Helper()
	lines := p.lines()
	for i := from + 1; i < len(lines); i++ {
		switch l := lines[i]; {
		case isSSEMessage(l, marker):
			return
		case l.isLog("Requesting new config"):
			t.Fatalf("%s: refetched after %s: %s", client, what, l.Msg)
		}
	}
	t.Fatalf("%s: no SSE message containing %s after line %d", client, marker, from)
}

// etagInLog is how an etag appears in the SDK's "SSE message: <data>" log line: inside the
// envelope's data string, so its quotes are escaped twice.
func etagInLog(etag string) string {
	return strings.Trim(etag, `"`)
}

// TestJSClientSDK drives @devcycle/js-client-sdk under Node (eventsource as the global
// EventSource): see clientSDKScenario.
func TestJSClientSDK(t *testing.T) {
	clientSDKScenario(t, clientSDKRun{name: "js-client-sdk", script: "client-sdk.mjs",
		sdkKey: "dvc_client_e2e_js_client_sdk", key: "e2e-key-js-client", channelPrefix: "dvc_client"})
}

// clientSDKRun names one client SDK script in e2e/node and the key and channel it uses.
type clientSDKRun struct {
	name, script, sdkKey, key, channelPrefix string
}

// clientSDKScenario drives a js-client-sdk script: its config comes from the stand-in's
// /v1/sdkConfig with sse.url pointing at the gateway; a PUBLISH must make it refetch with sse=1,
// sseLastModified and sseEtag from our message and serve the new value; an event whose etag it
// holds must not. After a drain (SIGTERM) with a version published during it, its EventSource
// reconnects and it ends at the newest version.
func clientSDKScenario(t *testing.T, run clientSDKRun) {
	sdkKey, key, client := run.sdkKey, run.key, run.name
	requireNodeModules(t)
	channel := devcycleChannel(run.channelPrefix, t.Name())
	rs := startRedis(t)
	drain := []string{"--drain", "2s"}
	gw := startGateway(t, gatewayConfig{RedisURL: rs.URL(), KeysFile: writeKeysFile(t, key, run.channelPrefix+"_*"), Extra: drain})
	cdn := startCDN(t)
	const cfgPath = "/v1/sdkConfig"
	// Through a balancer, as in production: the drain below restarts the lone gateway on its
	// address, and a client must find it back rather than a refused port (see balancer).
	sseURL := "http://" + startBalancer(t, gw).Addr + streamPath(channel, key)
	version := versions(client)
	set := func(v configVersion) { cdn.setClientConfig(sdkKey, flagKey, v.Value, v.Etag, v.LastModified, sseURL) }

	v0 := version(0)
	set(v0)
	rs.publish(t, channel, v0.Etag, v0.LastModified.UnixMilli())
	awaitLatestStored(t, gw, channel, key, v0)

	p := startNode(t, client, run.script, map[string]any{
		"sdkKey": sdkKey, "apiURL": cdn.URL, "variable": flagKey, "default": "default"})
	p.wait(20*time.Second, 0, "initialization ({\"ev\":\"ready\"})", func(l scriptLine) bool { return l.Ev == "ready" })
	_, at := p.waitValue(5*time.Second, 0, v0.Value)
	conn, _ := p.wait(5*time.Second, 0, "the SDK opening its EventSource", func(l scriptLine) bool { return l.Ev == "sse-connect" })
	if conn.URL != sseURL {
		t.Fatalf("%s: EventSource opened %q, want the config's sse.url %q", client, conn.URL, sseURL)
	}

	// Fresh connection: the latest event arrives on connect; the SDK holds its etag, so it must
	// not refetch. The SDK queues its refetches one after the other, so once the first change
	// below has been fetched, a refetch for this event would have been counted before it.
	wantID := eventID(v0.LastModified.UnixMilli(), v0.Etag)
	_, at = p.wait(10*time.Second, at, "the gateway's latest event on connect (id "+wantID+")", func(l scriptLine) bool {
		return l.Ev == "sse" && l.LastEventID == wantID
	})

	// publishFetched publishes v, waits for the SDK to serve it, and checks that it was
	// fetched once more (n requests in all), with the message's lastModified and etag.
	publishFetched := func(v configVersion, n int) time.Duration {
		t.Helper()
		set(v)
		start := rs.publish(t, channel, v.Etag, v.LastModified.UnixMilli())
		var l scriptLine
		l, at = p.wait(updateBudget, at, fmt.Sprintf("variable %s = %q after PUBLISH of etag %s (last value seen %v; requests:%s)",
			flagKey, v.Value, v.Etag, p.lastValue(), cdn.describe(cfgPath)),
			func(l scriptLine) bool { return l.Ev == "value" && l.Value == v.Value })
		reqs := cdn.requests(cfgPath)
		if len(reqs) != n {
			t.Fatalf("%s: after the PUBLISH of %s expected %d requests in all, got %d:%s", client, v.Etag, n, len(reqs), cdn.describe(cfgPath))
		}
		q := reqs[len(reqs)-1].Query
		wantLM := strconv.FormatInt(v.LastModified.UnixMilli(), 10)
		if q.Get("sse") != "1" || q.Get("sseLastModified") != wantLM || q.Get("sseEtag") != v.Etag {
			t.Fatalf("%s: refetch after an SSE message must carry sse=1&sseLastModified=%s&sseEtag=%s (from our message); got sse=%q sseLastModified=%q sseEtag=%q",
				client, wantLM, v.Etag, q.Get("sse"), q.Get("sseLastModified"), q.Get("sseEtag"))
		}
		return l.at().Sub(start)
	}

	tm := &timings{name: client}
	for i := 1; i <= flips; i++ {
		tm.add(publishFetched(version(i), 1+i))
	}
	tm.report(t)

	// The same etag again: no refetch; the next version, fetched after it, marks the moment.
	last := version(flips)
	again := last.LastModified.UnixMilli() + 1000
	rs.publish(t, channel, last.Etag, again)
	againID := eventID(again, last.Etag)
	p.wait(updateBudget, at, "the repeated-etag event (id "+againID+")", func(l scriptLine) bool {
		return l.Ev == "sse" && l.LastEventID == againID
	})
	publishFetched(version(flips+1), 2+flips)

	// Drain: the EventSource reconnects by itself (after the gateway's retry:) to the restarted
	// gateway, with Last-Event-ID; it must end at the version published during the drain, and
	// its new connection must carry the next one.
	vd := version(flips + 2)
	set(vd)
	from := len(p.lines())
	gw.drainPublishing(rs, channel, vd, drain...)
	fault, failed := p.wait(10*time.Second, from, "an EventSource error on the drain", func(l scriptLine) bool { return l.Ev == "sse-error" })
	back, _ := p.wait(20*time.Second, failed, "its EventSource open again after the drain", func(l scriptLine) bool { return l.Ev == "sse-open" })
	logReconnect(t, client, back.at().Sub(fault.at()))
	_, at = p.waitValue(20*time.Second, at, vd.Value)
	publishFetched(version(flips+3), cdn.count(cfgPath)+1)
}

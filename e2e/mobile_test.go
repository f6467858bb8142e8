package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The mobile SDKs' transports against gateways that close their streams: gateway A ends every
// stream after its --max-lifetime (80-100% of it, with a jittered retry: of 1-5 s) and is then
// drained (SIGTERM) while gateway B, on the same Redis, takes over behind the tap (a load
// balancer that records the wire).
const (
	mobileLifetime = 4 * time.Second
	// reconnectBudget bounds gateway close -> the client holds a version published meanwhile:
	// the retry: delay (at most 5 s) plus a reconnect and, for the SDK, a refetch.
	reconnectBudget = 15 * time.Second
)

// closingGateways is a private Redis with gateways A (--max-lifetime) and B behind a tap.
type closingGateways struct {
	rs      *redisServer
	a, b    *gateway
	tap     *tap
	channel string
	key     string
	url     string // the stream URL clients get: through the tap
}

func startClosingGateways(t *testing.T, key, channelPrefix string) *closingGateways {
	t.Helper()
	rs := startRedis(t)
	keys := writeKeysFile(t, key, channelPrefix+"_*")
	// --heartbeat 1s: the gateway enforces lifetimes when it visits a stream for its heartbeat.
	a := startGateway(t, gatewayConfig{RedisURL: rs.URL(), KeysFile: keys, Heartbeat: time.Second, Extra: []string{"--max-lifetime", mobileLifetime.String()}})
	b := startGateway(t, gatewayConfig{RedisURL: rs.URL(), KeysFile: keys, Heartbeat: time.Second})
	tp := startTap(t, func() []string { return []string{a.Addr, b.Addr} })
	channel := devcycleChannel(channelPrefix, t.Name())
	return &closingGateways{rs: rs, a: a, b: b, tap: tp, channel: channel, key: key,
		url: "http://" + tp.Addr + streamPath(channel, key)}
}

// checkReconnects checks on the wire (the tap) what a client did after each stream ended:
// its next request came after the stream's retry: delay scaled by [minRetry, 1] (minus 50 ms of
// clock slack, plus slack for a loaded machine), carried as Last-Event-ID the last id it had
// received, and got no event it already had. The last stream must be on gateway B. It returns
// a summary for the log.
func checkReconnects(t *testing.T, client string, g *closingGateways, minRetry float64, slack time.Duration) string {
	t.Helper()
	streams := g.tap.streams()
	if len(streams) < 3 {
		t.Fatalf("%s: expected at least 3 streams through the tap (first, after A's lifetime close, after A's drain), got %d", client, len(streams))
	}
	var summary []string
	lastID := ""
	for i, s := range streams {
		if i > 0 {
			prev := streams[i-1]
			if prev.Closed.IsZero() {
				t.Fatalf("%s: stream %d began while stream %d was still open (one stream at a time expected): %+v", client, i+1, i, streams)
			}
			gap := s.Accepted.Sub(prev.Closed)
			if len(prev.Retry) == 0 {
				t.Fatalf("%s: stream %d ended without a retry: line (A closes with one on lifetime and drain): %+v", client, i, prev)
			}
			retry := time.Duration(prev.Retry[len(prev.Retry)-1]) * time.Millisecond
			lo := time.Duration(float64(retry)*minRetry) - 50*time.Millisecond
			if gap < lo || gap > retry+slack {
				t.Errorf("%s: reconnect %d came %v after the close, outside [%v, %v] for retry: %v", client, i, gap.Round(time.Millisecond), lo, retry+slack, retry)
			}
			if !s.HasLastID || s.LastEventID != lastID {
				t.Errorf("%s: request %d carried Last-Event-ID %q (present %v), want %q, the last id it had received", client, i+1, s.LastEventID, s.HasLastID, lastID)
			}
			summary = append(summary, fmt.Sprintf("retry %v -> reconnect after %v", retry, gap.Round(time.Millisecond)))
		}
		for _, id := range s.IDs {
			if lastID != "" && !idNewer(id, lastID) {
				t.Errorf("%s: stream %d re-sent %s although the client held %s", client, i+1, id, lastID)
			}
			lastID = id
		}
	}
	if last := streams[len(streams)-1]; last.Backend != g.b.Addr {
		t.Errorf("%s: the last stream went to %s, want gateway B (%s) after A's drain", client, last.Backend, g.b.Addr)
	}
	return strings.Join(summary, "; ")
}

// idNewer reports whether gateway event id a (<lastModified>-<hash>) is a later version than b.
func idNewer(a, b string) bool {
	la, ha, _ := strings.Cut(a, "-")
	lb, hb, _ := strings.Cut(b, "-")
	if len(la) != len(lb) {
		return len(la) > len(lb)
	}
	if la != lb {
		return la > lb
	}
	return ha > hb
}

// TestReactNativeSDK runs @devcycle/js-client-sdk as the React Native SDK wires it
// (rn-client-sdk.mjs: react-native-sse on an XMLHttpRequest with React Native's semantics):
// the invalidation scenario of TestJSClientSDK, then the gateway closing its stream.
func TestReactNativeSDK(t *testing.T) {
	run := clientSDKRun{name: "react-native-sdk", script: "rn-client-sdk.mjs",
		sdkKey: "dvc_client_e2e_react_native", key: "e2e-key-react-native", channelPrefix: "dvc_client"}
	t.Run("invalidation", func(t *testing.T) { clientSDKScenario(t, run) })

	// After A's lifetime close and after A's drain, react-native-sse must come back after the
	// retry: delay with Last-Event-ID, and the SDK serve the version published meanwhile.
	t.Run("gateway-closes", func(t *testing.T) {
		requireNodeModules(t)
		g := startClosingGateways(t, run.key, run.channelPrefix)
		cdn := startCDN(t)
		version := versions(run.name)
		publish := func(i int) configVersion {
			v := version(i)
			cdn.setClientConfig(run.sdkKey, flagKey, v.Value, v.Etag, v.LastModified, g.url)
			g.rs.publish(t, g.channel, v.Etag, v.LastModified.UnixMilli())
			return v
		}
		v0 := publish(0)
		awaitLatestStored(t, g.a, g.channel, g.key, v0)
		p := startNode(t, run.name, run.script, map[string]any{
			"sdkKey": run.sdkKey, "apiURL": cdn.URL, "variable": flagKey, "default": "default"})
		p.wait(20*time.Second, 0, "initialization ({\"ev\":\"ready\"})", func(l scriptLine) bool { return l.Ev == "ready" })
		_, at := p.wait(10*time.Second, 0, "the latest event on connect", func(l scriptLine) bool {
			return l.Ev == "sse" && l.LastEventID == eventID(v0.LastModified.UnixMilli(), v0.Etag)
		})

		// A's lifetime ends the stream; a version is published while the app is disconnected.
		_, at = p.wait(mobileLifetime+5*time.Second, at, "the stream to end (A's --max-lifetime "+mobileLifetime.String()+")",
			func(l scriptLine) bool { return l.Ev == "sse-error" || l.Ev == "sse-close" })
		closed := time.Now()
		v1 := publish(1)
		_, at = p.wait(reconnectBudget, at, fmt.Sprintf("value %q after A's lifetime close (tap: %+v)", v1.Value, g.tap.streams()),
			func(l scriptLine) bool { return l.Ev == "value" && l.Value == v1.Value })
		lifetimeTook := time.Since(closed)

		// A drains (SIGTERM); B takes over behind the tap.
		drained := time.Now()
		g.a.stop()
		v2 := publish(2)
		p.wait(reconnectBudget, at, fmt.Sprintf("value %q after A's drain (tap: %+v)", v2.Value, g.tap.streams()),
			func(l scriptLine) bool { return l.Ev == "value" && l.Value == v2.Value })
		drainTook := time.Since(drained)
		// react-native-sse waits exactly the retry: value.
		summary := checkReconnects(t, run.name, g, 1, 3*time.Second)
		t.Logf("react-native-sse: stream ended -> new value served in %v (lifetime close), %v (drain, incl. A's exit); %s",
			lifetimeTook.Round(time.Millisecond), drainTook.Round(time.Millisecond), summary)
	})
}

// requireAndroidClient fails unless e2e/android was built from its current sources by
// scripts/mobile-deps; it returns the java class path.
func requireAndroidClient(t testing.TB) string {
	t.Helper()
	requireExecutable(t, "java")
	dir := filepath.Join(repoRoot(t), "e2e", "android")
	var files []string
	files = append(files, "pom.xml")
	err := filepath.WalkDir(filepath.Join(dir, "src"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatalf("e2e/android: %v", err)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("e2e/android/%s: %v", f, err)
		}
		h.Write(b)
	}
	stamp, err := os.ReadFile(filepath.Join(dir, "target", ".mobile-deps-stamp"))
	if err != nil || strings.TrimSpace(string(stamp)) != hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("e2e/android is not built from its current sources (%v): run scripts/mobile-deps (installs a JDK, Maven and iproute2 and builds it), then rerun", err)
	}
	return filepath.Join(dir, "target", "classes") + string(os.PathListSeparator) + filepath.Join(dir, "target", "dependency", "*")
}

// TestAndroidEventSource runs okhttp-eventsource 4.1.1 on okhttp 4.12.0 (what the DevCycle
// Android SDK 2.7.3 ships) with the SDK's options (e2e/android): it receives each invalidation
// with the envelope intact; after A's lifetime close and after A's drain it reconnects with
// Last-Event-ID, waits what the retry: line says (its own strategy: the base delay retry: sets,
// with up to 50% jitter off it), and gets the version published meanwhile, never one it had.
// Its key is granted dvc_mobile_* only, so a server channel is refused (403).
func TestAndroidEventSource(t *testing.T) {
	const client = "okhttp-eventsource"
	cp := requireAndroidClient(t)
	g := startClosingGateways(t, "e2e-key-android", "dvc_mobile")
	version := versions("android")
	publish := func(i int) (configVersion, string, time.Time) {
		v := version(i)
		start := g.rs.publish(t, g.channel, v.Etag, v.LastModified.UnixMilli())
		return v, eventID(v.LastModified.UnixMilli(), v.Etag), start
	}
	var p *scriptProc
	// message waits for the event with version v and checks its envelope.
	message := func(from int, v configVersion, id, what string) (scriptLine, int) {
		t.Helper()
		m, at := p.wait(reconnectBudget, from, fmt.Sprintf("the event %s %s (tap: %+v)", id, what, g.tap.streams()),
			func(l scriptLine) bool { return l.Ev == "message" && l.ID == id })
		if m.Event != "message" {
			t.Errorf("%s: event name %q, want \"message\"", client, m.Event)
		}
		if msg := checkEventData(m.Data, g.channel, v.Etag, v.LastModified.UnixMilli()); msg != "" {
			t.Errorf("%s: %s", client, msg)
		}
		return m, at
	}
	// The key apps receive is granted dvc_mobile_* only: a server channel is refused.
	server := devcycleChannel("dvc_server", t.Name())
	if st := httpStatus(g.a.streamURL(server, g.key)); st != 403 {
		t.Errorf("a stream on %s with the mobile key: status %d, want 403", server, st)
	}
	v0, id0, _ := publish(0)
	awaitLatestStored(t, g.a, g.channel, g.key, v0)
	p = startScript(t, client, "", "java", "-cp", cp, "e2e.AndroidTransport", g.url)
	_, at := message(0, v0, id0, "on connect")

	v1, id1, start := publish(1)
	m, at := message(at, v1, id1, "after PUBLISH")
	live := m.at().Sub(start)

	// A's lifetime close: the library reports it, with the base delay retry: set.
	closed, at := p.wait(mobileLifetime+5*time.Second, at, "the stream to end (A's --max-lifetime)",
		func(l scriptLine) bool { return l.Ev == "closed" })
	if closed.LastEventID != id1 {
		t.Errorf("%s: after the close it holds Last-Event-ID %q, want %q", client, closed.LastEventID, id1)
	}
	v2, id2, start := publish(2)
	_, at = message(at, v2, id2, "published after A's lifetime close")
	lifetimeTook := time.Since(start)

	drained := time.Now()
	g.a.stop()
	v3, id3, _ := publish(3)
	message(at, v3, id3, "published during A's drain")
	drainTook := time.Since(drained)

	streams := g.tap.streams()
	if got, want := closed.BaseRetryMs, int64(streams[0].Retry[len(streams[0].Retry)-1]); len(streams[0].Retry) > 0 && got != want {
		t.Errorf("%s: its base retry delay after the first close is %d ms, want %d ms from the retry: line", client, got, want)
	}
	// Its default strategy: the delay retry: sets, less up to 50% jitter.
	summary := checkReconnects(t, client, g, 0.5, 3*time.Second)
	t.Logf("%s: publish -> event %v on a live stream; close -> version published meanwhile in %v (lifetime), %v (drain, incl. A's exit); %s",
		client, live.Round(100*time.Microsecond), lifetimeTook.Round(time.Millisecond), drainTook.Round(time.Millisecond), summary)
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sdkDepsHint ends every failure about a missing Python or Java SDK.
const sdkDepsHint = "run scripts/sdk-deps (pip installs e2e/python/requirements.txt into e2e/python/.venv; " +
	"builds e2e/java and fetches its jars with Maven), then rerun"

// pythonServerSDK is devcycle-python-server-sdk (version pinned in e2e/python/requirements.txt)
// run by e2e/python/server_sdk.py. From its source (managers/config_manager.py, sse_manager.py):
// every event is a refetch, its etag is never read, and the refetch is a GET with If-None-Match
// = the etag it holds and If-Modified-Since = the message's lastModified; its SSE client
// (ld_eventsource) is built for each connection, so a fresh stream sends no Last-Event-ID and
// the gateway's newest event costs one conditional request; it logs "SSE connection created
// successfully" per stream, "SSE keepalive received" per comment, "SSE connection error: <e>"
// when a stream fails (then reconnects after its own 5 s, 10 s, ... backoff).
var pythonServerSDK = serverSDK{
	name:            "python-server-sdk",
	start:           startPython,
	connectRequests: 1,
	ifModifiedSince: func(_, msg configVersion) time.Time { return msg.LastModified },
	connected:       "SSE connection created successfully",
	fault:           "SSE connection error",
	heartbeat:       "DevCycle: SSE keepalive received",
	// urllib3 reports a chunked response cut before its last chunk as "Response ended
	// prematurely" (or "Connection broken: ..."), a reset as "Connection aborted", a gateway
	// not yet back as "Connection refused"; a frame the SDK could not handle would be a JSON,
	// key or type error.
	networkFaults: []string{"Response ended prematurely", "Connection broken", "Connection aborted", "Connection refused"},
}

// startPython runs e2e/python/server_sdk.py with the virtual environment's python.
func startPython(t *testing.T, opts map[string]any) *scriptProc {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "e2e", "python")
	python := filepath.Join(dir, ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("e2e/python/.venv: %v: %s", err, sdkDepsHint)
	}
	requireInstalled(t, "e2e/python/.venv", filepath.Join(dir, ".venv", ".sdk-deps-stamp"), sdkDepsHint,
		filepath.Join(dir, "requirements.txt"))
	arg, _ := json.Marshal(opts)
	return startScript(t, "python-server-sdk", dir, python, "server_sdk.py", string(arg))
}

// TestPythonServerSDK: DevCycle's Python server SDK against the gateway; see testServerSDK.
func TestPythonServerSDK(t *testing.T) { testServerSDK(t, pythonServerSDK) }

// TestPythonServerSDKReadLoop: heartbeats and split frames keep its one stream and read loop
// alive; see testServerSDKReadLoop.
func TestPythonServerSDKReadLoop(t *testing.T) { testServerSDKReadLoop(t, pythonServerSDK) }

// TestPythonServerSDKBackoff: the Python SDK resets its reconnect backoff (5 s, doubling to
// 300 s) only on a message whose type is exactly "refetchConfig" or "ping"
// (config_manager.py, sse_message). When the newest event has no type (as DevCycle's own
// messages), every stream it opens starts with that event and the delay keeps doubling across
// closes: here two lifetime closes in a row, 5 s then 10 s.
func TestPythonServerSDKBackoff(t *testing.T) {
	t.Parallel() // mostly waiting out the SDK's backoff
	sdk := pythonServerSDK
	f := newSDKFixture(t, sdk.name, gatewayConfig{Heartbeat: 500 * time.Millisecond, Extra: []string{"--max-lifetime", "2s"}},
		func(gw *gateway) string { return "http://" + gw.Addr })
	p, at := f.startSDK(t, sdk)
	v1 := f.version(1)
	f.set(v1)
	f.rs.publishType(t, f.channel, v1.Etag, v1.LastModified.UnixMilli(), "")
	_, at = p.waitValue(updateBudget, at, v1.Value)
	var delays []time.Duration
	for attempt, backoff := range []string{"5.0s", "10.0s"} {
		plan := fmt.Sprintf("attempt #%d, backoff: %s", attempt+1, backoff)
		fault, fi := p.wait(10*time.Second, at, "its stream failing at --max-lifetime, then \""+plan+"\"",
			func(l scriptLine) bool { return l.isLog("Attempting SSE reconnection") })
		if !strings.Contains(fault.Msg, plan) {
			t.Fatalf("%s: after close #%d it logged %q, want %q", sdk.name, attempt+1, fault.Msg, plan)
		}
		var back scriptLine
		back, at = p.wait(20*time.Second, fi, "a reconnect (log "+sdk.connected+")", func(l scriptLine) bool { return l.isLog(sdk.connected) })
		delays = append(delays, back.at().Sub(fault.at()).Round(100*time.Millisecond))
	}
	line := fmt.Sprintf("%s: newest event without type: reconnects after lifetime closes took %v", sdk.name, delays)
	t.Log(line)
	appendTimings(line)
}

package e2e

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// javaServerSDK is com.devcycle:java-server-sdk (version pinned in e2e/java/pom.xml) run by
// e2e/java/src/main/java/e2e/ServerSdk.java. From its source (local/managers/SSEManager.java,
// EnvironmentConfigManager.java): its SSE client is LaunchDarkly's okhttp-eventsource, which
// honours retry: and sends Last-Event-ID; every message whose data is JSON with a type absent,
// empty or "refetchConfig" (it reads the envelope, not the payload) makes it refetch with
// If-None-Match and If-Modified-Since of the config it holds; the first comment of its first
// stream and every reconnect ("SSE Connected - setting polling interval ...") make it fetch
// once more, so a fresh stream costs two conditional requests with the gateway's newest event;
// a comment reaches it as a message with empty data ("Received message: "); a failed stream
// is logged as "Error reading event".
var javaServerSDK = serverSDK{
	name:            "java-server-sdk",
	start:           startJava,
	connectRequests: 2,
	ifModifiedSince: func(held, _ configVersion) time.Time { return held.LastModified },
	connected:       "SSE Connected - setting polling interval",
	fault:           "Error reading event",
	heartbeat:       "Received message: ",
	// The cause follows the fault line: okhttp reading a chunked body that ends without its
	// last chunk throws java.io.EOFException ("unexpected end of stream" when cut mid-chunk);
	// a gateway not yet back is a java.net.ConnectException.
	networkFaults: []string{"EOFException", "unexpected end of stream", "ConnectException"},
}

// startJava runs the driver compiled by scripts/sdk-deps, with the jars Maven fetched.
func startJava(t *testing.T, opts map[string]any) *scriptProc {
	t.Helper()
	requireExecutable(t, "java")
	dir := filepath.Join(repoRoot(t), "e2e", "java")
	files := []string{filepath.Join(dir, "pom.xml")}
	var sources []string
	filepath.WalkDir(filepath.Join(dir, "src"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			sources = append(sources, p)
		}
		return nil
	})
	sort.Strings(sources)
	requireInstalled(t, "e2e/java/target", filepath.Join(dir, "target", ".sdk-deps-stamp"), sdkDepsHint, append(files, sources...)...)
	if _, err := os.Stat(filepath.Join(dir, "target", "dependency")); err != nil {
		t.Fatalf("e2e/java/target/dependency: %v: %s", err, sdkDepsHint)
	}
	arg, _ := json.Marshal(opts)
	cp := strings.Join([]string{"target/classes", "target/dependency/*"}, string(os.PathListSeparator))
	return startScript(t, "java-server-sdk", dir, "java", "-cp", cp, "e2e.ServerSdk", string(arg))
}

// TestJavaServerSDK: DevCycle's Java server SDK against the gateway; see testServerSDK.
func TestJavaServerSDK(t *testing.T) { testServerSDK(t, javaServerSDK) }

// TestJavaServerSDKReadLoop: heartbeats and split frames keep its one stream alive; see
// testServerSDKReadLoop.
func TestJavaServerSDKReadLoop(t *testing.T) { testServerSDKReadLoop(t, javaServerSDK) }

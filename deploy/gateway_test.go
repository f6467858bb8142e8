package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// The gateway as the Deployment runs it: the binary the Dockerfile builds, with the
// environment that deployment.yaml, configmap.yaml and secret.yaml give the container.
// Only what cannot be the same here is changed: loopback addresses on free ports, a
// private redis-server for the Secret's Redis URL, and the keys file from the Secret
// written to a temporary directory instead of the volume mount.

// runningGateway is a started `sse-gateway serve`.
type runningGateway struct {
	addr, metricsAddr string
	cmd               *exec.Cmd
	log               *syncBuffer
	exited            chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startGateway runs binary serve with env (on top of the host's, less SSE_GATEWAY_*) and
// waits for its "listening" log lines. It is stopped with SIGTERM when t ends.
func startGateway(t *testing.T, binary string, env map[string]string) *runningGateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binary, "serve")
	cmd.Env = gatewayEnv()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	g := &runningGateway{cmd: cmd, log: &syncBuffer{}, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 4)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(io.TeeReader(stderr, g.log))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Addr != "" {
				addrs <- [2]string{line.Msg, line.Addr}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		<-readDone
		cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
		case <-time.After(time.Minute):
			t.Errorf("gateway did not stop within a minute of SIGTERM; killing it\n%s", g.log.String())
			cancel()
			<-g.exited
		}
		cancel()
	})

	wantMetrics := env["SSE_GATEWAY_METRICS_ADDR"] != ""
	bound := time.After(30 * time.Second)
	for g.addr == "" || (wantMetrics && g.metricsAddr == "") {
		select {
		case a := <-addrs:
			switch a[0] {
			case "listening":
				g.addr = a[1]
			case "metrics listening":
				g.metricsAddr = a[1]
			}
		case <-g.exited:
			t.Fatalf("gateway exited at start (%v):\n%s", cmd.ProcessState, g.log.String())
		case <-bound:
			t.Fatalf("gateway logged no listening addresses within 30s:\n%s", g.log.String())
		}
	}
	if !wantMetrics {
		g.metricsAddr = g.addr
	}
	return g
}

// waitStatus polls url until it answers want, bounded by a minute.
func waitStatus(t *testing.T, g *runningGateway, url string, want int) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(time.Minute)
	last := "no answer"
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-g.exited:
			t.Fatalf("gateway exited:\n%s", g.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%s: %s, want %d within a minute\n%s", url, last, want, g.log.String())
}

// scrape is what the gateway's /metrics exposed: for each sample name, the label sets
// of its series.
type scrape map[string][]map[string]string

func parseExposition(text string) (scrape, error) {
	s := scrape{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		labels := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				return nil, fmt.Errorf("bad sample line %q", line)
			}
			ms, err := parseMatchers(rest[1:end])
			if err != nil {
				return nil, fmt.Errorf("sample line %q: %w", line, err)
			}
			for _, m := range ms {
				labels[m.name] = m.value
			}
		}
		s[name] = append(s[name], labels)
	}
	return s, nil
}

var (
	scrapeMu  sync.Mutex
	scraped   scrape
	scrapeLog string
)

// exportedMetrics runs the gateway as deployed (once per test binary), opens a stream,
// publishes an event through the API and reads it from the stream, so that every
// labelled series has a child, then scrapes /metrics.
func exportedMetrics(t *testing.T) scrape {
	t.Helper()
	scrapeMu.Lock()
	defer scrapeMu.Unlock()
	if scraped == nil {
		runDeployedGateway(t)
	}
	if scraped == nil {
		t.Fatal("the gateway run that reads /metrics failed (see the test that ran it first)")
	}
	return scraped
}

func runDeployedGateway(t *testing.T) {
	t.Helper()
	b := gatewayBuild(t)
	m := loadManifests(t)
	env := podEnv(t, m)
	redis := redistest.Start(t)

	dir := t.TempDir()
	keysFile := filepath.Join(dir, filepath.Base(env["SSE_GATEWAY_KEYS_FILE"]))
	if err := os.WriteFile(keysFile, []byte(m.secret.StringData["keys.json"]), 0o600); err != nil {
		t.Fatal(err)
	}
	var keys struct {
		Keys []struct {
			Name, Key string
			Channels  []string
		}
	}
	if err := json.Unmarshal([]byte(m.secret.StringData["keys.json"]), &keys); err != nil || len(keys.Keys) == 0 {
		t.Fatalf("secret.yaml keys.json: %v (%d keys)", err, len(keys.Keys))
	}
	key := keys.Keys[0]
	channel := strings.TrimSuffix(key.Channels[0], "*") + "deploytest"

	env["SSE_GATEWAY_ADDR"] = "127.0.0.1:0"
	env["SSE_GATEWAY_METRICS_ADDR"] = "127.0.0.1:0"
	env["SSE_GATEWAY_REDIS_URL"] = redis.URL()
	env["SSE_GATEWAY_KEYS_FILE"] = keysFile
	g := startGateway(t, b.binary, env)
	base := "http://" + g.addr

	// The probes the Deployment and the image use.
	waitStatus(t, g, base+"/healthz", http.StatusOK)
	waitStatus(t, g, base+"/readyz", http.StatusOK)
	hc, _ := b.df.final().last("HEALTHCHECK")
	if out, err := runHealthcheck(t, b.binary, healthcheckArgv(t, hc), g.addr); err != nil {
		t.Errorf("the image's HEALTHCHECK against the running gateway: %v\n%s", err, out)
	}
	if resp, err := http.Get("http://" + g.addr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("/metrics is served on the streams port although SSE_GATEWAY_METRICS_ADDR is set")
		}
	}

	// One stream, one published event read back from it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := url.Values{"v": {"1.2"}, "channels": {channel}, "key": {key.Key}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/event-stream?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("opening a stream with the Secret's key: %s %s", resp.Status, body)
	}
	pubBody := fmt.Sprintf(`{"channel":%q,"data":{"etag":"\"deploytest\"","lastModified":%d}}`, channel, time.Now().UnixMilli())
	pub, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/publish", strings.NewReader(pubBody))
	pub.Header.Set("Authorization", "Bearer "+env["SSE_GATEWAY_ADMIN_TOKEN"])
	pub.Header.Set("Content-Type", "application/json")
	presp, err := http.DefaultClient.Do(pub)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := io.ReadAll(presp.Body)
	presp.Body.Close()
	if presp.StatusCode != http.StatusAccepted {
		t.Fatalf("publishing with the Secret's admin token: %s %s", presp.Status, pb)
	}
	sc := bufio.NewScanner(resp.Body)
	got := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") && strings.Contains(sc.Text(), channel) {
			got = true
			break
		}
	}
	if !got {
		t.Fatalf("the stream ended without the published event (%v)\n%s", sc.Err(), g.log.String())
	}

	// Scrape while the stream is open, so that streams_open has a series.
	mresp, err := http.Get("http://" + g.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if mresp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics on SSE_GATEWAY_METRICS_ADDR: %s", mresp.Status)
	}
	s, err := parseExposition(string(text))
	if err != nil {
		t.Fatal(err)
	}
	scraped, scrapeLog = s, string(text)
}

func TestGatewayRunsWithDeploymentEnvironment(t *testing.T) {
	b := gatewayBuild(t)
	s := exportedMetrics(t)
	var names []string
	for n := range s {
		if strings.HasPrefix(n, "sse_gateway_") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	t.Logf("the gateway exports %s", strings.Join(names, " "))

	// The contract's catalogue (CONTRACT.md): every metric is there.
	for _, want := range []string{
		"sse_gateway_streams_open", "sse_gateway_stream_opens_total", "sse_gateway_stream_closes_total",
		"sse_gateway_events_received_total", "sse_gateway_events_malformed_total", "sse_gateway_events_dropped_total",
		"sse_gateway_frames_written_total", "sse_gateway_written_bytes_total",
		"sse_gateway_fanout_duration_seconds_bucket", "sse_gateway_event_age_seconds_bucket",
		"sse_gateway_redis_connected", "sse_gateway_redis_reconnects_total", "sse_gateway_redis_probe_rtt_seconds_bucket",
		"sse_gateway_ready", "sse_gateway_build_info",
	} {
		if _, ok := s[want]; !ok {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The Dockerfile's VERSION build arg reaches build_info through -X main.version.
	found := false
	for _, l := range s["sse_gateway_build_info"] {
		found = found || l["version"] == b.version
	}
	if !found {
		t.Errorf("sse_gateway_build_info has no version=%q (the Dockerfile's VERSION): %v", b.version, s["sse_gateway_build_info"])
	}
	if v := sampleValue(scrapeLog, "sse_gateway_ready"); v != "1" {
		t.Errorf("sse_gateway_ready %q while /readyz answers 200", v)
	}
	if v := sampleValue(scrapeLog, "sse_gateway_redis_connected"); v != "1" {
		t.Errorf("sse_gateway_redis_connected %q with a live Redis", v)
	}
}

// sampleValue returns the value of the first sample of an unlabelled metric.
func sampleValue(text, name string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

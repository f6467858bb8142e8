package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/gateway"
)

// waitLimit bounds every wait of these tests: running out is a failure, never a
// measurement. It stays below what each wait tells its event apart from: keys in Redis are
// re-read every 30 s (a notification brings them at once), a crashed instance's quota share
// expires after 30 s (a stopping one gives it back at once).
const waitLimit = 15 * time.Second

// testAdminToken is the admin token of every test gateway.
const testAdminToken = "test-admin-token"

// testKeys is the keys file of test gateways that do not use Redis keys.
var testKeys = map[string]string{"k1": "secret-one", "k2": "secret-two"}

// writeKeysFile writes testKeys (every channel allowed) and returns its path.
func writeKeysFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	writeKeys(t, path, testKeys)
	return path
}

// writeKeys writes a keys file of name -> key, every key allowed every channel.
func writeKeys(t *testing.T, path string, keys map[string]string) {
	t.Helper()
	var f struct {
		Keys []map[string]any `json:"keys"`
	}
	for name, key := range keys {
		f.Keys = append(f.Keys, map[string]any{"name": name, "key": key, "channels": []string{"*"}})
	}
	b, _ := json.Marshal(f)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testGateway is serve() running in this process.
type testGateway struct {
	t           *testing.T
	addr        string // host:port of --addr
	metricsAddr string // host:port of --metrics-addr, when set
	scheme      string
	logs        *logTap
	stop        func()
}

// startGateway runs serve with args after the test defaults (any flag given again wins),
// waits until it listens, and stops it (checking it drains and returns) when t ends.
// Without --keys-file or --keys-redis in args it gets the keys of testKeys.
func startGateway(t *testing.T, args ...string) *testGateway {
	t.Helper()
	defaults := []string{
		"--addr", "127.0.0.1:0", "--drain", "100ms", "--admin-token", testAdminToken,
		"--heartbeat", "1s", "--probe-interval", "100ms", "--log-level", "debug",
	}
	joined := strings.Join(args, " ")
	if !strings.Contains(joined, "--keys-file") && !strings.Contains(joined, "--keys-redis") {
		defaults = append(defaults, "--keys-file", writeKeysFile(t))
	}
	var cfg gateway.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	serveFlags(fs, &cfg)
	if err := fs.Parse(append(defaults, args...)); err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	tap := newLogTap()
	cfg.Logger = slog.New(slog.NewJSONHandler(tap, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg) }()
	g := &testGateway{t: t, logs: tap, scheme: "http"}
	if cfg.TLSCert != "" {
		g.scheme = "https"
	}
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve returned %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("serve did not return within 15s of its context ending")
			}
		})
	}
	t.Cleanup(g.stop)
	rec, err := tap.wait("listening", waitLimit, done)
	if err != nil {
		t.Fatalf("gateway did not start: %v\nlogs:\n%s", err, tap.String())
	}
	g.addr = rec["addr"].(string)
	if cfg.MetricsAddr != "" {
		rec, err := tap.wait("metrics listening", waitLimit, done)
		if err != nil {
			t.Fatalf("metrics listener: %v", err)
		}
		g.metricsAddr = rec["addr"].(string)
	}
	return g
}

// url is a URL on the gateway's --addr.
func (g *testGateway) url(path string) string { return g.scheme + "://" + g.addr + path }

// streamURL is the stream URL for key on channels.
func (g *testGateway) streamURL(key string, channels ...string) string {
	return g.url("/event-stream?v=1.2&channels=" + strings.Join(channels, ",") + "&key=" + key)
}

// waitReady polls /readyz until it answers 200.
func (g *testGateway) waitReady(c *http.Client) {
	g.t.Helper()
	waitFor(g.t, waitLimit, "the gateway to be ready", func() bool {
		resp, err := c.Get(g.url("/readyz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// publish publishes an event on channel through the admin API and checks it is accepted.
func (g *testGateway) publish(c *http.Client, channel, etag string, lastModified int64) {
	g.t.Helper()
	body := fmt.Sprintf(`{"channel":%q,"data":{"etag":%q,"lastModified":%d}}`, channel, etag, lastModified)
	req, _ := http.NewRequest(http.MethodPost, g.url("/v1/publish"), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := c.Do(req)
	if err != nil {
		g.t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		g.t.Fatalf("publish: %s %s", resp.Status, b)
	}
}

// logTap collects the JSON log lines of a gateway and lets a test wait for a message.
type logTap struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	recs  []map[string]any
	added chan struct{} // closed and replaced on every record
}

func newLogTap() *logTap { return &logTap{added: make(chan struct{})} }

func (l *logTap) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil {
			l.recs = append(l.recs, rec)
		}
	}
	close(l.added)
	l.added = make(chan struct{})
	return len(p), nil
}

func (l *logTap) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// find returns the first record with msg, or nil.
func (l *logTap) find(msg string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r["msg"] == msg {
			return r
		}
	}
	return nil
}

// wait returns the first record with msg, waiting up to d; it gives up early if serve
// returned (done).
func (l *logTap) wait(msg string, d time.Duration, done <-chan error) (map[string]any, error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		added := l.added
		l.mu.Unlock()
		if r := l.find(msg); r != nil {
			return r, nil
		}
		select {
		case <-added:
		case err := <-done:
			return nil, fmt.Errorf("serve returned %v before logging %q", err, msg)
		case <-deadline.C:
			return nil, fmt.Errorf("no %q log line within %v", msg, d)
		}
	}
}

// sseStream is an open stream read line by line by its own goroutine.
type sseStream struct {
	resp  *http.Response
	lines chan string // closed at EOF or error
}

// openStream GETs url and, on 200, starts reading it. It returns the response either way;
// a non-200 body is left for the caller.
func openStream(t *testing.T, c *http.Client, url string, header ...string) (*sseStream, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Cleanup(func() { resp.Body.Close() })
		return nil, resp
	}
	s := &sseStream{resp: resp, lines: make(chan string, 256)}
	go func() {
		defer close(s.lines)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			s.lines <- strings.TrimRight(line, "\r\n")
		}
	}()
	t.Cleanup(s.Close)
	return s, resp
}

// mustOpen opens a stream and fails unless it is 200.
func mustOpen(t *testing.T, c *http.Client, url string, header ...string) *sseStream {
	t.Helper()
	s, resp := openStream(t, c, url, header...)
	if s == nil {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return s
}

// Close hangs up and waits for the reader to finish.
func (s *sseStream) Close() {
	s.resp.Body.Close()
	for range s.lines {
	}
}

// data waits for the next "data:" line and returns what follows it.
func (s *sseStream) data(t *testing.T, d time.Duration) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("stream ended while waiting for an event")
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				return v
			}
		case <-timer.C:
			t.Fatalf("no event within %v", d)
		}
	}
}

// closedWithin reports whether the server ends the stream within d (what it sent before
// is discarded).
func (s *sseStream) closedWithin(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-s.lines:
			if !ok {
				return true
			}
		case <-timer.C:
			return false
		}
	}
}

// refusal checks a refused request: status, a JSON {"error":...} body, and, for 429 and
// 503, an integer Retry-After of at least 1.
func refusal(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %s (%s), want %d", resp.Status, b, status)
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &body); err != nil || body.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", b, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		ra := resp.Header.Get("Retry-After")
		if n, err := strconv.Atoi(ra); err != nil || n < 1 {
			t.Fatalf("%d without a valid Retry-After (%q)", status, ra)
		}
	}
}

// newClient is an HTTP client whose connections are closed when t ends.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	c := &http.Client{Transport: tr, Timeout: 0}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// status GETs url and returns the status code.
func status(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

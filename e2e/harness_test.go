package e2e

import (
	"github.com/sse-gateway/sse-gateway/internal/gwtest"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// depsHint ends every "something is missing" failure.
const depsHint = "run scripts/e2e-deps (installs redis-server, chromium and the node packages), then rerun"

var (
	// workDir holds the gateway binary built once per test run; removed by TestMain.
	workDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sse-gateway-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the module root.
func repoRoot(t testing.TB) string { return gwtest.RepoRoot(t) }

// gatewayBinary returns the sse-gateway binary: $E2E_GATEWAY_BIN, or ./cmd/sse-gateway built once
// per run (with -race when this test binary has the race detector, so races in the gateway
// under real clients are caught too).
func gatewayBinary(t testing.TB) string {
	t.Helper()
	return gwtest.Binary(t, "E2E_GATEWAY_BIN", workDir, raceEnabled)
}

// requireExecutable fails the test when name is not on PATH (or, for an absolute path, absent).
func requireExecutable(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): %s", name, err, depsHint)
	}
	return p
}

// envInt returns the integer in $name, or def when it is unset or not a positive integer.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// waitFor polls cond every 10ms until it holds or timeout passes; then it fails the test with
// what() (which should say which client, what was expected and what arrived).
func waitFor(t testing.TB, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logBuffer collects a child process's output lines; safe for concurrent use.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
	added chan struct{} // closed and replaced on every line
}

func newLogBuffer() *logBuffer { return &logBuffer{added: make(chan struct{})} }

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	b.lines = append(b.lines, line)
	close(b.added)
	b.added = make(chan struct{})
	b.mu.Unlock()
}

// consume reads r line by line into b until EOF.
func (b *logBuffer) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		b.add(sc.Text())
	}
}

func (b *logBuffer) snapshot() ([]string, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...), b.added
}

// tail returns the last n lines, one per line, for failure messages.
func (b *logBuffer) tail(n int) string {
	lines, _ := b.snapshot()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitLine waits until a line from index from on satisfies match and returns it with its index.
func (b *logBuffer) waitLine(timeout time.Duration, from int, match func(string) bool) (string, int, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		lines, added := b.snapshot()
		for i := from; i < len(lines); i++ {
			if match(lines[i]) {
				return lines[i], i, true
			}
		}
		select {
		case <-added:
		case <-deadline.C:
			return "", 0, false
		}
	}
}

// redisServer is a private redis-server on a free port (see redistest), stopped at test
// cleanup, with the test's own client.
type redisServer struct {
	*redistest.Server
	Client *redis.Client
}

func startRedis(t testing.TB) *redisServer {
	t.Helper()
	requireExecutable(t, "redis-server") // fail with depsHint rather than redistest's hint
	s := redistest.Start(t)
	return &redisServer{Server: s, Client: s.Client(&redis.Options{MaxRetries: -1})}
}

// publish does what a config service does: PUBLISH sse:<channel> {"etag":..,"lastModified":..,
// "type":"refetchConfig"}. It returns the time just before the command was sent.
func (r *redisServer) publish(t testing.TB, channel, etag string, lastModified int64) time.Time {
	t.Helper()
	return r.publishType(t, channel, etag, lastModified, "refetchConfig")
}

// publishType is publish with another "type" ("" leaves it out, as DevCycle's own messages do).
func (r *redisServer) publishType(t testing.TB, channel, etag string, lastModified int64, typ string) time.Time {
	t.Helper()
	msg := map[string]any{"etag": etag, "lastModified": lastModified}
	if typ != "" {
		msg["type"] = typ
	}
	payload, _ := json.Marshal(msg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	n, err := r.Client.Publish(ctx, "sse:"+channel, payload).Result()
	if err != nil {
		t.Fatalf("PUBLISH sse:%s: %v", channel, err)
	}
	if n == 0 {
		t.Fatalf("PUBLISH sse:%s %s reached no subscriber: the gateway is not subscribed to Redis", channel, payload)
	}
	return start
}

// gatewayConfig is what a test varies between gateway instances.
type gatewayConfig struct {
	RedisURL  string
	KeysFile  string
	Heartbeat time.Duration // 0 = the gateway's default
	Extra     []string      // more flags
}

// gateway is a running sse-gateway process.
type gateway struct {
	t    testing.TB
	bin  string
	cfg  gatewayConfig
	Addr string // host:port it listens on (fixed after the first start, so restarts reuse it)
	log  *logBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// startGateway starts the gateway on 127.0.0.1:0 and reads the real port from its "listening"
// log line. It is stopped at test cleanup, and its log is printed when the test failed.
func startGateway(t testing.TB, cfg gatewayConfig) *gateway {
	t.Helper()
	g := &gateway{t: t, bin: gatewayBinary(t), cfg: cfg, Addr: "127.0.0.1:0", log: newLogBuffer()}
	t.Cleanup(func() {
		g.stop()
		if t.Failed() || os.Getenv("E2E_LOGS") != "" {
			t.Logf("gateway log (last 60 lines):\n%s", g.log.tail(60))
		}
		if lines, _ := g.log.snapshot(); containsAny(lines, "WARNING: DATA RACE") {
			t.Errorf("the gateway reported a data race; its log:\n%s", g.log.tail(200))
		}
	})
	g.start()
	return g
}

func containsAny(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func (g *gateway) args() []string {
	a := []string{"serve", "--addr", g.Addr, "--redis-url", g.cfg.RedisURL, "--log-format", "json",
		"--admin-token", "e2e-admin-token", "--drain", "200ms"}
	if g.cfg.KeysFile != "" {
		a = append(a, "--keys-file", g.cfg.KeysFile)
	}
	if g.cfg.Heartbeat > 0 {
		a = append(a, "--heartbeat", g.cfg.Heartbeat.String())
	}
	return append(a, g.cfg.Extra...)
}

// gatewayEnv is this process's environment without SSE_GATEWAY_* settings, so only the flags
// above configure the gateway.
func gatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSE_GATEWAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// start launches the process and waits for its "listening" line.
func (g *gateway) start() {
	t := g.t
	t.Helper()
	from := len(mustSnapshot(g.log))
	cmd := exec.Command(g.bin, g.args()...)
	cmd.Env = gatewayEnv()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go g.log.consume(pr)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting gateway %s: %v", g.bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); pw.Close(); close(exited) }()
	g.mu.Lock()
	g.cmd, g.exited = cmd, exited
	g.mu.Unlock()

	line, _, ok := g.log.waitLine(15*time.Second, from, func(l string) bool {
		return strings.Contains(l, `"listening"`)
	})
	if !ok {
		select {
		case <-exited:
			t.Fatalf("gateway exited before logging \"listening\" (%s); args %q; log:\n%s", cmd.ProcessState, g.args(), g.log.tail(40))
		default:
		}
		t.Fatalf("gateway did not log {\"msg\":\"listening\"} within 15s; args %q; log:\n%s", g.args(), g.log.tail(40))
	}
	var rec struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Addr == "" {
		t.Fatalf("gateway \"listening\" line is not JSON with an \"addr\" field: %q (%v)", line, err)
	}
	if _, port, err := net.SplitHostPort(rec.Addr); err != nil || port == "0" {
		t.Fatalf("gateway \"listening\" addr %q has no real port", rec.Addr)
	}
	g.Addr = rec.Addr
	waitFor(t, 10*time.Second, func() string {
		return "gateway /readyz never answered 200 (Redis subscription not live?); log:\n" + g.log.tail(30)
	}, func() bool { return httpStatus("http://"+g.Addr+"/readyz") == 200 })
}

func mustSnapshot(b *logBuffer) []string { l, _ := b.snapshot(); return l }

// kill SIGKILLs the gateway (no drain) and waits for it to exit.
func (g *gateway) kill() {
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// stop SIGTERMs the gateway, SIGKILLs it after 5s, and waits for it to exit.
func (g *gateway) stop() {
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// sigterm starts a drain: it sends SIGTERM and returns at once, with a channel closed when the
// process has exited. restart starts it again.
func (g *gateway) sigterm() <-chan struct{} {
	g.t.Helper()
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		g.t.Fatalf("sigterm: the gateway is not running")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		g.t.Fatalf("sigterm: %v", err)
	}
	return exited
}

// restart starts the gateway again on the same address after kill or stop.
func (g *gateway) restart() {
	g.t.Helper()
	g.start()
}

// drainPublishing does what a rolling restart with a config change in the middle does. A peer
// gateway joins the same Redis (the instance that stays up); the gateway gets SIGTERM; version
// v of channel is PUBLISHed while it drains (the peer stores it); once the gateway has exited
// it starts again on the same address, with cfg.Extra replaced by extra, so that clients
// configured with its address come back to it and get v on connect. It fails if the gateway had
// exited before the PUBLISH returned.
func (g *gateway) drainPublishing(rs *redisServer, channel string, v configVersion, extra ...string) {
	t := g.t
	t.Helper()
	startGateway(t, gatewayConfig{RedisURL: g.cfg.RedisURL, KeysFile: g.cfg.KeysFile})
	exited := g.sigterm()
	rs.publish(t, channel, v.Etag, v.LastModified.UnixMilli())
	select {
	case <-exited:
		t.Fatalf("the gateway had exited before the PUBLISH during its drain returned (args %q)", g.args())
	default:
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the gateway did not exit within 15s of SIGTERM (args %q); log:\n%s", g.args(), g.log.tail(30))
	}
	g.cfg.Extra = extra
	g.restart()
}

// streamURL is the DevCycle-style stream URL for one channel.
func (g *gateway) streamURL(channel, key string) string {
	return "http://" + g.Addr + streamPath(channel, key)
}

func streamPath(channel, key string) string {
	return "/event-stream?v=1.2&channels=" + channel + "&key=" + key
}

// publishOffline stores and publishes an event with the gateway's own CLI
// (`sse-gateway publish`), which works while no gateway is running.
func (g *gateway) publishOffline(channel, etag string, lastModified int64) {
	t := g.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := []string{"publish", "--redis-url", g.cfg.RedisURL, "--channel", channel, "--etag", etag,
		"--last-modified", strconv.FormatInt(lastModified, 10)}
	cmd := exec.CommandContext(ctx, g.bin, args...)
	cmd.Env = gatewayEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sse-gateway %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// writeKeysFile writes a --keys-file granting key access to the channel patterns.
func writeKeysFile(t testing.TB, key string, channels ...string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"name": "e2e", "key": key, "channels": channels}}})
	p := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventID is the id the gateway gives an event: <lastModified>-<8 hex fnv32a(etag)>.
func eventID(lastModified int64, etag string) string {
	h := fnv.New32a()
	h.Write([]byte(etag))
	return fmt.Sprintf("%d-%08x", lastModified, h.Sum32())
}

// envelope is the outer JSON of an event's data line (Ably's message shape).
type envelope struct {
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Channel   string `json:"channel"`
	Data      string `json:"data"`
	Name      string `json:"name"`
}

// inner is the published payload carried as a string in envelope.Data.
type inner struct {
	Etag         string `json:"etag"`
	LastModified int64  `json:"lastModified"`
	Type         string `json:"type"`
}

// checkEventData verifies one event's data line: the envelope with the published payload
// as a JSON string. It returns a description of the first problem, or "".
func checkEventData(data, channel, etag string, lastModified int64) string {
	var env envelope
	if err := json.Unmarshal([]byte(data), &env); err != nil {
		return fmt.Sprintf("data is not the JSON envelope: %v: %q", err, data)
	}
	var raw map[string]json.RawMessage
	json.Unmarshal([]byte(data), &raw)
	if len(raw["data"]) == 0 || raw["data"][0] != '"' {
		return fmt.Sprintf("envelope field \"data\" must be a JSON string, got %s", raw["data"])
	}
	want := eventID(lastModified, etag)
	switch {
	case env.ID != want:
		return fmt.Sprintf("envelope id %q, want %q", env.ID, want)
	case env.Channel != channel:
		return fmt.Sprintf("envelope channel %q, want %q", env.Channel, channel)
	case env.Name != "change":
		return fmt.Sprintf("envelope name %q, want \"change\"", env.Name)
	case env.Timestamp <= 0:
		return fmt.Sprintf("envelope timestamp %d, want epoch ms", env.Timestamp)
	}
	var in inner
	if err := json.Unmarshal([]byte(env.Data), &in); err != nil {
		return fmt.Sprintf("envelope data string is not JSON: %v: %q", err, env.Data)
	}
	if in.Etag != etag || in.LastModified != lastModified {
		return fmt.Sprintf("inner payload etag %q lastModified %d, want %q %d", in.Etag, in.LastModified, etag, lastModified)
	}
	return ""
}

// httpStatus returns the status code of a GET, or 0 when the request failed.
func httpStatus(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := newRequest(ctx, url)
	resp, err := shortClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// timings collects publish -> arrival durations for the summary printed by each test.
type timings struct {
	name string
	d    []time.Duration
}

func (s *timings) add(d time.Duration) { s.d = append(s.d, d) }

// String is "name: n=5 min=.. median=.. p95=.. max=..", the line copied into docs/CLIENTS.md
// (p95 by nearest rank: with n=20 the 19th value).
func (s *timings) String() string {
	if len(s.d) == 0 {
		return s.name + ": no samples"
	}
	d := append([]time.Duration(nil), s.d...)
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j] < d[j-1]; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
	r := func(x time.Duration) string { return x.Round(100 * time.Microsecond).String() }
	p95 := d[(len(d)*95+99)/100-1]
	return fmt.Sprintf("%s: n=%d min=%s median=%s p95=%s max=%s", s.name, len(d), r(d[0]), r(d[len(d)/2]), r(p95), r(d[len(d)-1]))
}

// report logs the timing line and appends it to $E2E_TIMINGS_FILE when set.
func (s *timings) report(t testing.TB) {
	t.Helper()
	t.Logf("publish -> new value, %s", s)
	appendTimings(s.String())
}

// appendTimings appends a line to $E2E_TIMINGS_FILE when it is set.
func appendTimings(line string) {
	if path := os.Getenv("E2E_TIMINGS_FILE"); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

// lineWriter is an io.Writer that hands complete lines to fn.
type lineWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	fn  func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf.Next(i + 1))
		w.fn(strings.TrimRight(line, "\r\n"))
	}
}

package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// gateway is one running sse-gateway process.
type gateway struct {
	t    testing.TB
	name string
	args []string
	// Addr is the host:port it listens on; fixed after the first start, so a restart
	// reuses it.
	Addr string
	// metricsAddr serves /metrics when --metrics-addr was given; "" means Addr.
	metricsAddr string
	log         *logBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	state  *os.ProcessState
}

// startGateway runs `sse-gateway serve` against redisURL on 127.0.0.1:0 (extra flags come
// last, so they override the defaults here) and waits until it listens and is ready. It is
// SIGKILLed at cleanup; a data race it reported fails the test.
func startGateway(t testing.TB, name, redisURL string, extra ...string) *gateway {
	t.Helper()
	g := newGateway(t, name, redisURL, extra...)
	g.start()
	g.waitReady(30 * time.Second)
	return g
}

// newGateway prepares a gateway without starting it.
func newGateway(t testing.TB, name, redisURL string, extra ...string) *gateway {
	t.Helper()
	args := []string{"serve", "--addr", "127.0.0.1:0", "--keys-file", keysFile(t),
		"--admin-token", adminToken, "--instance-id", name, "--log-format", "json",
		"--probe-interval", "200ms"}
	if redisURL != "" {
		args = append(args, "--redis-url", redisURL)
	}
	g := &gateway{t: t, name: name, args: append(args, extra...), log: newLogBuffer()}
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("gateway %s log (last 40 lines):\n%s", name, g.log.tail(40))
		}
		if g.log.race {
			t.Errorf("gateway %s reported a data race; its log:\n%s", name, g.log.tail(200))
		}
	})
	return g
}

// start launches the process and waits for its "listening" line.
func (g *gateway) start() {
	t := g.t
	t.Helper()
	args := g.args
	if g.Addr != "" {
		args = append(append([]string(nil), args...), "--addr", g.Addr)
	}
	from := g.log.count()
	cmd := exec.Command(gatewayBinary(t), args...)
	cmd.Env = append(childEnv(), "GORACE=halt_on_error=0")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting gateway %s: %v", g.name, err)
	}
	exited := make(chan struct{})
	consumed := make(chan struct{})
	go func() { g.log.consume(pr); close(consumed) }()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		<-consumed
		g.mu.Lock()
		g.state = cmd.ProcessState
		g.mu.Unlock()
		close(exited)
	}()
	g.mu.Lock()
	g.cmd, g.exited, g.state = cmd, exited, nil
	g.mu.Unlock()

	line, ok := g.log.waitLine(30*time.Second, from, func(l string) bool { return strings.Contains(l, `"msg":"listening"`) })
	if !ok {
		select {
		case <-exited:
			t.Fatalf("gateway %s exited before listening (%v); args %q; log:\n%s", g.name, cmd.ProcessState, args, g.log.tail(30))
		default:
		}
		t.Fatalf("gateway %s did not log \"listening\" within 30s; log:\n%s", g.name, g.log.tail(30))
	}
	var rec struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Addr == "" {
		t.Fatalf("gateway %s: \"listening\" line has no addr: %q", g.name, line)
	}
	g.Addr = rec.Addr
}

// pid is the process id of the running gateway.
func (g *gateway) pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		g.t.Fatalf("gateway %s is not running", g.name)
	}
	return g.cmd.Process.Pid
}

// signal sends sig to the running gateway.
func (g *gateway) signal(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		_ = g.cmd.Process.Signal(sig)
	}
}

// kill SIGKILLs the gateway (no drain) and waits for it to exit.
func (g *gateway) kill() {
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// waitExit waits for the process to exit by itself and returns its exit code.
func (g *gateway) waitExit(timeout time.Duration) int {
	g.t.Helper()
	g.mu.Lock()
	exited := g.exited
	g.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(timeout):
		g.t.Fatalf("gateway %s did not exit within %v; log:\n%s", g.name, timeout, g.log.tail(20))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cmd = nil
	return g.state.ExitCode()
}

func (g *gateway) url(path string) string { return "http://" + g.Addr + path }

// readyz is the status of GET /readyz (0 when the request failed).
func (g *gateway) readyz() int {
	s, _ := httpGet(g.url("/readyz"))
	return s
}

func (g *gateway) waitReady(timeout time.Duration) {
	g.t.Helper()
	waitFor(g.t, timeout, func() string {
		return fmt.Sprintf("gateway %s /readyz never answered 200; log:\n%s", g.name, g.log.tail(20))
	}, func() bool { return g.readyz() == http.StatusOK })
}

// metrics scrapes /metrics.
func (g *gateway) metrics() metricSet {
	g.t.Helper()
	addr := g.Addr
	if g.metricsAddr != "" {
		addr = g.metricsAddr
	}
	status, body := httpGet("http://" + addr + "/metrics")
	if status != http.StatusOK {
		g.t.Fatalf("gateway %s /metrics: %d %s", g.name, status, body)
	}
	return parseMetrics(body)
}

// metricSet is a Prometheus text exposition: series ("name{labels}") to value.
type metricSet map[string]float64

func parseMetrics(body string) metricSet {
	m := metricSet{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// get sums the series of metric name whose labels contain every one of labels (each
// written as in the exposition, e.g. `reason="slow"`).
func (m metricSet) get(name string, labels ...string) float64 {
	sum := 0.0
	for series, v := range m {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(series, l)
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// publishAPI posts {"channel":..,"data":<data>} to POST /v1/publish and returns the status
// and body.
func (g *gateway) publishAPI(channel, data string) (int, string) {
	body := `{"channel":` + strconv.Quote(channel) + `,"data":` + data + `}`
	return g.post("/v1/publish", []byte(body))
}

func (g *gateway) post(path string, body []byte) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, g.url(path), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// rss is the gateway's resident set size in bytes (VmRSS of /proc/<pid>/status).
func (g *gateway) rss() int64 {
	g.t.Helper()
	n, err := g.rssNow()
	if err != nil {
		g.t.Fatalf("gateway %s: %v", g.name, err)
	}
	return n
}

// rssNow is rss for use off the test goroutine.
func (g *gateway) rssNow() (int64, error) {
	g.mu.Lock()
	cmd := g.cmd
	g.mu.Unlock()
	if cmd == nil {
		return 0, fmt.Errorf("not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", cmd.Process.Pid)
}

// streamPath is the DevCycle-style stream request path.
func streamPath(channels string) string {
	return "/event-stream?v=1.2&channels=" + channels + "&key=" + testKey
}

// mb formats bytes as MiB.
func mb(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

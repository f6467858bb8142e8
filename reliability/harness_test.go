package reliability

import (
	"github.com/sse-gateway/sse-gateway/internal/gwtest"

	"bufio"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Credentials every test gateway is started with.
const (
	testKey    = "reliability-key"
	adminToken = "reliability-admin-token"
)

var (
	// workDir holds the binary built once per run and the shared keys file.
	workDir string
)

func TestMain(m *testing.M) {
	raiseFileLimit()
	dir, err := os.MkdirTemp("", "sse-gateway-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability: temp dir:", err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	if code == 0 {
		// Every client, proxy and Redis client a test starts must be gone by now.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: the tests leaked goroutines: %v\n", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// raiseFileLimit lifts the soft open-files limit to the hard one: the outage test holds
// 2,000 streams and the gateways it starts inherit the limit.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// full reports whether the heavy scenarios run at their full counts (RELIABILITY_FULL=1),
// rather than the counts that keep the package quick under -race.
func full() bool { return os.Getenv("RELIABILITY_FULL") == "1" }

// scaled is n in a full run and small otherwise.
func scaled(n, small int) int {
	if full() {
		return n
	}
	return small
}

// gatewayBinary returns $RELIABILITY_GATEWAY_BIN, or ./cmd/sse-gateway built once per run
// (with -race when this test binary has it, unless RELIABILITY_GATEWAY_RACE=0).
func gatewayBinary(t testing.TB) string {
	t.Helper()
	return gwtest.Binary(t, "RELIABILITY_GATEWAY_BIN", workDir, raceEnabled && os.Getenv("RELIABILITY_GATEWAY_RACE") != "0")
}

// childEnv is this process's environment without SSE_GATEWAY_* variables, so that only the
// flags a test gives configure the gateways and the publish CLI it runs.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSE_GATEWAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// gatewayRace reports whether the gateway binary was built with the race detector, whose
// runtime keeps shadow memory that makes the process's RSS say little about the gateway's.
func gatewayRace(t testing.TB) bool {
	t.Helper()
	info, err := buildinfo.ReadFile(gatewayBinary(t))
	if err != nil {
		t.Fatalf("reading the gateway binary's build info: %v", err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// keysFile is a --keys-file granting testKey every channel.
func keysFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.json")
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"name": "rel", "key": testKey, "channels": []string{"*"}}}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatalf("writing keys file: %v", err)
	}
	return p
}

// waitFor polls cond every 20ms until it holds or timeout passes, then fails the test with
// what(), which should say what was expected and what was seen.
func waitFor(t testing.TB, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventually is waitFor that reports instead of failing: it returns how long cond took, or
// false when it never held within timeout.
func eventually(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), true
}

// logBuffer keeps a child process's output: the last maxLines lines, and whether a line
// ever reported a data race. Safe for concurrent use.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
	total int
	race  bool
	added chan struct{} // closed and replaced on every line
}

const maxLogLines = 5000

func newLogBuffer() *logBuffer { return &logBuffer{added: make(chan struct{})} }

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) == maxLogLines {
		copy(b.lines, b.lines[maxLogLines/2:])
		b.lines = b.lines[:maxLogLines/2]
	}
	b.lines = append(b.lines, line)
	b.total++
	b.race = b.race || strings.Contains(line, "WARNING: DATA RACE")
	close(b.added)
	b.added = make(chan struct{})
}

func (b *logBuffer) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		b.add(sc.Text())
	}
	_, _ = io.Copy(io.Discard, r) // an overlong line: keep the pipe drained
}

// tail is the last n lines, for failure messages.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// count is how many lines were ever added (a position for waitLine).
func (b *logBuffer) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// waitLine waits until a line added after position from satisfies match.
func (b *logBuffer) waitLine(timeout time.Duration, from int, match func(string) bool) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		start := len(b.lines) - (b.total - from)
		for i := max(start, 0); i < len(b.lines); i++ {
			if match(b.lines[i]) {
				l := b.lines[i]
				b.mu.Unlock()
				return l, true
			}
		}
		added := b.added
		b.mu.Unlock()
		select {
		case <-added:
		case <-deadline.C:
			return "", false
		}
	}
}

// matching returns the kept lines added after position from that contain s.
func (b *logBuffer) matching(from int, s string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range b.lines[max(0, len(b.lines)-(b.total-from)):] {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// httpClient is used for every non-stream request; no keep-alive, so that no connection
// (and no goroutine) outlives a request.
var httpClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// httpGet returns the status and body of a GET, or status 0 when the request failed.
func httpGet(url string) (int, string) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// itoa is strconv.FormatInt for the many int64 command-line arguments.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gatewayProc is one sse-gateway process under test.
type gatewayProc struct {
	name string
	addr string // host:port of --addr, from its "listening" log line
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited

	mu   sync.Mutex
	tail []string // guarded by mu: its last log lines, for an error message
}

// buildGateway builds cmd/sse-gateway into dir (the module's, wherever the command runs from).
func buildGateway(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "sse-gateway")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/sse-gateway/sse-gateway/cmd/sse-gateway")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sse-gateway: %w\n%s", err, b)
	}
	return out, nil
}

// writeKeysFile writes a --keys-file granting key every channel.
func writeKeysFile(dir, key string) (string, error) {
	p := filepath.Join(dir, "keys.json")
	b, err := json.Marshal(map[string]any{"keys": []any{map[string]any{"name": "pubsubcmp", "key": key, "channels": []string{"*"}}}})
	if err == nil {
		err = os.WriteFile(p, b, 0o600)
	}
	return p, err
}

// startGateway starts bin serve with args and waits for its "listening" line.
func startGateway(ctx context.Context, bin, name string, args ...string) (*gatewayProc, error) {
	g := &gatewayProc{name: name, done: make(chan struct{})}
	g.cmd = exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--instance-id", name, "--log-format", "json"}, args...)...)
	childOfUs(g.cmd)
	pr, pw := io.Pipe()
	g.cmd.Stdout, g.cmd.Stderr = pw, pw
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting gateway %s: %w", name, err)
	}
	listening := make(chan string, 1)
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			if g.tail = append(g.tail, line); len(g.tail) > 30 {
				g.tail = g.tail[1:]
			}
			g.mu.Unlock()
			if strings.Contains(line, `"msg":"listening"`) {
				select {
				case listening <- line:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		_ = g.cmd.Wait()
		pw.Close()
		<-consumed
		close(g.done)
	}()
	select {
	case line := <-listening:
		var rec struct{ Addr string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Addr == "" {
			g.stop()
			return nil, fmt.Errorf("gateway %s: no addr in its listening line %q", name, line)
		}
		g.addr = rec.Addr
		return g, nil
	case <-g.done:
		return nil, fmt.Errorf("gateway %s exited before listening (%v):\n%s", name, g.cmd.ProcessState, g.logTail())
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	g.stop()
	return nil, fmt.Errorf("gateway %s did not log listening within 30s:\n%s", name, g.logTail())
}

func (g *gatewayProc) logTail() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.tail, "\n")
}

func (g *gatewayProc) pid() int { return g.cmd.Process.Pid }

// stop kills the process and waits for it.
func (g *gatewayProc) stop() {
	_ = g.cmd.Process.Kill()
	<-g.done
}

// ready reports whether /readyz answers 200.
func (g *gatewayProc) ready(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.addr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// metrics reads /metrics as series -> value ("name" or "name{labels}", as written).
func (g *gatewayProc) metrics(ctx context.Context) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", g.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics of %s: %s", g.name, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", g.name, err)
	}
	return out, nil
}

// sumPrefix adds every series of m whose name starts with prefix (all label sets of a
// metric: "x_total" matches x_total and x_total{op="a"}).
func sumPrefix(m map[string]float64, prefix string) float64 {
	t := 0.0
	for k, v := range m {
		if k == prefix || strings.HasPrefix(k, prefix+"{") {
			t += v
		}
	}
	return t
}

// errStopped is returned when a gateway died during a run.
var errStopped = errors.New("gateway exited")

// alive reports errStopped (with its log) if the gateway has exited.
func (g *gatewayProc) alive() error {
	select {
	case <-g.done:
		return fmt.Errorf("%w: %s (%v):\n%s", errStopped, g.name, g.cmd.ProcessState, g.logTail())
	default:
		return nil
	}
}

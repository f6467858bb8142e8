package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nodeLine is one line a script in e2e/node (see e2e/node/emit.mjs) or the JVM client in
// e2e/android printed.
type nodeLine struct {
	Ev          string  `json:"ev"`
	T           float64 `json:"t"` // epoch ms
	Value       any     `json:"value"`
	Level       string  `json:"level"`
	Msg         string  `json:"msg"`
	Data        string  `json:"data"`
	LastEventID string  `json:"lastEventId"`
	URL         string  `json:"url"`
	// LastEventIDSent is the Last-Event-ID header of a request (rn-client-sdk.mjs's xhr-send).
	LastEventIDSent *string `json:"lastEventIdSent"`
	// Event, ID, BaseRetryMs and Error are the JVM client's (e2e/android).
	Event       string `json:"event"`
	ID          string `json:"id"`
	BaseRetryMs int64  `json:"baseRetryMs"`
	Error       string `json:"error"`
	raw         string
}

// at is the line's timestamp as a time.Time.
func (l nodeLine) at() time.Time { return time.UnixMicro(int64(l.T * 1000)) }

// nodeProc is a running node script.
type nodeProc struct {
	t      testing.TB
	name   string // which client, for failure messages
	stdout *logBuffer
	stderr *logBuffer
}

// requireNodeModules fails unless e2e/node/node_modules was installed from the committed lockfile.
func requireNodeModules(t testing.TB) string {
	t.Helper()
	requireExecutable(t, "node")
	dir := filepath.Join(repoRoot(t), "e2e", "node")
	h := sha256.New()
	for _, f := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("e2e/node/%s: %v", f, err)
		}
		h.Write(b)
	}
	stamp, err := os.ReadFile(filepath.Join(dir, "node_modules", ".e2e-deps-stamp"))
	if err != nil {
		t.Fatalf("e2e/node/node_modules is not installed (%v): %s", err, depsHint)
	}
	if strings.TrimSpace(string(stamp)) != hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("e2e/node/node_modules was installed from another package-lock.json: %s", depsHint)
	}
	return dir
}

// startNode runs `node <script> <json opts>` in e2e/node; it ends when the test does.
func startNode(t testing.TB, name, script string, opts any) *nodeProc {
	t.Helper()
	dir := requireNodeModules(t)
	arg, _ := json.Marshal(opts)
	cmd := exec.Command("node", script, string(arg))
	cmd.Dir = dir
	return startClientProc(t, name, cmd)
}

// startClientProc runs a client that prints one JSON object per line and exits when its
// standard input ends; it is stopped when the test ends.
func startClientProc(t testing.TB, name string, cmd *exec.Cmd) *nodeProc {
	t.Helper()
	p := &nodeProc{t: t, name: name, stdout: newLogBuffer(), stderr: newLogBuffer()}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	cmd.Stdout, cmd.Stderr = outW, errW
	go p.stdout.consume(outR)
	go p.stderr.consume(errR)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: starting %q: %v", name, cmd.Args, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); outW.Close(); errW.Close(); close(exited) }()
	t.Cleanup(func() {
		stdin.Close() // the script exits when its stdin ends
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() || os.Getenv("E2E_LOGS") != "" {
			t.Logf("%s stdout (last 40 lines):\n%s\n%s stderr:\n%s", name, p.stdout.tail(40), name, p.stderr.tail(20))
		}
	})
	return p
}

// lines returns the parsed lines printed so far.
func (p *nodeProc) lines() []nodeLine {
	raw, _ := p.stdout.snapshot()
	out := make([]nodeLine, 0, len(raw))
	for _, r := range raw {
		var l nodeLine
		if json.Unmarshal([]byte(r), &l) != nil {
			l = nodeLine{Ev: "text", Msg: r}
		}
		l.raw = r
		out = append(out, l)
	}
	return out
}

// wait returns the first line at index >= from that matches, and its index; it fails the test
// after timeout with what was expected and what the client printed.
func (p *nodeProc) wait(timeout time.Duration, from int, expected string, match func(nodeLine) bool) (nodeLine, int) {
	p.t.Helper()
	var found nodeLine
	_, i, ok := p.stdout.waitLine(timeout, from, func(r string) bool {
		var l nodeLine
		if json.Unmarshal([]byte(r), &l) != nil {
			return false
		}
		l.raw = r
		if match(l) {
			found = l
			return true
		}
		return false
	})
	if !ok {
		p.t.Fatalf("%s: expected %s within %v; it printed instead (last 15 lines):\n%s\nstderr:\n%s",
			p.name, expected, timeout, p.stdout.tail(15), p.stderr.tail(10))
	}
	return found, i
}

// waitValue waits for the client to report value for its variable.
func (p *nodeProc) waitValue(timeout time.Duration, from int, value string) (nodeLine, int) {
	p.t.Helper()
	return p.wait(timeout, from, fmt.Sprintf("variable value %q", value), func(l nodeLine) bool {
		return l.Ev == "value" && l.Value == value
	})
}

// lastValue is the latest variable value the client reported, for failure messages.
func (p *nodeProc) lastValue() any {
	var v any = "(none yet)"
	for _, l := range p.lines() {
		if l.Ev == "value" {
			v = l.Value
		}
	}
	return v
}

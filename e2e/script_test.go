package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// scriptLine is one line a client driver printed: the node scripts in e2e/node (emit.mjs), the
// Python one in e2e/python and the Java ones in e2e/java and e2e/android all print {"ev": <kind>, "t": <epoch ms,
// sub-ms precision>, ...fields}, one object per line.
type scriptLine struct {
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
func (l scriptLine) at() time.Time { return time.UnixMicro(int64(l.T * 1000)) }

// isLog reports whether the line is the client's own log and its message contains s.
func (l scriptLine) isLog(s string) bool { return l.Ev == "log" && strings.Contains(l.Msg, s) }

// scriptProc is a running client driver.
type scriptProc struct {
	t      testing.TB
	name   string // which client, for failure messages
	stdout *logBuffer
	stderr *logBuffer
}

// startScript runs argv in dir; the driver must exit when its stdin ends, which happens when
// the test does (it is killed 3 s later if it has not).
func startScript(t testing.TB, name, dir string, argv ...string) *scriptProc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	p := &scriptProc{t: t, name: name, stdout: newLogBuffer(), stderr: newLogBuffer()}
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
		t.Fatalf("%s: starting %q: %v", name, argv[0], err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); outW.Close(); errW.Close(); close(exited) }()
	t.Cleanup(func() {
		stdin.Close()
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
func (p *scriptProc) lines() []scriptLine {
	raw, _ := p.stdout.snapshot()
	out := make([]scriptLine, 0, len(raw))
	for _, r := range raw {
		var l scriptLine
		if json.Unmarshal([]byte(r), &l) != nil {
			l = scriptLine{Ev: "text", Msg: r}
		}
		l.raw = r
		out = append(out, l)
	}
	return out
}

// wait returns the first line at index >= from that matches, and its index; it fails the test
// after timeout with what was expected and what the client printed.
func (p *scriptProc) wait(timeout time.Duration, from int, expected string, match func(scriptLine) bool) (scriptLine, int) {
	p.t.Helper()
	var found scriptLine
	_, i, ok := p.stdout.waitLine(timeout, from, func(r string) bool {
		var l scriptLine
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
func (p *scriptProc) waitValue(timeout time.Duration, from int, value string) (scriptLine, int) {
	p.t.Helper()
	return p.wait(timeout, from, fmt.Sprintf("variable value %q", value), func(l scriptLine) bool {
		return l.Ev == "value" && l.Value == value
	})
}

// count is how many lines printed so far match.
func (p *scriptProc) count(match func(scriptLine) bool) int {
	n := 0
	for _, l := range p.lines() {
		if match(l) {
			n++
		}
	}
	return n
}

// lastValue is the latest variable value the client reported, for failure messages.
func (p *scriptProc) lastValue() any {
	var v any = "(none yet)"
	for _, l := range p.lines() {
		if l.Ev == "value" {
			v = l.Value
		}
	}
	return v
}

// requireInstalled fails unless the stamp file holds the hex sha256 of files concatenated in
// order: what an installer (scripts/e2e-deps, scripts/sdk-deps) writes once it has installed
// what (a directory) from those files. hint says which installer to run.
func requireInstalled(t testing.TB, what, stamp, hint string, files ...string) {
	t.Helper()
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		h.Write(b)
	}
	got, err := os.ReadFile(stamp)
	if err != nil {
		t.Fatalf("%s is not installed (%v): %s", what, err, hint)
	}
	if strings.TrimSpace(string(got)) != hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("%s was installed from other files than %v: %s", what, files, hint)
	}
}

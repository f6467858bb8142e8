package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestQuickStartAsPrinted runs the README's quick start as it is printed: its commands,
// verbatim but for the two placeholders, which are filled from the gateway's log as a reader
// would. They use the fixed port 8080, so they run in a network namespace of their own (a
// private loopback where 8080 is free, whatever else runs on this machine; needs root and
// iproute2, like reliability's half-open test). The stream opened with curl must receive the
// event that `publish` sends with the generated token.
func TestQuickStartAsPrinted(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := quickStartBlocks(t, string(readme))
	if len(blocks) < 2 || len(blocks[0]) != 1 || len(blocks[1]) != 2 {
		t.Fatalf("the quick start's first two sh blocks are %q; want the gateway command, then curl and publish", blocks)
	}
	runCmd, curlCmd, publishCmd := blocks[0][0], blocks[1][0], blocks[1][1]
	for _, c := range []struct{ cmd, placeholder string }{{curlCmd, "<key from the log>"}, {publishCmd, "<token from the log>"}} {
		if strings.Count(c.cmd, c.placeholder) != 1 {
			t.Fatalf("quick start command %q: want the placeholder %q once", c.cmd, c.placeholder)
		}
	}
	ns := newNetns(t)
	root := "../.."

	gw := ns.command(root, runCmd)
	var gwOut logLines
	gw.Stderr, gw.Stdout = &gwOut, &gwOut
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopGroup(t, gw, "the quick start's gateway") })
	// A first build may take a minute on a small machine.
	var key, token string
	waitFor(t, 5*time.Minute, "the quick start's gateway to log its generated key, token and address", func() bool {
		for _, rec := range gwOut.records() {
			if k, ok := rec["key"].(string); ok {
				key = k
			}
			if tok, ok := rec["admin_token"].(string); ok {
				token = tok
			}
		}
		return key != "" && token != "" && strings.Contains(gwOut.String(), `"msg":"listening","addr":"[::]:8080"`)
	})

	curl := ns.command(root, strings.Replace(curlCmd, "<key from the log>", key, 1))
	var stream logLines
	curl.Stdout = &stream
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopGroup(t, curl, "curl") })
	waitFor(t, waitLimit, "curl to show the stream's first heartbeat", func() bool { return strings.HasPrefix(stream.String(), ":") })

	publish := ns.command(root, strings.Replace(publishCmd, "<token from the log>", token, 1))
	out, err := publish.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "published") {
		t.Fatalf("%s: %v\n%s", publishCmd, err, out)
	}
	// The etag '"v1"', inside the payload, inside the event's JSON string.
	waitFor(t, waitLimit, "the event to reach curl's stream", func() bool {
		return strings.Contains(stream.String(), `"channel":"demo","data":"{\"etag\":\"\\\"v1\\\"\"`)
	})
	t.Logf("quick start as printed: %s\n%s", strings.TrimSpace(string(out)), stream.String())
}

// quickStartBlocks returns the commands of each sh block of the README's quick start
// section, one per line.
func quickStartBlocks(t *testing.T, readme string) [][]string {
	t.Helper()
	i := strings.Index(readme, "## Quick start")
	if i < 0 {
		t.Fatal("README has no quick start section")
	}
	section := readme[i+1:]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	var blocks [][]string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, strings.Split(strings.TrimSpace(m[1]), "\n"))
	}
	return blocks
}

// netns is a network namespace with only its loopback up, removed when the test ends.
type netns struct{ name string }

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (it runs the quick start in a network namespace of its own)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("this test needs iproute2 (ip netns): %v (scripts/ops-deps installs it)", err)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("this test needs curl, which the quick start uses: %v (scripts/ops-deps installs it)", err)
	}
	ns := &netns{name: fmt.Sprintf("ssequick%d", os.Getpid())}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.name).Run() })
	for _, args := range [][]string{{"netns", "add", ns.name}, {"-n", ns.name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return ns
}

// command is `sh -c line` in the namespace, in dir, in a process group of its own, with
// this process's environment but none of its SSE_GATEWAY_* variables.
func (ns *netns) command(dir, line string) *exec.Cmd {
	cmd := exec.Command("ip", "netns", "exec", ns.name, "sh", "-c", line)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = childEnviron()
	return cmd
}

// stopGroup sends SIGTERM to cmd's process group (go run and the program it built) and
// waits for cmd; SIGKILL after waitLimit.
func stopGroup(t *testing.T, cmd *exec.Cmd, what string) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLimit):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Errorf("%s did not exit within %v of SIGTERM", what, waitLimit)
	}
}

// logLines is an io.Writer collecting output for a test to read while it grows.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// records decodes the JSON lines written so far.
func (l *logLines) records() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(l.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

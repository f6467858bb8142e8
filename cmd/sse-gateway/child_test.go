package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// child is the command (main's run) in a child process of the test binary: its own
// signals, its own open-files limit, everything it writes to stderr, a real exit code.
type child struct {
	t   *testing.T
	cmd *exec.Cmd

	mu    sync.Mutex
	lines []string      // every line written to stderr, in order
	added chan struct{} // closed and replaced on every line

	exited chan struct{} // closed once the process has exited and its stderr is read
}

// startChild starts `sse-gateway args...` as a child process with env added to this
// process's environment (without its SSE_GATEWAY_* variables); nofile > 0 runs it under
// `ulimit -n nofile`. It is stopped with SIGTERM when t ends, and must exit 0 then.
func startChild(t *testing.T, nofile int, env []string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	if nofile > 0 {
		cmd = exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0"`, nofile), os.Args[0])
	}
	cmd.Env = childEnviron(append(env, childEnv+"=1", childArgsEnv+"="+strings.Join(args, "\n"))...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, added: make(chan struct{}), exited: make(chan struct{})}
	// One reader for the child's log until it exits, so the child never blocks on a full pipe.
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			close(c.added)
			c.added = make(chan struct{})
			c.mu.Unlock()
		}
		_ = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		if code, ok := c.stop(10 * time.Second); !ok {
			t.Errorf("child gateway did not exit within 10s of SIGTERM")
		} else if code != 0 {
			t.Errorf("child gateway exited %d after SIGTERM, want 0", code)
		}
	})
	return c
}

// stop sends SIGTERM (once the process has exited it does nothing) and waits up to d for
// the exit; it reports the exit code and whether the process exited in time (it is killed
// otherwise).
func (c *child) stop(d time.Duration) (code int, ok bool) {
	select {
	case <-c.exited:
		return c.cmd.ProcessState.ExitCode(), true
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return c.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return -1, false
	}
}

// signal sends sig to the child.
func (c *child) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v: %v", sig, err)
	}
}

// log returns every stderr line so far.
func (c *child) log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// waitRecord waits until a JSON log record whose msg is msg appears after the first from
// lines, and returns it with the number of lines read so far.
func (c *child) waitRecord(msg string, from int) (map[string]any, int) {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for {
		c.mu.Lock()
		lines, added := c.lines, c.added
		c.mu.Unlock()
		for i := from; i < len(lines); i++ {
			var rec map[string]any
			if json.Unmarshal([]byte(lines[i]), &rec) == nil && rec["msg"] == msg {
				return rec, i + 1
			}
		}
		select {
		case <-added:
		case <-c.exited:
			c.t.Fatalf("the child gateway exited before logging %q; log:\n%s", msg, strings.Join(c.log(), "\n"))
		case <-deadline:
			c.t.Fatalf("no %q log line within %v; log:\n%s", msg, waitLimit, strings.Join(c.log(), "\n"))
		}
	}
}

// childGateway runs `sse-gateway args...` in a child process under `ulimit -n nofile`, and
// returns the address it listens on and its "listening" log record.
func childGateway(t *testing.T, nofile int, args ...string) (addr string, logLine map[string]any) {
	t.Helper()
	c := startChild(t, nofile, nil, args...)
	rec, _ := c.waitRecord("listening", 0)
	return rec["addr"].(string), rec
}

// childEnviron is this process's environment without its SSE_GATEWAY_* variables, so that
// only what a test passes configures a command it runs, plus extra.
func childEnviron(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSE_GATEWAY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

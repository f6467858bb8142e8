// Package redistest starts private redis-server processes for tests: each on a free loopback
// port, without persistence, in the test's temporary directory, stopped when the test ends.
// A test may kill and restart a server on the same port. A test that needs Redis fails with
// a clear message when redis-server is not installed; it never skips. A command that needs
// a private cluster (loadtest/cmd/pubsubcmp) starts it with LaunchCluster, which returns
// errors where the test helpers fail the test.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
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
)

// Server is one private redis-server.
type Server struct {
	t    testing.TB // nil for a server of LaunchCluster: nothing fails a test then
	port int
	dir  string
	// base builds the arguments every start of this server begins with: plainArgs, or a
	// sentinel's or a cluster node's own.
	base func(port int, dir string) []string
	// setup, if set, is called on the redis-server command of every start, before it runs.
	setup func(*exec.Cmd)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a redis-server for t and kills it when t ends. extra are more redis-server
// arguments for this first start only (e.g. "--dbfilename", "x.rdb"); Restart takes its own.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found in PATH: this test needs a real Redis (apt-get install redis-server): %v", err)
	}
	return startServer(t, plainArgs, func() int { return FreePort(t) }, extra)
}

// startServer starts a server for t with base arguments on a port from pick and kills it
// when t ends.
func startServer(t testing.TB, base func(port int, dir string) []string, pick func() int, extra []string) *Server {
	t.Helper()
	s, err := launch(t.TempDir(), base, func() (int, error) { return pick(), nil }, nil, extra)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(s.Kill)
	return s
}

// launch starts a server in dir (created if need be) with base arguments on a port from
// pick, retrying on another port when the one picked was taken meanwhile. setup, if not
// nil, is called on every start's command.
func launch(dir string, base func(port int, dir string) []string, pick func() (int, error), setup func(*exec.Cmd), extra []string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	s := &Server{dir: dir, base: base, setup: setup}
	var err error
	for range 5 { // another process may take the free port between probing and binding it
		if s.port, err = pick(); err != nil {
			break
		}
		if err = s.start(extra); err == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("starting redis-server: %w", err)
}

// Addr is the server's host:port; it stays the same across restarts.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Dir is the server's working directory, where it writes and loads RDB snapshots; it stays
// the same across restarts.
func (s *Server) Dir() string { return s.dir }

// Client returns a go-redis client for the server, configured by opt (nil for the defaults)
// with Addr set to the server's. It is closed when the test ends, before the server is
// killed (the caller closes it on a server of LaunchCluster), and reconnects by itself
// after a restart.
func (s *Server) Client(opt *redis.Options) *redis.Client {
	o := redis.Options{}
	if opt != nil {
		o = *opt
	}
	o.Addr = s.Addr()
	c := redis.NewClient(&o)
	if s.t != nil {
		s.t.Cleanup(func() { _ = c.Close() })
	}
	return c
}

// Restart starts the server again on the same port after Kill: empty, unless extra says
// otherwise (e.g. "--dbfilename", "x.rdb" loads that snapshot from Dir). The arguments
// given to Start are not repeated. It fails the test, so it is for a server of a test,
// not of LaunchCluster.
func (s *Server) Restart(extra ...string) {
	s.t.Helper()
	var err error
	for range 100 { // the port may linger briefly after SIGKILL
		if err = s.start(extra); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("restarting redis-server on port %d: %v", s.port, err)
}

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// PID is the server process's id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Running reports whether the server process is running (it was not killed).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Pause stops the server process (SIGSTOP): it keeps its connections and answers nothing,
// as a host that froze. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Kill SIGKILLs the server and waits for it to exit; it does nothing if it is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (s *Server) start(extra []string) error {
	logFile := filepath.Join(s.dir, "redis.log")
	_ = os.Remove(logFile)
	args := append(append(s.base(s.port, s.dir), "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--logfile", logFile), extra...)
	cmd := exec.Command("redis-server", args...)
	if s.setup != nil {
		s.setup(cmd)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.Addr()); err == nil {
			break
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redis-server exited at start: %s", tail(string(log), 500))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return errors.New("redis-server did not answer PING within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

// plainArgs are the base arguments of a plain server: no persistence.
func plainArgs(int, string) []string { return []string{"--save", "", "--appendonly", "no"} }

// FreePort returns a loopback TCP port that was free a moment ago; another process may take
// it before the caller binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// A server with requirepass answers NOAUTH: it is up all the same.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

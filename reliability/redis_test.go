package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// redisProc is a private redis-server on a free loopback port, without persistence, that a
// test may SIGKILL and restart on the same port (empty, or from a given RDB file).
type redisProc struct {
	t    testing.TB
	port int
	dir  string
	// Client is the test's own connection (publishing, CLIENT KILL, ACL); it reconnects by
	// itself after a restart.
	Client *redis.Client

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts a redis-server for t (with extra arguments on its first start) and kills
// it when t ends. It fails, never skips, when redis-server is not installed.
func startRedis(t testing.TB, extra ...string) *redisProc {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found in PATH: these tests need a real Redis (apt-get install redis-server): %v", err)
	}
	r := &redisProc{t: t, dir: t.TempDir()}
	var err error
	for range 5 { // another process may take the free port between probing and binding it
		r.port = freePort(t)
		if err = r.start(extra...); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	r.Client = redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, PoolSize: 4})
	t.Cleanup(func() {
		r.Client.Close()
		r.Kill()
	})
	return r
}

// Addr is host:port; it stays the same across restarts.
func (r *redisProc) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is the redis:// URL gateways and the publish CLI are given.
func (r *redisProc) URL() string { return "redis://" + r.Addr() + "/0" }

// Restart starts the server again on the same port, empty unless extra says otherwise
// (e.g. "--dbfilename", "x.rdb" loads that snapshot from the server's directory).
func (r *redisProc) Restart(extra ...string) {
	r.t.Helper()
	var err error
	for range 100 { // the port may linger briefly after SIGKILL
		if err = r.start(extra...); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatalf("restarting redis-server on port %d: %v", r.port, err)
}

func (r *redisProc) start(extra ...string) error {
	logFile := filepath.Join(r.dir, "redis.log")
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", logFile}, extra...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			break
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redis-server exited at start: %s", lastBytes(string(log), 600))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return errors.New("redis-server did not answer PING within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	return nil
}

// Kill SIGKILLs the server and waits for it to exit; it does nothing if it is not running.
func (r *redisProc) Kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd, r.done = nil, nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Do runs one command on the test's connection and fails the test on error.
func (r *redisProc) Do(args ...any) any {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := r.Client.Do(ctx, args...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.t.Fatalf("redis %v: %v", args, err)
	}
	return v
}

// numPat is PUBSUB NUMPAT: how many pattern subscriptions Redis has (each gateway holds
// exactly one while it is subscribed).
func (r *redisProc) numPat() int64 {
	v, _ := r.Do("PUBSUB", "NUMPAT").(int64)
	return v
}

// payload is the inner JSON a config service publishes. pad, when > 0, adds a field of
// that many bytes; sentAt, when true, stamps the publisher's clock for latency figures.
func payload(etag string, lastModified int64, pad int, sentAt bool) string {
	m := map[string]any{"etag": etag, "lastModified": lastModified, "type": "refetchConfig"}
	if pad > 0 {
		m["pad"] = strings.Repeat("x", pad)
	}
	if sentAt {
		m["sentAtNs"] = time.Now().UnixNano()
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// publishRaw does exactly what the contract's config service does: PUBLISH sse:<channel>
// <json>, without storing anything. It returns how many subscribers Redis reached.
func (r *redisProc) publishRaw(channel, body string) int64 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := r.Client.Publish(ctx, "sse:"+channel, body).Result()
	if err != nil {
		r.t.Fatalf("PUBLISH sse:%s: %v", channel, err)
	}
	return n
}

// publishCLI stores and publishes an event with `sse-gateway publish --redis-url` (the
// set-if-newer script: the event becomes the channel's stored latest if it is newer). It
// returns the command's output, "published <id>" or "not published: ...".
func publishCLI(t testing.TB, redisURL, channel, etag string, lastModified int64) string {
	t.Helper()
	bin := gatewayBinary(t) // may build it: before the timeout starts
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"publish", "--redis-url", redisURL, "--channel", channel, "--etag", etag,
		"--last-modified", itoa(lastModified)}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sse-gateway %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// publishCLIAll runs publishCLI for each channel concurrently (a few at a time).
func publishCLIAll(t testing.TB, redisURL string, channels []string, etag string, lastModified int64) {
	t.Helper()
	bin := gatewayBinary(t)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	errs := make(chan string, len(channels))
	for _, ch := range channels {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "publish", "--redis-url", redisURL,
				"--channel", ch, "--etag", etag, "--last-modified", itoa(lastModified))
			cmd.Env = childEnv()
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "published") {
				errs <- fmt.Sprintf("publish %s %s@%d: %v: %s", ch, etag, lastModified, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("%s", e)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

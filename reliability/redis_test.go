package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// redisProc is a private redis-server (see redistest) that a test may SIGKILL and restart on
// the same port (empty, or from a given RDB file in Dir).
type redisProc struct {
	*redistest.Server
	t testing.TB
	// Client is the test's own connection (publishing, CLIENT KILL, ACL); it reconnects by
	// itself after a restart.
	Client *redis.Client
}

// startRedis starts a redis-server for t (with extra arguments on its first start) and kills
// it when t ends. It fails, never skips, when redis-server is not installed.
func startRedis(t testing.TB, extra ...string) *redisProc {
	t.Helper()
	s := redistest.Start(t, extra...)
	return &redisProc{Server: s, t: t, Client: s.Client(&redis.Options{MaxRetries: -1, PoolSize: 4})}
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

// subscribers counts the pub/sub connections (CLIENT LIST TYPE pubsub) with a pattern
// subscription: one per subscribed gateway.
func (r *redisProc) subscribers() int {
	list, err := r.Client.Do(r.t.Context(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		return -1
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " psub=1 ") {
			n++
		}
	}
	return n
}

package quota

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond, MaxRetries: -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newQuota returns an instance on its own client; it is not running.
func newQuota(t *testing.T, addr string, cfg Config) *Quota {
	t.Helper()
	q, err := New(newClient(t, addr), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// run runs q until the returned stop is called (or t ends); stop waits for Run to return.
func run(t *testing.T, q *Quota) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func acquire(t *testing.T, q *Quota, key string) (func(), bool) {
	t.Helper()
	release, ok, err := q.Acquire(context.Background(), key)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	if ok != (release != nil) {
		t.Fatalf("Acquire(%q): ok %v but release nil = %v", key, ok, release == nil)
	}
	return release, ok
}

func count(t *testing.T, q *Quota, key string) int {
	t.Helper()
	n, err := q.Count(context.Background(), key)
	if err != nil {
		t.Fatalf("Count(%q): %v", key, err)
	}
	return n
}

// waitLimit bounds every wait here: running out is a failure, never a measurement.
const waitLimit = 20 * time.Second

// within runs fn and fails the test if it has not returned within waitLimit: for calls that
// must not block, where blocking would mean forever (a lock the test holds, a frozen Redis).
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("%s blocked (still running after %v)", what, waitLimit)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewRejectsNoLimit(t *testing.T) {
	if _, err := New(nil, Config{}, nil); err == nil {
		t.Fatal("New with Limit 0: no error")
	}
}

func TestLimitIsSharedAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	cfg := Config{Limit: 3, Instance: "a"}
	a := newQuota(t, srv.Addr(), cfg)
	cfg.Instance = "b"
	b := newQuota(t, srv.Addr(), cfg)
	run(t, a)
	run(t, b)

	ra1, ok1 := acquire(t, a, "prod")
	_, ok2 := acquire(t, a, "prod")
	_, ok3 := acquire(t, b, "prod")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("first three acquires: %v %v %v, want all true", ok1, ok2, ok3)
	}
	for name, q := range map[string]*Quota{"a": a, "b": b} {
		if _, ok := acquire(t, q, "prod"); ok {
			t.Fatalf("fourth acquire on %s admitted over the limit of 3", name)
		}
	}
	if _, ok := acquire(t, b, "other"); !ok {
		t.Fatal("another key is limited by prod's streams")
	}
	if n := count(t, a, "prod"); n != 3 {
		t.Fatalf("Count(prod) = %d, want 3", n)
	}
	if a.Held("prod") != 2 || b.Held("prod") != 1 {
		t.Fatalf("Held: a %d b %d, want 2 and 1", a.Held("prod"), b.Held("prod"))
	}

	ra1()
	ra1() // a second call must not release a second lease
	waitFor(t, waitLimit, "the release to reach Redis", func() bool { return count(t, a, "prod") == 2 })
	if _, ok := acquire(t, b, "prod"); !ok {
		t.Fatal("acquire after a release was refused")
	}
	if _, ok := acquire(t, b, "prod"); ok {
		t.Fatal("one release admitted two streams")
	}
}

// Many instances racing for the last places of one key never admit more than the limit.
func TestConcurrentAcquiresNeverExceedTheLimit(t *testing.T) {
	srv := redistest.Start(t)
	const limit, instances, perInstance = 25, 3, 30
	var qs []*Quota
	for i := range instances {
		q := newQuota(t, srv.Addr(), Config{Limit: limit, Instance: fmt.Sprint("i", i)})
		run(t, q)
		qs = append(qs, q)
	}
	var (
		admitted atomic.Int32
		mu       sync.Mutex
		releases []func()
		wg       sync.WaitGroup
	)
	start := make(chan struct{})
	for _, q := range qs {
		for range perInstance {
			wg.Go(func() {
				<-start
				release, ok, err := q.Acquire(context.Background(), "hot")
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				if ok {
					admitted.Add(1)
					mu.Lock()
					releases = append(releases, release)
					mu.Unlock()
				}
			})
		}
	}
	close(start)
	wg.Wait()
	if got := admitted.Load(); got != limit {
		t.Fatalf("%d of %d concurrent acquires admitted, want exactly the limit %d", got, instances*perInstance, limit)
	}
	if n := count(t, qs[0], "hot"); n != limit {
		t.Fatalf("Count = %d, want %d", n, limit)
	}
	for _, r := range releases {
		r()
	}
	waitFor(t, waitLimit, "every release to reach Redis", func() bool { return count(t, qs[0], "hot") == 0 })
}

// An instance that stops heartbeating (crashed) stops counting after TTL; one that keeps
// running keeps its share well past TTL.
func TestCrashedInstanceShareExpires(t *testing.T) {
	srv := redistest.Start(t)
	const ttl = time.Second
	crashed := newQuota(t, srv.Addr(), Config{Limit: 4, Instance: "crashed", TTL: ttl})
	alive := newQuota(t, srv.Addr(), Config{Limit: 4, Instance: "alive", TTL: ttl})
	other := newQuota(t, srv.Addr(), Config{Limit: 4, Instance: "other", TTL: ttl})
	run(t, alive) // crashed never runs: no heartbeat, as after a kill -9
	run(t, other)
	for range 2 {
		if _, ok := acquire(t, crashed, "k"); !ok {
			t.Fatal("crashed instance's acquire refused")
		}
		if _, ok := acquire(t, alive, "k"); !ok {
			t.Fatal("alive instance's acquire refused")
		}
	}
	start := time.Now()
	if _, ok := acquire(t, other, "k"); ok {
		t.Fatal("admitted over the limit")
	}
	waitFor(t, waitLimit, "the crashed instance's share to expire", func() bool {
		_, ok, err := other.Acquire(context.Background(), "k")
		return err == nil && ok
	})
	if took := time.Since(start); took < ttl/2 {
		t.Fatalf("crashed share expired after %v, before TTL %v", took, ttl)
	}
	// alive's two and other's one: alive's share must still count once alive has renewed it
	// to a deadline 3 TTLs past the start (read from Redis: the positive sign that it kept
	// heartbeating that long, instead of a sleep hoping it did).
	direct := newClient(t, srv.Addr())
	waitFor(t, waitLimit, "the running instance to renew its share past 3 TTLs", func() bool {
		v, err := direct.HGet(context.Background(), "sse-gateway:quota:k", alive.Field()).Result()
		_, deadline, _ := strings.Cut(v, ":")
		ms, _ := strconv.ParseInt(deadline, 10, 64)
		return err == nil && time.UnixMilli(ms).After(start.Add(3*ttl))
	})
	if n := count(t, other, "k"); n != 3 {
		t.Fatalf("Count = %d after 3 TTLs, want 3 (the running instance's share must not expire)", n)
	}
}

// The heartbeat rewrites the instance's true count: after Redis lost its data, and after
// the stored count drifted (a lost reply, a failed release). Called directly on an instance
// that is not running, so nothing rewrites the count between the test's write and read; a
// running instance's own heartbeat repairs it too.
func TestHeartbeatRepairsRedis(t *testing.T) {
	srv := redistest.Start(t)
	const ttl = time.Hour // its own heartbeat would come every 20 minutes: never during the test
	q := newQuota(t, srv.Addr(), Config{Limit: 10, Instance: "a", TTL: ttl})
	for range 3 {
		acquire(t, q, "k")
	}
	direct := newClient(t, srv.Addr())
	ctx := context.Background()
	if err := direct.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, q, "k"); n != 0 {
		t.Fatalf("Count = %d after FLUSHALL", n)
	}
	q.heartbeat(ctx)
	if n := count(t, q, "k"); n != 3 {
		t.Fatalf("Count = %d after a heartbeat following FLUSHALL, want 3", n)
	}

	if err := direct.HSet(ctx, "sse-gateway:quota:k", q.Field(), fmt.Sprintf("9:%d", time.Now().Add(time.Hour).UnixMilli())).Err(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, q, "k"); n != 9 {
		t.Fatalf("Count = %d after corrupting it, want 9", n)
	}
	q.heartbeat(ctx)
	if n := count(t, q, "k"); n != 3 {
		t.Fatalf("Count = %d after a heartbeat following a drift to 9, want 3", n)
	}

	// Redis keeps only what it must: the key expires when nobody holds streams.
	pttl, err := direct.PTTL(ctx, "sse-gateway:quota:k").Result()
	if err != nil || pttl <= 0 || pttl > ttl {
		t.Fatalf("PTTL of the quota hash = %v (%v), want in (0, %v]", pttl, err, ttl)
	}

	// Run's own heartbeat (every TTL/3) does the same.
	running := newQuota(t, srv.Addr(), Config{Limit: 10, Instance: "b", TTL: 300 * time.Millisecond})
	run(t, running)
	acquire(t, running, "r")
	acquire(t, running, "r")
	if err := direct.Del(ctx, "sse-gateway:quota:r").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLimit, "the running instance's heartbeat to restore its count", func() bool { return count(t, running, "r") == 2 })
}

// Stopping an instance removes its share at once, not after TTL.
func TestShutdownRemovesShare(t *testing.T) {
	srv := redistest.Start(t)
	a := newQuota(t, srv.Addr(), Config{Limit: 2, Instance: "a"})
	b := newQuota(t, srv.Addr(), Config{Limit: 2, Instance: "b"})
	stopA := run(t, a)
	run(t, b)
	acquire(t, a, "k")
	acquire(t, a, "k")
	if _, ok := acquire(t, b, "k"); ok {
		t.Fatal("admitted over the limit")
	}
	stopA()
	if n := count(t, b, "k"); n != 0 {
		t.Fatalf("Count = %d after the instance stopped, want 0", n)
	}
	if _, ok := acquire(t, b, "k"); !ok {
		t.Fatal("acquire refused after the only other instance stopped")
	}
}

// Without Redis, Acquire fails with an error (the server then admits) instead of hanging,
// and releases of earlier leases never block.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	q := newQuota(t, srv.Addr(), Config{Limit: 5, Instance: "a", Timeout: 300 * time.Millisecond})
	run(t, q)
	release, _ := acquire(t, q, "k")
	acquireFails := func(how string) {
		t.Helper()
		within(t, "Acquire with Redis "+how, func() {
			if _, ok, err := q.Acquire(context.Background(), "k"); err == nil || ok {
				t.Errorf("Acquire with Redis %s = ok %v, err %v; want an error", how, ok, err)
			}
		})
	}
	// Frozen (SIGSTOP): the connection is up and nothing answers; only Timeout ends it.
	srv.Pause()
	acquireFails("frozen")
	srv.Resume()
	srv.Kill()
	acquireFails("down")
	// release only queues: neither Redis nor the operations lock (which a heartbeat holds
	// for its whole Redis call) can hold it up.
	q.ops.Lock()
	within(t, "release with Redis down and the operations lock held", release)
	q.ops.Unlock()
	waitFor(t, waitLimit, "the local count to drop", func() bool { return q.Held("k") == 0 })
}

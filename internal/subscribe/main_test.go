package subscribe

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/redistest"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeHub records what a broker feeds it. Publish blocks while a gate is set.
type fakeHub struct {
	mu       sync.Mutex
	channels []string
	calls    []hubCall
	gate     chan struct{}
}

type hubCall struct {
	seed    bool
	channel string
	m       *hub.Message // nil for a Seed that found nothing
}

func (h *fakeHub) Publish(m *hub.Message) int {
	h.mu.Lock()
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, hubCall{channel: m.Channel, m: m})
	return 1
}

func (h *fakeHub) Seed(channel string, m *hub.Message) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, hubCall{seed: true, channel: channel, m: m})
	if m == nil {
		return 0
	}
	return 1
}

func (h *fakeHub) Channels() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.channels...)
}

// block makes Publish wait until the returned function is called.
func (h *fakeHub) block() (release func()) {
	gate := make(chan struct{})
	h.mu.Lock()
	h.gate = gate
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.gate = nil
			h.mu.Unlock()
			close(gate)
		})
	}
}

// messages returns the messages handed over for channel, by Publish (seed false) or Seed.
func (h *fakeHub) messages(channel string, seed bool) []*hub.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*hub.Message
	for _, c := range h.calls {
		if c.channel == channel && c.seed == seed && c.m != nil {
			out = append(out, c.m)
		}
	}
	return out
}

// has reports whether channel got version v, by Publish or Seed as seed says.
func (h *fakeHub) has(channel string, v hub.Version, seed bool) bool {
	for _, m := range h.messages(channel, seed) {
		if m.Version == v {
			return true
		}
	}
	return false
}

// got reports whether channel got version v, by Publish or by Seed.
func (h *fakeHub) got(channel string, v hub.Version) bool {
	return h.has(channel, v, false) || h.has(channel, v, true)
}

// newest is the newest version channel got by Publish or Seed.
func (h *fakeHub) newest(channel string) hub.Version {
	var v hub.Version
	for _, seed := range []bool{false, true} {
		for _, m := range h.messages(channel, seed) {
			if v.Less(m.Version) {
				v = m.Version
			}
		}
	}
	return v
}

func (h *fakeHub) reservedCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.calls {
		if strings.HasPrefix(c.channel, "_") {
			n++
		}
	}
	return n
}

// cmdCounter is a go-redis hook counting commands by name; before, if set, runs before
// each command is sent.
type cmdCounter struct {
	mu     sync.Mutex
	n      map[string]int    // guarded by mu
	before func(name string) // guarded by mu once the client is in use (setBefore)
}

func (c *cmdCounter) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

func (c *cmdCounter) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[name]++
}

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// setBefore sets before while the client may be in use.
func (c *cmdCounter) setBefore(f func(name string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.before = f
}

func (c *cmdCounter) beforeFn() func(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.before
}

func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if before := c.beforeFn(); before != nil {
			before(cmd.Name())
		}
		err := next(ctx, cmd)
		c.add(cmd.Name())
		return err
	}
}

func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if before := c.beforeFn(); before != nil {
			for _, cmd := range cmds {
				before(cmd.Name())
			}
		}
		if len(cmds) > 0 {
			c.add("pipeline:" + cmds[0].Name()) // pipelines by their first command
		}
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			c.add(cmd.Name())
		}
		return err
	}
}

// newClient returns a client with short timeouts, closed when t ends.
func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testConfig is the config the tests run gateways with: a short probe interval so that a
// dead subscription is noticed quickly.
func testConfig() Config {
	return Config{ProbeInterval: 500 * time.Millisecond, InstanceID: "test"}
}

// env is one gateway broker on a private Redis, connected through a proxy the test can
// break, feeding a fake hub.
type env struct {
	t      *testing.T
	srv    *redistest.Server
	proxy  *proxy
	direct *redis.Client // straight to Redis, for the test's own commands
	hub    *fakeHub
	cmds   *cmdCounter // commands the gateway's client ran
	reg    *prometheus.Registry
	b      *Redis
}

// newEnv starts Redis, the proxy and the broker (Run) feeding a hub with channels, and
// waits until the broker is ready. Everything stops when t ends.
func newEnv(t *testing.T, cfg Config, channels ...string) *env {
	t.Helper()
	e := &env{t: t, srv: redistest.Start(t), hub: &fakeHub{channels: channels}, cmds: &cmdCounter{}, reg: prometheus.NewRegistry()}
	e.proxy = startProxy(t, e.srv.Addr())
	e.direct = newClient(t, e.srv.Addr())
	gw := newClient(t, e.proxy.Addr())
	gw.AddHook(e.cmds)
	e.b = NewRedis(gw, store.NewRedis(gw, store.Config{}), e.hub, cfg, testLogger(t), e.reg)
	e.b.backoffMin, e.b.backoffMax = 10*time.Millisecond, 200*time.Millisecond
	e.run(e.b)
	waitFor(t, waitLimit, "the broker to become ready", e.b.Ready)
	return e
}

// testLogger writes to the test's output, shown with -v or when the test fails.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// run runs b until t ends, and checks that Run then returns promptly.
func (e *env) run(b *Redis) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Errorf("Run did not return within 10s of its context ending")
		}
	})
}

// publisher is a store on a fresh client straight to Redis, as another instance or the
// publish API would use.
func (e *env) publisher() *store.Redis {
	return store.NewRedis(newClient(e.t, e.srv.Addr()), store.Config{})
}

// stored reads channel's stored latest straight from Redis (zero Version if none).
func (e *env) stored(channel string) hub.Version {
	e.t.Helper()
	p, found, err := store.NewRedis(e.direct, store.Config{}).Get(context.Background(), channel)
	if err != nil {
		e.t.Fatalf("GET latest %s: %v", channel, err)
	}
	if !found {
		return hub.Version{}
	}
	return p.Version()
}

func (e *env) reconnects() float64 { return testutil.ToFloat64(e.b.metrics.reconnects) }

func (e *env) connected() float64 { return testutil.ToFloat64(e.b.metrics.connected) }

// waitLimit bounds every wait of these tests: running out is a failure, never a
// measurement (no assertion here depends on how fast something happened). The alternative
// a wait tells apart is never a slower success: a probe that never fires, a resync that
// never comes.
const waitLimit = 20 * time.Second

// waitFor polls cond until it holds, failing the test after d.
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

// payload builds a valid payload.
func payload(t *testing.T, etag string, lastModified int64) wire.Payload {
	t.Helper()
	p, err := wire.ParsePayload([]byte(fmt.Sprintf(`{"etag":%q,"lastModified":%d,"type":"refetchConfig"}`, etag, lastModified)), 0)
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	return p
}

func mustPublish(t *testing.T, b *store.Redis, channel string, p wire.Payload, want bool) {
	t.Helper()
	ok, err := b.Publish(context.Background(), channel, p)
	if err != nil {
		t.Fatalf("Publish(%s, %s): %v", channel, p.ID(), err)
	}
	if ok != want {
		t.Fatalf("Publish(%s, %s) = %v, want %v", channel, p.ID(), ok, want)
	}
}

package reliability

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// Failover targets (issue 9), with cluster-node-timeout 2000 and sentinel
// down-after-milliseconds 1000: a publish retried through the failover succeeds within
// publishWithin of the kill, and every stream has it within deliverWithin of that.
const (
	publishWithin = 8 * time.Second
	deliverWithin = 5 * time.Second
)

// fleet is a few gateways on one Redis deployment, with streams spread over them.
type fleet struct {
	t        testing.TB
	url      string
	gws      []*gateway
	channels []string
	streams  []*sseClient
}

// startFleet starts n gateways on redisURL and perGateway streams on each, spread over
// channels.
func startFleet(t testing.TB, redisURL string, n, perGateway int, channels []string, extra ...string) *fleet {
	t.Helper()
	f := &fleet{t: t, url: redisURL, channels: channels}
	for i := range n {
		f.gws = append(f.gws, startGateway(t, fmt.Sprintf("gw%d", i), redisURL, extra...))
	}
	cs := newClients(t)
	for i, g := range f.gws {
		for j := range perGateway {
			f.streams = append(f.streams, cs.start(clientConfig{
				channels: channels[j%len(channels)], source: source(i*perGateway + j),
				target: fixed(g.Addr), reconnect: true,
			}))
		}
	}
	waitOpen(t, 60*time.Second, f.streams)
	return f
}

// on returns the streams of channel.
func (f *fleet) on(channel string) []*sseClient {
	var out []*sseClient
	for _, c := range f.streams {
		if c.cfg.channels == channel {
			out = append(out, c)
		}
	}
	return out
}

// waitAll waits until every stream of every channel has version v of it.
func (f *fleet) waitAll(timeout time.Duration, v version) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, ch := range f.channels {
		waitHave(f.t, max(time.Until(deadline), time.Millisecond), f.on(ch), ch, v)
	}
}

// waitReady waits until every gateway answers /readyz 200.
func (f *fleet) waitReady(timeout time.Duration) {
	f.t.Helper()
	for _, g := range f.gws {
		g.waitReady(timeout)
	}
}

// checkStreams fails the test if any stream was dropped: every client still has the
// connection it opened first.
func (f *fleet) checkStreams() {
	f.t.Helper()
	for _, c := range f.streams {
		c.mu.Lock()
		conns, open := c.conns, c.open
		c.mu.Unlock()
		if conns != 1 || !open {
			f.t.Errorf("a stream was dropped: %s", c.describe())
		}
	}
}

// publishThrough publishes version (etag, lm) on every channel with the publish CLI,
// retrying each failed attempt at once, as a config service does through a failover. It
// returns when every channel's publish succeeded and fails the test after within.
func publishThrough(t testing.TB, redisURL string, channels []string, etag string, lm int64, within time.Duration) time.Time {
	t.Helper()
	at, err := tryPublishThrough(t, redisURL, channels, etag, lm, within)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// tryPublishThrough is publishThrough returning its failure; it may run off the test's
// goroutine. The channels are published concurrently, each by its own retry loop, as a
// config service publishes independent environments; it returns when the last succeeded.
func tryPublishThrough(t testing.TB, redisURL string, channels []string, etag string, lm int64, within time.Duration) (time.Time, error) {
	bin := gatewayBinary(t)
	deadline := time.Now().Add(within)
	type result struct {
		attempts int
		last     string
		err      error
	}
	results := make(chan result, len(channels))
	for _, ch := range channels {
		go func() {
			var res result
			for {
				res.attempts++
				ctx, cancel := context.WithDeadline(context.Background(), deadline)
				cmd := exec.CommandContext(ctx, bin, "publish", "--redis-url", redisURL,
					"--channel", ch, "--etag", etag, "--last-modified", itoa(lm))
				cmd.Env = childEnv()
				out, err := cmd.CombinedOutput()
				cancel()
				if err == nil {
					// "published", or "not published" when an attempt that timed out on
					// our side had stored it already: either way the version is the newest.
					break
				}
				res.last = fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out)))
				if time.Now().After(deadline) {
					res.err = fmt.Errorf("publishing %s@%d on %s did not succeed within %v (%d attempts); last: %s", etag, lm, ch, within, res.attempts, res.last)
					break
				}
			}
			results <- res
		}()
	}
	attempts, last := 0, ""
	var firstErr error
	for range channels {
		res := <-results
		attempts += res.attempts
		if res.last != "" {
			last = res.last
		}
		if firstErr == nil {
			firstErr = res.err
		}
	}
	if firstErr != nil {
		return time.Time{}, firstErr
	}
	t.Logf("published %s@%d on %d channels in %d attempts; a last failure: %s", etag, lm, len(channels), attempts, last)
	return time.Now(), nil
}

// failoverPublish kills (or freezes) a node with act, publishes version (etag, lm) on every
// channel through the failover, and checks the targets: the publish succeeds within within
// of act, and every stream has it within deliverWithin of that.
func (f *fleet) failoverPublish(what string, act func(), etag string, lm int64, within time.Duration) {
	f.t.Helper()
	act()
	at := time.Now()
	published := publishThrough(f.t, f.url, f.channels, etag, lm, within)
	f.waitAll(deliverWithin, versionOf(etag, lm))
	f.t.Logf("%s: publish succeeded %v after it; every stream had it %v after that",
		what, published.Sub(at).Round(time.Millisecond), time.Since(published).Round(time.Millisecond))
}

// subscriptions maps each gateway (by instance id) to the cluster node holding its pattern
// subscription, from CLIENT LIST on every running node: the gateway names its connections
// sse-gateway-<instance>.
func subscriptions(t testing.TB, c *redistest.Cluster) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, ReadTimeout: time.Second})
		list, err := cl.ClientList(context.Background()).Result()
		cl.Close()
		if err != nil {
			continue // a frozen node
		}
		for _, l := range strings.Split(list, "\n") {
			if !strings.Contains(l, " psub=1 ") {
				continue
			}
			for _, f := range strings.Fields(l) {
				if name, ok := strings.CutPrefix(f, "name=sse-gateway-"); ok {
					out[name] = n.Addr()
				}
			}
		}
	}
	return out
}

// mostSubscribed is the master holding the most gateway subscriptions, and the gateways
// subscribed there.
func mostSubscribed(t testing.TB, c *redistest.Cluster) (*redistest.Server, []string) {
	t.Helper()
	subs := subscriptions(t, c)
	count := map[string]int{}
	for _, addr := range subs {
		count[addr]++
	}
	var victim *redistest.Server
	for addr, n := range count {
		if node := c.Node(addr); victim == nil || n > count[victim.Addr()] {
			victim = node
		}
	}
	if victim == nil {
		t.Fatalf("no cluster node holds a gateway subscription")
	}
	var on []string
	for gw, addr := range subs {
		if addr == victim.Addr() {
			on = append(on, gw)
		}
	}
	t.Logf("gateway subscriptions: %v", subs)
	return victim, on
}

// checkMoved fails the test unless each of gws holds its subscription on a node other than
// old: the gateways left the node that died or froze.
func checkMoved(t testing.TB, c *redistest.Cluster, old *redistest.Server, gws []string) {
	t.Helper()
	subs := subscriptions(t, c)
	for _, gw := range gws {
		if addr, ok := subs[gw]; !ok || addr == old.Addr() {
			t.Errorf("gateway %s holds no subscription on another node than %s: %v", gw, old.Addr(), subs)
		}
	}
}

func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	channels := []string{"fleet-a", "fleet-b", "fleet-c"}
	f := startFleet(t, c.URL(), 3, 100, channels)
	base := time.Now().UnixMilli()
	keySlot := redistest.Slot("sse-gateway:latest:" + channels[0])

	publishThrough(t, c.URL(), channels, `"v1"`, base+1, 20*time.Second)
	f.waitAll(10*time.Second, versionOf(`"v1"`, base+1))

	subMaster, gone := mostSubscribed(t, c)
	f.failoverPublish("SIGKILL of the master holding subscriptions "+subMaster.Addr(), subMaster.Kill, `"v2"`, base+2, publishWithin)
	f.waitReady(30 * time.Second)
	checkMoved(t, c, subMaster, gone)
	subMaster.Restart() // rejoins as a replica of the node promoted in its place
	c.WaitHealthy(30 * time.Second)

	keyMaster := c.MasterOf(keySlot)
	f.failoverPublish("SIGKILL of "+keyMaster.Addr()+", master of "+channels[0]+"'s newest event", keyMaster.Kill, `"v3"`, base+3, publishWithin)
	f.waitReady(30 * time.Second)
	keyMaster.Restart()
	c.WaitHealthy(30 * time.Second)
	publishThrough(t, c.URL(), channels, `"v4"`, base+4, 10*time.Second)
	f.waitAll(deliverWithin, versionOf(`"v4"`, base+4))

	// A frozen master is worse for publishers than a dead one: their commands to it wait
	// out the read timeout (3s) until the cluster fails it over, so the publish target is
	// wider; the streams' target is the same, as the gateways leave the silent node when
	// their probe stops coming back.
	frozen, moved := mostSubscribed(t, c)
	f.failoverPublish("SIGSTOP of the master holding subscriptions "+frozen.Addr(), frozen.Pause, `"v5"`, base+5, 20*time.Second)
	f.waitReady(30 * time.Second)
	checkMoved(t, c, frozen, moved)
	frozen.Resume()
	c.WaitHealthy(30 * time.Second)
	publishThrough(t, c.URL(), channels, `"v6"`, base+6, 10*time.Second)
	f.waitAll(deliverWithin, versionOf(`"v6"`, base+6))

	from := c.MasterOf(keySlot)
	var to *redistest.Server
	for _, n := range c.Nodes {
		if m := c.MasterOf(redistest.Slot(n.Addr())); to == nil && m != from {
			to = m
		}
	}
	resharded := make(chan error, 1)
	go func() {
		// Publishing while the slots move: ASK and MOVED redirections on the way.
		_, err := tryPublishThrough(t, c.URL(), channels, `"v7"`, base+7, 60*time.Second)
		resharded <- err
	}()
	c.Reshard(from, to)
	if err := <-resharded; err != nil {
		t.Fatal(err)
	}
	f.waitAll(deliverWithin, versionOf(`"v7"`, base+7))
	publishThrough(t, c.URL(), channels, `"v8"`, base+8, 10*time.Second)
	f.waitAll(deliverWithin, versionOf(`"v8"`, base+8))
	t.Logf("every slot of %s moved to %s with publishes under way; all delivered", from.Addr(), to.Addr())

	f.waitReady(30 * time.Second)
	f.checkStreams()
}

// TestSentinelFailover runs two gateways with 200 streams on a primary, a replica and three
// sentinels (passwords on the data nodes and on the sentinels): the primary dies, a publish
// retried through the failover reaches every stream within the targets; the old primary
// comes back as a replica and the next publish reaches every stream too.
func TestSentinelFailover(t *testing.T) {
	d := redistest.StartSentinels(t, 1, 3, "data-secret", "sentinel-secret")
	channels := []string{"sent-a", "sent-b"}
	f := startFleet(t, d.URL(), 2, 100, channels)
	base := time.Now().UnixMilli()
	publishThrough(t, d.URL(), channels, `"v1"`, base+1, 20*time.Second)
	f.waitAll(10*time.Second, versionOf(`"v1"`, base+1))

	old := d.Master()
	f.failoverPublish("SIGKILL of the primary "+old.Addr(), old.Kill, `"v2"`, base+2, publishWithin)
	f.waitReady(30 * time.Second)
	nm := d.WaitMaster(old, 30*time.Second)
	old.Restart()
	publishThrough(t, d.URL(), channels, `"v3"`, base+3, 10*time.Second)
	f.waitAll(deliverWithin, versionOf(`"v3"`, base+3))
	t.Logf("primary moved %s -> %s; the old one restarted", old.Addr(), nm.Addr())
	f.waitReady(30 * time.Second)
	f.checkStreams()
}

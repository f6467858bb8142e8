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

// shardSubs is PUBSUB SHARDNUMSUB of "sse:"+channel on the node that owns its slot: how many
// connections hold a shard subscription to it.
func shardSubs(t testing.TB, c *redistest.Cluster, channel string) int64 {
	t.Helper()
	owner := c.MasterOf(redistest.Slot("sse:" + channel))
	cl := redis.NewClient(&redis.Options{Addr: owner.Addr(), MaxRetries: -1})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := cl.PubSubShardNumSub(ctx, "sse:"+channel).Result()
	if err != nil {
		t.Fatalf("PUBSUB SHARDNUMSUB on %s: %v", owner.Addr(), err)
	}
	return m["sse:"+channel]
}

// waitShardSubs waits until channel's shard subscriptions number want.
func waitShardSubs(t testing.TB, c *redistest.Cluster, channel string, want int64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got int64
	waitFor(t, within, func() string {
		return fmt.Sprintf("PUBSUB SHARDNUMSUB sse:%s = %d, want %d", channel, got, want)
	}, func() bool { got = shardSubs(t, c, channel); return got == want })
	return time.Since(start)
}

// spublish is what a config service does in sharded mode: SPUBLISH sse:<channel> <json>,
// with retries through a failover.
func spublish(t testing.TB, cc *redis.ClusterClient, channel, body string) {
	t.Helper()
	deadline := time.Now().Add(publishWithin)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := cc.SPublish(ctx, "sse:"+channel, body).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SPUBLISH sse:%s did not succeed within %v: %v", channel, publishWithin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestShardedPubSub runs three gateways in sharded mode on a 3+3 cluster: a channel's shard
// subscription exists once per gateway that streams it and nowhere else, is dropped a few
// seconds after its last stream, and moves with its slot (reshard) and with a failover,
// while raw SPUBLISH and the publish CLI reach every stream.
func TestShardedPubSub(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	cc := c.Client()
	var gws []*gateway
	for i := range 3 {
		gws = append(gws, startGateway(t, fmt.Sprintf("sh%d", i), c.URL(), "--redis-pubsub", "sharded", "--log-level", "debug"))
	}
	cs := newClients(t)
	// gw0 streams a and b, gw1 b and c, gw2 nothing; d has no stream anywhere.
	layout := map[string][]int{"sh-a": {0}, "sh-b": {0, 1}, "sh-c": {1}}
	streams := map[string][]*sseClient{}
	var all []*sseClient
	n := 0
	for ch, on := range layout {
		for _, gi := range on {
			for range 20 {
				// sh-c's streams are closed below for good: they do not reconnect.
				s := cs.start(clientConfig{channels: ch, source: source(n), target: fixed(gws[gi].Addr), reconnect: ch != "sh-c"})
				n++
				streams[ch] = append(streams[ch], s)
				all = append(all, s)
			}
		}
	}
	waitOpen(t, 30*time.Second, all)
	for ch, on := range layout {
		waitShardSubs(t, c, ch, int64(len(on)), 10*time.Second)
	}
	if got := shardSubs(t, c, "sh-d"); got != 0 {
		t.Fatalf("sh-d, streamed nowhere, has %d shard subscriptions", got)
	}

	base := time.Now().UnixMilli()
	channels := []string{"sh-a", "sh-b", "sh-c"}
	each := func(v int, via string) {
		t.Helper()
		for _, ch := range channels {
			body := payload(fmt.Sprintf(`"v%d"`, v), base+int64(v), 0, false)
			if via == "spublish" {
				spublish(t, cc, ch, body)
			} else {
				publishSharded(t, c.URL(), ch, fmt.Sprintf(`"v%d"`, v), base+int64(v))
			}
		}
		for _, ch := range channels {
			waitHave(t, deliverWithin, streams[ch], ch, versionOf(fmt.Sprintf(`"v%d"`, v), base+int64(v)))
		}
	}
	each(1, "spublish")
	each(2, "cli")

	// The last stream of sh-c closes: its subscription goes within a few seconds.
	closeStreams(streams["sh-c"])
	took := waitShardSubs(t, c, "sh-c", 0, 15*time.Second)
	t.Logf("shard subscription of sh-c dropped %v after its last stream closed", took.Round(time.Millisecond))
	channels = []string{"sh-a", "sh-b"}

	// Reshard: sh-a's slot moves to another master, with streams on it and its key.
	slot := redistest.Slot("sse:sh-a")
	from := c.MasterOf(slot)
	var to *redistest.Server
	for _, node := range c.Nodes {
		if m := c.MasterOf(redistest.Slot(node.Addr())); to == nil && m != from {
			to = m
		}
	}
	c.MoveSlot(slot, to)
	// Published (and stored) with the CLI at once: the gateways may still be moving their
	// subscription (a raw SPUBLISH in that gap would reach nobody), and the resync after they
	// moved it delivers it.
	each(3, "cli")
	took = waitShardSubs(t, c, "sh-a", 1, 10*time.Second)
	each(4, "spublish")
	t.Logf("sh-a's slot %d moved %s -> %s; its subscription had followed %v after the move", slot, from.Addr(), to.Addr(), took)

	// Failover of the master that owns sh-b.
	victim := c.MasterOf(redistest.Slot("sse:sh-b"))
	victim.Kill()
	killed := time.Now()
	each(5, "cli")
	t.Logf("SIGKILL of %s, master of sh-b: every stream had v5 %v after the kill", victim.Addr(), time.Since(killed).Round(time.Millisecond))
	c.WaitFailover(victim, 30*time.Second)
	waitShardSubs(t, c, "sh-b", 2, 15*time.Second)
	for _, g := range gws {
		g.waitReady(30 * time.Second)
		if n := g.metrics().get("sse_gateway_redis_connected"); n != 0 {
			t.Errorf("gateway %s holds a pattern subscription in sharded mode", g.name)
		}
	}
	for _, s := range append(streams["sh-a"], streams["sh-b"]...) {
		s.mu.Lock()
		conns := s.conns
		s.mu.Unlock()
		if conns != 1 {
			t.Errorf("a stream was dropped: %s", s.describe())
		}
	}
}

// closeStreams closes clients' connections (they do not reconnect when cfg.reconnect is
// false) and waits until they are closed.
func closeStreams(list []*sseClient) {
	for _, c := range list {
		c.drop()
	}
	for _, c := range list {
		for c.isOpen() {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// publishSharded stores and SPUBLISHes with the publish CLI in sharded mode, retrying
// through a failover.
func publishSharded(t testing.TB, redisURL, channel, etag string, lm int64) {
	t.Helper()
	deadline := time.Now().Add(publishWithin)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), publishWithin)
		cmd := exec.CommandContext(ctx, gatewayBinary(t), "publish", "--redis-url", redisURL, "--redis-pubsub", "sharded",
			"--channel", channel, "--etag", etag, "--last-modified", itoa(lm))
		cmd.Env = childEnv()
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish --redis-pubsub sharded %s: %v: %s", channel, err, strings.TrimSpace(string(out)))
		}
	}
}

// TestShardSubscriptionsGaugeFollowsDrops: sse_gateway_redis_shard_subscriptions counts the
// subscriptions held, also after one is dropped for want of streams. The gauge was set only
// when a node confirmed a subscription (or dropped one by itself), so a subscription the
// gateway let go after its channel's last stream stayed counted until the next SSUBSCRIBE.
func TestShardSubscriptionsGaugeFollowsDrops(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	g := startGateway(t, "gauge", c.URL(), "--redis-pubsub", "sharded")
	cs := newClients(t)
	keep := cs.start(clientConfig{channels: "gauge-keep", source: source(0), target: fixed(g.Addr), reconnect: true})
	drop := cs.start(clientConfig{channels: "gauge-drop", source: source(1), target: fixed(g.Addr), reconnect: false})
	waitOpen(t, 30*time.Second, []*sseClient{keep, drop})
	waitShardSubs(t, c, "gauge-keep", 1, 10*time.Second)
	waitShardSubs(t, c, "gauge-drop", 1, 10*time.Second)
	waitFor(t, 10*time.Second, func() string { return "the gauge never counted both subscriptions" },
		func() bool { return g.metrics().get("sse_gateway_redis_shard_subscriptions") == 2 })

	closeStreams([]*sseClient{drop})
	// The gateway counts the drop before it sends the SUNSUBSCRIBE: once Redis has none,
	// the gauge must say so.
	waitShardSubs(t, c, "gauge-drop", 0, 15*time.Second)
	if got := g.metrics().get("sse_gateway_redis_shard_subscriptions"); got != 1 {
		t.Errorf("sse_gateway_redis_shard_subscriptions = %v after gauge-drop's subscription was dropped, want 1 (gauge-keep)", got)
	}
	// sse:gauge-drop and sse:gauge-keep hash to slots of different masters, so the drop
	// also closes a connection, which is no failure: its SUNSUBSCRIBE was sent on the closed
	// connection and logged as one.
	g.kill()
	if log := g.log.tail(200); strings.Contains(log, "shard subscription command failed") {
		t.Errorf("dropping a subscription logged a failure:\n%s", log)
	}
}

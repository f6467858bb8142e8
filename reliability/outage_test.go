package reliability

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// outageChannels is how many channels the outage test's clients are spread over.
const outageChannels = 20

// TestRedisOutage is scenario 2 (a) and (b) with 2,000 connected raw clients (from eight
// 127.0.0.x source addresses, 100 per channel):
//
//   - kill: Redis is SIGKILLed; /readyz must turn 503 and stay 503 while it is down; it is
//     restarted (empty) on the same port with PSUBSCRIBE forbidden, every channel is
//     published with the publish CLI (PUBSUB NUMPAT is 0 after it: the gateway has not
//     re-subscribed), PSUBSCRIBE is allowed again, and every client must get the new
//     version on the stream it already had.
//   - pubsub-gap: the gateway's subscription connection is cut (CLIENT KILL TYPE pubsub)
//     while an ACL forbids PSUBSCRIBE, so the gap before it re-subscribes is held open
//     deterministically; the new versions are published in the gap (PUBSUB NUMPAT is 0
//     before and after they are, so they provably reached no subscriber); then PSUBSCRIBE
//     is allowed again and every client must get them.
//   - pubsub-race: the same cut with no ACL, publishing as fast as the CLI can, so whether
//     the publish lands in the gap is left to timing; every client must still end with it.
//
// In every phase no client may have reconnected (one connection each, never closed, and
// the gateway counted no new stream), and the gateway's re-subscription attempts are
// reported to show the backoff.
func TestRedisOutage(t *testing.T) {
	n := 2000
	r := startRedis(t)
	g := startGateway(t, "outage", r.URL())
	cs := newClients(t)
	channels := make([]string, outageChannels)
	for i := range channels {
		channels[i] = fmt.Sprintf("outage-%02d", i)
	}
	base := time.Now().UnixMilli()
	etag := func(i int) string { return fmt.Sprintf(`"o%d"`, i) }
	publishAll := func(i int) version {
		t.Helper()
		publishCLIAll(t, r.URL(), channels, etag(i), base+int64(i))
		return versionOf(etag(i), base+int64(i))
	}
	byChannel := map[string][]*sseClient{}
	waitAll := func(v version, timeout time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for _, ch := range channels {
			waitHave(t, timeout, byChannel[ch], ch, v)
		}
		return time.Since(start)
	}

	v1 := publishAll(1)
	start := time.Now()
	for i := range n {
		ch := channels[i%len(channels)]
		c := cs.start(clientConfig{channels: ch, source: source(i), target: fixed(g.Addr)})
		byChannel[ch] = append(byChannel[ch], c)
	}
	waitOpen(t, 60*time.Second, cs.list)
	waitAll(v1, 30*time.Second)
	t.Logf("%d clients connected and got the newest event in %v", n, time.Since(start).Round(time.Millisecond))
	m := g.metrics()
	opened := m.get("sse_gateway_stream_opens_total", `result="ok"`)
	if open := m.get("sse_gateway_streams_open"); open != float64(n) {
		t.Fatalf("sse_gateway_streams_open = %v, want %d", open, n)
	}

	// stayedOpen checks that no client lost its stream and the gateway opened none.
	stayedOpen := func(phase string) {
		t.Helper()
		for _, c := range cs.list {
			c.mu.Lock()
			bad := c.conns != 1 || !c.open || len(c.closes) != 0
			c.mu.Unlock()
			if bad {
				t.Fatalf("%s: a client's stream did not stay open: %s", phase, c.describe())
			}
		}
		m := g.metrics()
		if got := m.get("sse_gateway_stream_opens_total", `result="ok"`); got != opened {
			t.Fatalf("%s: the gateway opened %v new streams: clients reconnected", phase, got-opened)
		}
		if got := m.get("sse_gateway_streams_open"); got != float64(n) {
			t.Fatalf("%s: sse_gateway_streams_open = %v, want %d", phase, got, n)
		}
	}
	// staysNotReady samples /readyz for d and fails if it is ever 200.
	staysNotReady := func(phase string, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if s := g.readyz(); s != http.StatusServiceUnavailable {
				t.Fatalf("%s: /readyz answered %d while the subscription is down, want 503", phase, s)
			}
		}
	}
	notReadyWithin := func(phase string) time.Duration {
		t.Helper()
		d, ok := eventually(10*time.Second, func() bool { return g.readyz() == http.StatusServiceUnavailable })
		if !ok {
			t.Fatalf("%s: /readyz still not 503 after %v", phase, d)
		}
		return d
	}
	readyWithin := func(phase string) time.Duration {
		t.Helper()
		d, ok := eventually(30*time.Second, func() bool { return g.readyz() == http.StatusOK })
		if !ok {
			t.Fatalf("%s: /readyz not 200 again %v after recovery; log:\n%s", phase, d, g.log.tail(20))
		}
		return d
	}

	t.Run("kill", func(t *testing.T) {
		reconnects := g.metrics().get("sse_gateway_redis_reconnects_total")
		logFrom := g.log.count()
		killed := time.Now()
		r.Kill()
		d503 := notReadyWithin("kill")
		// A publish through the API while Redis is down must fail fast and say so: the
		// event never reached Redis, so the publisher has to retry.
		apiStart := time.Now()
		st, body := g.publishAPI(channels[0], payload(etag(99), base+99, 0, false))
		apiTook := time.Since(apiStart)
		jsonError(t, "POST /v1/publish while Redis is down", answer{status: st, header: jsonHeader, body: body}, http.StatusServiceUnavailable)
		staysNotReady("kill", 2*time.Second)
		down := time.Since(killed)
		// Restarted with PSUBSCRIBE forbidden until the new version is published, so that
		// it provably lands before the gateway has re-subscribed (PUBSUB NUMPAT 0 after it):
		// only the resync can bring it to the clients.
		r.Restart("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-psubscribe")
		restarted := time.Now()
		v2 := publishAll(2)
		if p := r.numPat(); p != 0 {
			t.Fatalf("PUBSUB NUMPAT = %d after publishing into the restarted Redis with PSUBSCRIBE forbidden, want 0", p)
		}
		r.Do("ACL", "SETUSER", "default", "+psubscribe")
		delivered := waitAll(v2, 60*time.Second)
		ready := readyWithin("kill")
		stayedOpen("kill")
		attempts := g.metrics().get("sse_gateway_redis_reconnects_total") - reconnects
		t.Logf("Redis SIGKILLed: /readyz 503 after %v; POST /v1/publish answered %d in %v; down %v; %v re-subscribe attempts while down (backoff delays logged: %s); after restart every client had the new event %v after publishing (%v after the restart), ready after %v",
			d503.Round(time.Millisecond), st, apiTook.Round(time.Millisecond), down.Round(time.Millisecond), attempts, delays(g, logFrom),
			delivered.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond), ready.Round(time.Millisecond))
		// Without backoff a gateway retries in a tight loop; with it, a few seconds of
		// outage cost a handful of attempts.
		if attempts > 30 {
			t.Errorf("%v re-subscribe attempts during a %v outage: the reconnect loop does not back off", attempts, down.Round(time.Millisecond))
		}
	})

	t.Run("pubsub-gap", func(t *testing.T) {
		r.Do("ACL", "SETUSER", "default", "-psubscribe")
		defer r.Do("ACL", "SETUSER", "default", "+psubscribe")
		killed := r.Do("CLIENT", "KILL", "TYPE", "pubsub")
		if killed.(int64) < 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub killed %v connections, want the gateway's subscription", killed)
		}
		d503 := notReadyWithin("pubsub-gap")
		if p := r.numPat(); p != 0 {
			t.Fatalf("PUBSUB NUMPAT = %d after CLIENT KILL TYPE pubsub with PSUBSCRIBE forbidden, want 0", p)
		}
		// Half of the channels through the publish CLI, half through POST /v1/publish on
		// the gateway itself: both store the latest, neither reaches the gateway now.
		v3 := versionOf(etag(3), base+3)
		publishCLIAll(t, r.URL(), channels[:len(channels)/2], etag(3), base+3)
		for _, ch := range channels[len(channels)/2:] {
			if s, body := g.publishAPI(ch, payload(etag(3), base+3, 0, false)); s != http.StatusAccepted {
				t.Fatalf("POST /v1/publish %s during the gap: %d %s", ch, s, body)
			}
		}
		if p := r.numPat(); p != 0 {
			t.Fatalf("PUBSUB NUMPAT = %d right after publishing: the gateway re-subscribed, so the publish was not in the gap", p)
		}
		staysNotReady("pubsub-gap", time.Second)
		r.Do("ACL", "SETUSER", "default", "+psubscribe")
		allowed := time.Now()
		waitAll(v3, 60*time.Second)
		delivered := time.Since(allowed)
		readyWithin("pubsub-gap")
		stayedOpen("pubsub-gap")
		t.Logf("subscription cut with PSUBSCRIBE forbidden: /readyz 503 after %v; the events published in the gap reached every client %v after PSUBSCRIBE was allowed again (that includes the re-subscribe backoff, which had grown while PSUBSCRIBE was refused)",
			d503.Round(time.Millisecond), delivered.Round(time.Millisecond))
	})

	t.Run("pubsub-race", func(t *testing.T) {
		readyWithin("pubsub-race")
		r.Do("CLIENT", "KILL", "TYPE", "pubsub")
		inGap := r.numPat() == 0
		v4 := publishAll(4)
		delivered := waitAll(v4, 60*time.Second)
		readyWithin("pubsub-race")
		stayedOpen("pubsub-race")
		t.Logf("subscription cut, published at once (gateway still unsubscribed when publishing began: %v): every client had it after %v", inGap, delivered.Round(time.Millisecond))
	})
}

// delays lists the backoff delays the gateway logged since log position from.
func delays(g *gateway, from int) string {
	var out []string
	for _, l := range g.log.matching(from, "re-subscribing") {
		var rec struct {
			Delay any `json:"delay"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		switch d := rec.Delay.(type) {
		case string:
			out = append(out, d)
		case float64: // slog's JSON handler writes a time.Duration as nanoseconds
			out = append(out, time.Duration(d).Round(time.Millisecond).String())
		}
	}
	if len(out) > 12 {
		out = append(out[:12], "...")
	}
	return strings.Join(out, " ")
}

// TestRedisDataLoss is scenario 2 (c), the policy of internal/subscribe's package doc for a
// Redis that lost its data, at binary level:
//
//   - empty: Redis restarts empty; the gateway that has subscribers on a channel writes its
//     newest event back, so a second gateway started afterwards serves it to a fresh
//     stream from Redis; an older publish is then refused (versions never go backwards);
//     a channel nobody subscribed to is not restored (a fresh stream on it gets nothing
//     until the next publish).
//   - stale: Redis restarts from an older snapshot (a failover to a lagging replica); the
//     gateways write the newer version back over it and no client ever sees the older one.
func TestRedisDataLoss(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	const sub, nosub = "loss-sub", "loss-nosub"
	base := time.Now().UnixMilli()
	etag := func(i int) string { return fmt.Sprintf(`"l%d"`, i) }
	v := func(i int) version { return versionOf(etag(i), base+int64(i)) }
	publish := func(ch string, i int) string { return publishCLI(t, r.URL(), ch, etag(i), base+int64(i)) }
	// Stored before any gateway runs, so that no gateway ever saw it: a channel nobody
	// subscribes to. (A gateway that received it would store it again from its dispatcher,
	// and a store in flight when Redis dies is retried by go-redis into the new Redis.)
	publish(nosub, 5)
	a := startGateway(t, "loss-a", r.URL())
	cs := newClients(t)
	var onA []*sseClient
	for i := range 20 {
		onA = append(onA, cs.start(clientConfig{channels: sub, source: source(i), target: fixed(a.Addr)}))
	}
	waitOpen(t, 20*time.Second, onA)
	publish(sub, 5)
	waitHave(t, 10*time.Second, onA, sub, v(5))
	latestKey := func(ch string) string { return "sse-gateway:latest:" + ch }

	r.Kill()
	r.Restart()
	restarted := time.Now()
	waitFor(t, 30*time.Second, func() string {
		return "gateway loss-a never wrote the newest event of " + sub + " back to the empty Redis; log:\n" + a.log.tail(20)
	}, func() bool {
		s, _ := r.Client.Get(t.Context(), latestKey(sub)).Result()
		return strings.Contains(s, `l5`)
	})
	t.Logf("Redis restarted empty: the newest event of %s was written back %v later", sub, time.Since(restarted).Round(time.Millisecond))
	a.waitReady(30 * time.Second)
	if n := r.Do("EXISTS", latestKey(nosub)); n.(int64) != 0 {
		t.Errorf("%s (no subscribers anywhere) was restored; the policy says it comes back with the next publish", nosub)
	}

	b := startGateway(t, "loss-b", r.URL())
	fresh := cs.start(clientConfig{channels: sub, source: source(1), target: fixed(b.Addr)})
	waitHave(t, 10*time.Second, []*sseClient{fresh}, sub, v(5))
	if first := fresh.snapshot()[0]; first.v != v(5) {
		t.Errorf("fresh stream on a gateway started after the data loss: first event %s, want %s", first.id, v(5))
	}
	if out := publish(sub, 3); !strings.HasPrefix(out, "not published") {
		t.Errorf("publishing an older version after the write-back: %q, want it refused (versions never go backwards)", out)
	}
	freshNoSub := cs.start(clientConfig{channels: nosub, source: source(2), target: fixed(b.Addr)})
	waitOpen(t, 10*time.Second, []*sseClient{freshNoSub})
	publish(nosub, 6)
	waitHave(t, 10*time.Second, []*sseClient{freshNoSub}, nosub, v(6))
	if first := freshNoSub.snapshot()[0]; first.v != v(6) {
		t.Errorf("fresh stream on %s (not restored): first event %s, want the next publish %s", nosub, first.id, v(6))
	}

	t.Run("stale", func(t *testing.T) {
		// An older snapshot: the same channel at version 4, saved by a side Redis.
		side := startRedis(t, "--dbfilename", "stale.rdb")
		publishCLI(t, side.URL(), sub, etag(4), base+4)
		side.Do("SAVE")
		rdb, err := os.ReadFile(filepath.Join(side.Dir(), "stale.rdb"))
		if err != nil {
			t.Fatalf("reading the side Redis snapshot: %v", err)
		}
		if err := os.WriteFile(filepath.Join(r.Dir(), "stale.rdb"), rdb, 0o600); err != nil {
			t.Fatal(err)
		}
		publish(sub, 7)
		all := append(append([]*sseClient(nil), onA...), fresh)
		waitHave(t, 10*time.Second, all, sub, v(7))

		// Restart from the snapshot with PSUBSCRIBE forbidden, so that the stale version is
		// provably what Redis holds before any gateway can resync.
		r.Kill()
		r.Restart("--dbfilename", "stale.rdb", "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-psubscribe")
		if s, _ := r.Client.Get(t.Context(), latestKey(sub)).Result(); !strings.Contains(s, `l4`) {
			t.Fatalf("Redis restarted from the stale snapshot holds %q, want version 4", s)
		}
		r.Do("ACL", "SETUSER", "default", "+psubscribe")
		restarted := time.Now()
		waitFor(t, 30*time.Second, func() string {
			s, _ := r.Client.Get(t.Context(), latestKey(sub)).Result()
			return fmt.Sprintf("the gateways never wrote version 7 back over the stale snapshot; stored: %q", s)
		}, func() bool {
			s, _ := r.Client.Get(t.Context(), latestKey(sub)).Result()
			return strings.Contains(s, `l7`)
		})
		t.Logf("Redis restarted from an older snapshot: version 7 was written back over version 4 %v after the gateways could subscribe again", time.Since(restarted).Round(time.Millisecond))
		a.waitReady(30 * time.Second)
		b.waitReady(30 * time.Second)
		c := startGateway(t, "loss-c", r.URL())
		fresh := cs.start(clientConfig{channels: sub, source: source(3), target: fixed(c.Addr)})
		waitHave(t, 10*time.Second, []*sseClient{fresh}, sub, v(7))
		if first := fresh.snapshot()[0]; first.v != v(7) {
			t.Errorf("fresh stream after the stale restore: first event %s, want %s", first.id, v(7))
		}
		v8 := v(8)
		publish(sub, 8)
		waitHave(t, 10*time.Second, all, sub, v8)
		for _, cl := range all {
			assertIncreasing(t, cl, sub)
		}
	})
}

// TestGatewayStartsBeforeRedis: a gateway started while Redis is down serves /healthz, is
// not ready, and still accepts streams; once Redis comes up it becomes ready and an event
// published then reaches the streams opened before.
func TestGatewayStartsBeforeRedis(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	r.Kill()
	g := newGateway(t, "early", r.URL())
	g.start()
	if s, _ := httpGet(g.url("/healthz")); s != http.StatusOK {
		t.Fatalf("/healthz %d with Redis down, want 200 (the process is alive)", s)
	}
	if s := g.readyz(); s != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d with Redis down, want 503", s)
	}
	cs := newClients(t)
	var list []*sseClient
	for i := range 20 {
		list = append(list, cs.start(clientConfig{channels: "early", source: source(i), target: fixed(g.Addr)}))
	}
	waitOpen(t, 20*time.Second, list)
	r.Restart()
	up := time.Now()
	g.waitReady(30 * time.Second)
	ready := time.Since(up)
	lm := time.Now().UnixMilli()
	publishCLI(t, r.URL(), "early", `"e1"`, lm)
	waitHave(t, 10*time.Second, list, "early", versionOf(`"e1"`, lm))
	t.Logf("gateway started with Redis down: streams accepted; ready %v after Redis came up; a publish reached every stream", ready.Round(time.Millisecond))
}

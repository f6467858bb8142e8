package reliability

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// TestFirstStreamRacesPublish is issue 10's race: a raw PUBLISH on a channel nobody streams
// yet, at the moment its first stream opens. The event reaches the hub before the stream is
// in it (dropped there), and reaches the store after the stream's seed lookup read it;
// unless the gateway remembers it before handing it on (and seeds with the newer of store
// and memory), the stream never gets it. Batches of 40 fresh channels, each with one PUBLISH
// and one stream released together: every stream must end with its channel's version.
func TestFirstStreamRacesPublish(t *testing.T) {
	r := startRedis(t)
	g := startGateway(t, "race", r.URL())
	raceFirstStreams(t, g, scaled(150, 60), func(channel, body string) { r.publishRaw(channel, body) })
}

// TestShardedFirstStreamRacesPublish is the same race in sharded mode, where the first
// stream of a channel on an instance also creates its shard subscription: the stream is
// seeded only once the subscription is confirmed, so an event is either delivered on it or
// found in the store. The publishes are stored ones (POST /v1/publish): a raw SPUBLISH on a
// channel nobody subscribes to reaches nobody and is stored by nobody.
func TestShardedFirstStreamRacesPublish(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	g := startGateway(t, "shrace", c.URL(), "--redis-pubsub", "sharded")
	raceFirstStreams(t, g, scaled(100, 40), func(channel, body string) {
		if st, resp := g.publishAPI(channel, body); st != http.StatusAccepted {
			t.Errorf("POST /v1/publish %s: %d %s", channel, st, resp)
		}
	})
}

// raceFirstStreams runs batches of 40 fresh channels, each with one publish (by publish) and
// its first stream on g released together (half publish first, half connect first), and
// fails unless every stream ends with its channel's version.
func raceFirstStreams(t *testing.T, g *gateway, batches int, publish func(channel, body string)) {
	perBatch := 40
	base := time.Now().UnixMilli()
	misses, total := 0, 0
	var missed []string
	for b := range batches {
		cs := newClients(t)
		channels := make([]string, perBatch)
		streams := make([]*sseClient, perBatch)
		var ready, release, started sync.WaitGroup
		var mu sync.Mutex // cs.start is not safe for concurrent use
		release.Add(1)
		for i := range channels {
			channels[i] = fmt.Sprintf("race%d-%d", b, i)
			ready.Add(1)
			started.Add(1)
			go func() {
				defer started.Done()
				ready.Done()
				release.Wait()
				open := func() {
					mu.Lock()
					streams[i] = cs.start(clientConfig{channels: channels[i], source: source(i), target: fixed(g.Addr)})
					mu.Unlock()
				}
				// Half open first, half publish first: the race is in either order.
				if i%2 == 0 {
					open()
				}
				publish(channels[i], payload(`"v"`, base+int64(b), 0, false))
				if i%2 == 1 {
					open()
				}
			}()
		}
		ready.Wait()
		release.Done()
		started.Wait()
		v := versionOf(`"v"`, base+int64(b))
		// Bounded generously; a miss never arrives at all.
		deadline := time.Now().Add(10 * time.Second)
		for i, c := range streams {
			for !c.has(channels[i], v) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			total++
			if !c.has(channels[i], v) {
				misses++
				missed = append(missed, c.describe())
			}
		}
		cs.stop()
	}
	t.Logf("%d streams, each opened as its channel's first PUBLISH was sent: %d never got it", total, misses)
	if misses > 0 {
		t.Fatalf("%d of %d first streams missed the event published as they opened; e.g. %s", misses, total, missed[0])
	}
}

// TestSeedSurvivesRedisPause is issue 10's pause: Redis stops answering (CLIENT PAUSE 3500
// ALL) while a stream opens on a channel whose newest version is stored. The stream's seed
// lookup fails or times out; it must be retried (or its late answer applied) so that the
// stream gets the version once Redis answers, not never. The probe interval is the default
// (2 s) so that the pause does not make the gateway re-subscribe and resync, which would
// hide a missing retry.
func TestSeedSurvivesRedisPause(t *testing.T) {
	r := startRedis(t)
	g := startGateway(t, "pause", r.URL(), "--probe-interval", "2s")
	base := time.Now().UnixMilli()
	publishCLI(t, r.URL(), "paused", `"stored"`, base)
	cs := newClients(t)
	r.Do("CLIENT", "PAUSE", "3500", "ALL")
	paused := time.Now()
	c := cs.start(clientConfig{channels: "paused", source: source(0), target: fixed(g.Addr)})
	waitOpen(t, 10*time.Second, []*sseClient{c})
	v := versionOf(`"stored"`, base)
	waitHave(t, 20*time.Second, []*sseClient{c}, "paused", v)
	t.Logf("stream opened during a 3.5 s CLIENT PAUSE got the stored version %v after the pause began",
		time.Since(paused).Round(time.Millisecond))
	if n := g.metrics().get("sse_gateway_redis_reconnects_total"); n != 0 {
		t.Errorf("the gateway re-subscribed %v times: its resync, not the seed retry, may have delivered", n)
	}
}

// TestPublishRules: a lastModified must grow per channel and be epoch milliseconds. The
// publish API answers 409 for another config with the newest's lastModified and 400 for a
// stamp far in the future; the CLI exits non-zero for both; a raw PUBLISH of either is not
// delivered and is counted as malformed, by reason.
func TestPublishRules(t *testing.T) {
	r := startRedis(t)
	g := startGateway(t, "rules", r.URL())
	cs := newClients(t)
	c := cs.start(clientConfig{channels: "rules", source: source(0), target: fixed(g.Addr)})
	waitOpen(t, 10*time.Second, []*sseClient{c})
	lm := time.Now().UnixMilli() - 60_000

	if st, body := g.publishAPI("rules", payload(`"a"`, lm, 0, false)); st != http.StatusAccepted {
		t.Fatalf("first publish: %d %s", st, body)
	}
	waitHave(t, 10*time.Second, []*sseClient{c}, "rules", versionOf(`"a"`, lm))
	st, body := g.publishAPI("rules", payload(`"b"`, lm, 0, false))
	jsonError(t, "POST /v1/publish of another config with the same lastModified", answer{status: st, header: jsonHeader, body: body}, http.StatusConflict)
	st, body = g.publishAPI("rules", payload(`"micro"`, time.Now().UnixMicro(), 0, false))
	jsonError(t, "POST /v1/publish with lastModified in microseconds", answer{status: st, header: jsonHeader, body: body}, http.StatusBadRequest)

	cli := func(etag string, lastModified int64) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, gatewayBinary(t), "publish", "--redis-url", r.URL(),
			"--channel", "rules", "--etag", etag, "--last-modified", itoa(lastModified))
		cmd.Env = childEnv()
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), strings.TrimSpace(string(out))
	}
	if code, out := cli(`"c"`, lm); code == 0 || !strings.Contains(out, "conflict") {
		t.Errorf("publish CLI of another config with the same lastModified: exit %d %q, want non-zero, conflict", code, out)
	}
	if code, out := cli(`"micro"`, time.Now().UnixMicro()); code != 2 || !strings.Contains(out, "future") {
		t.Errorf("publish CLI with lastModified in microseconds: exit %d %q, want 2, future", code, out)
	}

	// Raw: the same, straight on pub/sub; a later version published after them must be the
	// next (and only other) event the stream gets.
	r.publishRaw("rules", payload(`"raw-twin"`, lm, 0, false))
	r.publishRaw("rules", payload(`"raw-micro"`, time.Now().UnixMicro(), 0, false))
	later := versionOf(`"later"`, lm+1)
	r.publishRaw("rules", payload(`"later"`, lm+1, 0, false))
	waitHave(t, 10*time.Second, []*sseClient{c}, "rules", later)
	var ids []string
	for _, e := range c.snapshot() {
		ids = append(ids, e.id)
	}
	if want := []string{versionOf(`"a"`, lm).String(), later.String()}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("the stream got %v, want only %v", ids, want)
	}
	m := g.metrics()
	for _, reason := range []string{"conflict", "future"} {
		if n := m.get("sse_gateway_events_malformed_total", `reason="`+reason+`"`); n != 1 {
			t.Errorf("sse_gateway_events_malformed_total{reason=%q} = %v, want 1", reason, n)
		}
	}
}

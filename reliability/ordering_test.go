package reliability

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestOrderingRacingPublishers is scenario 8: two publishers race PUBLISHes of interleaved
// versions of one channel straight into Redis (even and odd lastModified, some sharing a
// millisecond so that the ETag hash breaks the tie), and both redeliver old payloads. Two
// gateways serve single-channel clients, two-channel clients, and clients that hang up
// every few events and come back with their Last-Event-ID, alternating gateways. Every
// client's versions of each channel must strictly increase, across its reconnects, and end
// at the channel's newest version. Meanwhile the gateways' Redis subscriptions are cut
// (CLIENT KILL TYPE pubsub), so that resyncs race the live events too; the final version is
// published with the publish CLI (which stores it) after they are back.
func TestOrderingRacingPublishers(t *testing.T) {
	t.Parallel()
	perPublisher := scaled(2000, 400)
	r := startRedis(t)
	a := startGateway(t, "order-a", r.URL())
	b := startGateway(t, "order-b", r.URL())
	cs := newClients(t)
	const main, side = "order-main", "order-side"
	var list []*sseClient
	for i := range 40 {
		g := a
		if i%2 == 1 {
			g = b
		}
		cfg := clientConfig{channels: main, source: source(i), target: fixed(g.Addr)}
		switch {
		case i < 10:
			cfg.channels = main + "," + side
		case i < 20:
			cfg.reconnect, cfg.cycleEvery = true, 3+i%5
			cfg.target = func(attempt int) string {
				if attempt%2 == 0 {
					return a.Addr
				}
				return b.Addr
			}
		}
		list = append(list, cs.start(cfg))
	}
	waitOpen(t, 10*time.Second, list)

	base := time.Now().UnixMilli()
	var mu sync.Mutex
	newest := map[string]version{}
	published, redelivered := 0, 0
	note := func(ch string, v version) {
		mu.Lock()
		defer mu.Unlock()
		published++
		if newest[ch].less(v) {
			newest[ch] = v
		}
	}
	// Meanwhile both gateways' subscriptions are cut three times, at a quarter, half and
	// three quarters of publisher 0's run: events published in the gaps come back through
	// the resync, racing the live ones. Each cut waits until both gateways are subscribed
	// again, and must cut both.
	var killed []int64
	cut := func() {
		if _, ok := eventually(30*time.Second, func() bool { return r.subscribers() == 2 }); !ok {
			t.Errorf("the gateways did not both re-subscribe within 30s of the last cut (%d subscribed)", r.subscribers())
			return
		}
		n, err := r.Client.Do(t.Context(), "CLIENT", "KILL", "TYPE", "pubsub").Int64()
		if err != nil {
			t.Errorf("CLIENT KILL TYPE pubsub: %v", err)
			return
		}
		killed = append(killed, n)
	}
	var pubs sync.WaitGroup
	for p := range 2 {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 42))
			var sent []string
			for k := range perPublisher {
				lm := base + int64(2*k+p)
				if p == 1 && k%10 == 0 {
					lm = base + int64(2*k) // the same millisecond as publisher 0's
				}
				etag := fmt.Sprintf(`"p%d-%d"`, p, k)
				body := payload(etag, lm, 0, false)
				r.publishRaw(main, body)
				note(main, versionOf(etag, lm))
				sent = append(sent, body)
				if k%3 == 0 {
					r.publishRaw(main, sent[rng.IntN(len(sent))]) // a redelivery
					mu.Lock()
					redelivered++
					mu.Unlock()
				}
				if p == 0 && k > 0 && k%(perPublisher/4) == 0 && len(killed) < 3 {
					cut()
				}
				if p == 0 && k%4 == 0 {
					etag := fmt.Sprintf(`"s-%d"`, k)
					r.publishRaw(side, payload(etag, base+int64(k), 0, false))
					note(side, versionOf(etag, base+int64(k)))
				}
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond)
				}
			}
		}()
	}
	pubs.Wait()
	if len(killed) != 3 || slices.ContainsFunc(killed, func(n int64) bool { return n != 2 }) {
		t.Errorf("CLIENT KILL TYPE pubsub cut %v connections; want 3 cuts of both gateways' subscriptions while the publishers ran", killed)
	}
	// A raw PUBLISH that lands while no gateway is subscribed reaches nobody and is stored
	// by nobody: Redis pub/sub is at-most-once, and only the publish CLI and API store
	// before publishing. So the channel's newest version is the one a client must end at
	// only if it was stored: the final version goes through the publish CLI, once both
	// gateways are subscribed again.
	a.waitReady(30 * time.Second)
	b.waitReady(30 * time.Second)
	finalLM := base + int64(2*perPublisher+10)
	publishCLI(t, r.URL(), main, `"final"`, finalLM)
	newest[main] = versionOf(`"final"`, finalLM)
	publishCLI(t, r.URL(), side, `"final"`, finalLM)
	newest[side] = versionOf(`"final"`, finalLM)

	waitHave(t, 20*time.Second, list, main, newest[main])
	waitHave(t, 20*time.Second, list[:10], side, newest[side])
	lo, hi, reconnects := -1, 0, 0
	for _, c := range list {
		assertIncreasing(t, c, main)
		assertIncreasing(t, c, side)
		n := len(c.snapshot())
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
		c.mu.Lock()
		reconnects += max(0, c.conns-1)
		c.mu.Unlock()
	}
	ma, mb := a.metrics(), b.metrics()
	t.Logf("%d publishes (2 racing publishers, ties every 10th) + %d redeliveries, subscriptions cut %d times: %d clients on 2 gateways received %d-%d events each, %d reconnects with Last-Event-ID; every sequence strictly increasing, all ended at %s; gateways dropped stale=%v/%v duplicate=%v/%v",
		published, redelivered, len(killed), len(list), lo, hi, reconnects, newest[main],
		ma.get("sse_gateway_events_dropped_total", `reason="stale"`), mb.get("sse_gateway_events_dropped_total", `reason="stale"`),
		ma.get("sse_gateway_events_dropped_total", `reason="duplicate"`), mb.get("sse_gateway_events_dropped_total", `reason="duplicate"`))
}

package reliability

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDrainToOtherGateway is scenario 4: two gateways on one Redis. A publish reaches the
// clients of both. Then gateway A gets SIGTERM with --drain 5s while a sequence of versions
// is published (through gateway B's publish API, which stores and publishes) during and
// just after the drain. A's clients reconnect to B at once with their Last-Event-ID. Every
// client must end with the final version, never see a version twice or go backwards across
// its reconnect, A's closes must be spread over the window (no tenth of it holding more
// than a tenth of them, plus slack), and A must exit 0.
func TestDrainToOtherGateway(t *testing.T) {
	t.Parallel()
	const (
		// Closes are timed where the clients see them, so a scheduling stall of d on this
		// busy machine moves d*onA/window of them into the next tenth: a 5s window keeps a
		// 200ms stall (8 closes) inside the slack.
		window = 5 * time.Second
		onA    = 200
		onB    = 50
		ch     = "drain"
	)
	r := startRedis(t)
	a := startGateway(t, "drain-a", r.URL(), "--drain", window.String())
	b := startGateway(t, "drain-b", r.URL())
	cs := newClients(t)
	var clientsA, all []*sseClient
	for i := range onA {
		c := cs.start(clientConfig{channels: ch, source: source(i), reconnect: true, target: func(attempt int) string {
			if attempt == 1 {
				return a.Addr
			}
			return b.Addr
		}})
		clientsA = append(clientsA, c)
	}
	all = append(all, clientsA...)
	for i := range onB {
		all = append(all, cs.start(clientConfig{channels: ch, source: source(i), target: fixed(b.Addr)}))
	}
	waitOpen(t, 30*time.Second, all)

	base := time.Now().UnixMilli()
	publish := func(i int) version {
		etag := fmt.Sprintf(`"d%d"`, i)
		if s, body := b.publishAPI(ch, payload(etag, base+int64(i), 0, false)); s != http.StatusAccepted {
			t.Errorf("publish v%d through gateway B: %d %s", i, s, body)
		}
		return versionOf(etag, base+int64(i))
	}
	waitHave(t, 10*time.Second, all, ch, publish(1))

	// Publish every 100ms from the SIGTERM until half a second after the window.
	sigterm := time.Now()
	a.signal(syscall.SIGTERM)
	var final version
	var published int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 2; time.Since(sigterm) < window+500*time.Millisecond; i++ {
			final = publish(i)
			published++
			<-tick.C
		}
	}()
	code := a.waitExit(window + 20*time.Second)
	exited := time.Since(sigterm)
	wg.Wait()
	if code != 0 {
		t.Errorf("the drained gateway exited with %d, want 0; log:\n%s", code, a.log.tail(20))
	}
	waitHave(t, 20*time.Second, all, ch, final)
	for _, c := range all {
		assertIncreasing(t, c, ch)
	}

	// Spread: bucket A's first-connection closes into tenths of the window.
	tenth := window / 10
	var buckets [10]int
	var late []time.Duration
	var retries []int
	for _, c := range clientsA {
		c.mu.Lock()
		closes, conns := append([]time.Time(nil), c.closes...), c.conns
		retries = append(retries, c.retries...)
		c.mu.Unlock()
		if len(closes) == 0 || conns < 2 {
			t.Fatalf("a client of the drained gateway was not closed and reconnected: %s", c.describe())
		}
		at := closes[0].Sub(sigterm)
		switch k := int(at / tenth); {
		case at < 0:
			t.Fatalf("a client's stream closed before the SIGTERM: %s", c.describe())
		case k < 10:
			buckets[k]++
		case at < window+time.Second:
			buckets[9]++ // scheduled inside the window, observed a little after it
			late = append(late, at)
		default:
			t.Errorf("a stream closed %v after the SIGTERM, outside the %v window: %s", at, window, c.describe())
		}
	}
	limit := onA/10 + max(3, onA/20)
	for k, n := range buckets {
		if n > limit {
			t.Errorf("%d of %d closes fell in tenth %d of the drain window (limit %d): closes are not spread; buckets %v", n, onA, k, limit, buckets)
		}
	}
	minR, maxR := 0, 0
	for i, r := range retries {
		if i == 0 || r < minR {
			minR = r
		}
		if r > maxR {
			maxR = r
		}
	}
	t.Logf("drain %v of %d streams: closes per tenth of the window %v (limit %d; %d observed just after the window, latest %v); retry: %d-%dms on %d streams; %d versions published during the drain, every one of %d clients ended with the final one; gateway exited 0 after %v",
		window, onA, buckets, limit, len(late), maxDur(late), minR, maxR, len(retries), published, onA+onB, exited.Round(time.Millisecond))
	if !strings.Contains(a.log.tail(5), `"msg":"stopped"`) {
		t.Errorf("the drained gateway did not log \"stopped\"; log:\n%s", a.log.tail(10))
	}
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(time.Millisecond)
}

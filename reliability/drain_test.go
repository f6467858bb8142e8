package reliability

import (
	"fmt"
	"net/http"
	"slices"
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
// its reconnect, A's closes must be spread over the window, and A must exit 0.
//
// The spread is checked on its exact side: the k-th of A's streams to end cannot end before
// k/onA of the window after the SIGTERM (Drain schedules no close earlier, and a client sees
// a close only after it), whatever the load. Closes seen late prove nothing (a stalled
// client or gateway), so they are only reported, per tenth of the window; that the gateway
// schedules them evenly is internal/stream's TestDrainSchedule (synctest, exact instants).
func TestDrainToOtherGateway(t *testing.T) {
	t.Parallel()
	const (
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

	// Spread: A's first-connection closes, in order, against k/onA of the window; and, for
	// the record, per tenth of it.
	tenth := window / 10
	buckets := make([]int, 11) // the last one: observed after the window
	var ends []time.Duration
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
		if at < 0 {
			t.Fatalf("a client's stream closed before the SIGTERM: %s", c.describe())
		}
		ends = append(ends, at)
		buckets[min(int(at/tenth), 10)]++
	}
	slices.Sort(ends)
	for k, at := range ends {
		if early := window * time.Duration(k) / onA; at < early {
			t.Errorf("stream %d of %d to end ended %v after the SIGTERM, before %v (k/n of the %v window): closes are not spread", k+1, onA, at, early, window)
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
	t.Logf("drain %v of %d streams: closes seen per tenth of the window %v (and %d after it; latest %v), none before its share of the window; retry: %d-%dms on %d streams; %d versions published during the drain, every one of %d clients ended with the final one; gateway exited 0 after %v",
		window, onA, buckets[:10], buckets[10], ends[len(ends)-1].Round(time.Millisecond), minR, maxR, len(retries), published, onA+onB, exited.Round(time.Millisecond))
	if !strings.Contains(a.log.tail(5), `"msg":"stopped"`) {
		t.Errorf("the drained gateway did not log \"stopped\"; log:\n%s", a.log.tail(10))
	}
}

package subscribe

import (
	"context"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// TestRedisKilledAndRestarted: SIGKILL Redis, restart it (empty) on the same port, publish
// before the gateway is back (the proxy refuses it meanwhile, so the event can only reach it
// through the store). The gateway is not ready during the outage, reconnects, is ready
// after, and its resync seeds the hub with the event.
func TestRedisKilledAndRestarted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "c1")
	before := payload(t, "v1", 1000)
	mustPublish(t, e.publisher(), "c1", before, true)
	waitFor(t, waitLimit, "the event before the outage", func() bool { return e.hub.has("c1", before.Version(), false) })

	e.srv.Kill()
	waitFor(t, waitLimit, "not ready after Redis died", func() bool { return !e.b.Ready() })
	waitFor(t, waitLimit, "redis_connected to drop to 0", func() bool { return e.connected() == 0 })
	e.proxy.Refuse(true)
	e.srv.Restart()
	during := payload(t, "v2", 2000)
	mustPublish(t, e.publisher(), "c1", during, true)
	if e.b.Ready() {
		t.Fatalf("ready while the gateway cannot reach Redis")
	}

	e.proxy.Refuse(false)
	waitFor(t, waitLimit, "ready after Redis is back", e.b.Ready)
	waitFor(t, waitLimit, "the resync to seed the event published during the outage", func() bool {
		return e.hub.has("c1", during.Version(), true)
	})
	if e.reconnects() < 1 {
		t.Errorf("redis_reconnects_total = %v, want at least 1", e.reconnects())
	}
	if e.connected() != 1 {
		t.Errorf("redis_connected = %v, want 1", e.connected())
	}

	after := payload(t, "v3", 3000)
	mustPublish(t, e.publisher(), "c1", after, true)
	waitFor(t, waitLimit, "an event published after recovery", func() bool { return e.hub.got("c1", after.Version()) })
}

// TestPubSubClientKilled cuts only the subscription (CLIENT KILL TYPE pubsub) and publishes
// in the gap before the gateway re-subscribes: the resync delivers the event from the store.
func TestPubSubClientKilled(t *testing.T) {
	t.Parallel()
	// A probe interval longer than the test: no spurious probe timeout on a loaded machine
	// can make the gateway re-subscribe by itself, so the one subscription is there to cut.
	cfg := testConfig()
	cfg.ProbeInterval = time.Hour
	e := newEnv(t, cfg, "c1")
	ctx := context.Background()
	e.proxy.Refuse(true) // hold the gap open until the event is published
	if n, err := e.direct.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want the gateway's one subscription killed", n, err)
	}
	waitFor(t, waitLimit, "not ready once the subscription is cut", func() bool { return !e.b.Ready() })
	gap := payload(t, "gap", 1000)
	mustPublish(t, e.publisher(), "c1", gap, true)
	e.proxy.Refuse(false)
	waitFor(t, waitLimit, "ready after re-subscribing", e.b.Ready)
	waitFor(t, waitLimit, "the event published in the gap", func() bool { return e.hub.has("c1", gap.Version(), true) })
	if e.reconnects() < 1 {
		t.Errorf("redis_reconnects_total = %v, want at least 1", e.reconnects())
	}
}

// TestSilentSubscriptionDeath freezes the connections (Redis's bytes stop arriving, TCP
// stays up): the probe stops coming back, the gateway goes not ready within the probe
// timeout, re-subscribes on a new connection and is ready again.
func TestSilentSubscriptionDeath(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.ProbeInterval = 100 * time.Millisecond
	e := newEnv(t, cfg, "c1")
	reconnects, accepted := e.reconnects(), e.proxy.Accepted()

	e.proxy.Freeze()
	// Probe timeout is 300ms; nothing but the probe can notice (no error arrives).
	waitFor(t, waitLimit, "not ready after the subscription went silent", func() bool { return !e.b.Ready() })
	waitFor(t, waitLimit, "ready again", e.b.Ready)
	if e.reconnects() <= reconnects {
		t.Errorf("redis_reconnects_total did not grow")
	}
	if e.proxy.Accepted() <= accepted {
		t.Errorf("no new connection through the proxy")
	}
	p := payload(t, "after", 1000)
	mustPublish(t, e.publisher(), "c1", p, true)
	waitFor(t, waitLimit, "an event after recovery", func() bool { return e.hub.got("c1", p.Version()) })
}

// TestRedisLostData restarts Redis empty, or with an older or newer latest than the
// gateway knows, and checks the documented policy: the newest version wins, the gateway
// writes back (and re-publishes) what Redis lost, and never overwrites something newer.
func TestRedisLostData(t *testing.T) {
	t.Parallel()
	known, older, newer := 2000, 1000, 3000
	cases := []struct {
		name       string
		storedLM   int   // what Redis holds when the gateway comes back; 0: nothing
		wantStored int64 // lastModified stored after the resync
		wantSeed   bool  // the hub is seeded with the stored event (else with the known one)
	}{
		{"empty", 0, int64(known), false},
		{"older", older, int64(known), false},
		{"newer", newer, int64(newer), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testConfig(), "c1")
			ctx := context.Background()
			mine := payload(t, "known", int64(known))
			mustPublish(t, e.publisher(), "c1", mine, true)
			waitFor(t, waitLimit, "the event before the loss", func() bool { return e.hub.has("c1", mine.Version(), false) })
			// Published stored, so the gateway stores nothing of its own: no retry of that
			// can land in the restarted Redis and pre-empt the resync under test.

			e.proxy.Refuse(true)
			e.srv.Kill()
			e.srv.Restart()
			waitFor(t, waitLimit, "not ready", func() bool { return !e.b.Ready() })
			var stored = payload(t, "stored", int64(c.storedLM))
			if c.storedLM != 0 {
				mustPublish(t, e.publisher(), "c1", stored, true)
			}
			watch := e.direct.Subscribe(ctx, "sse:c1")
			defer watch.Close()
			if _, err := watch.Receive(ctx); err != nil { // the subscribe confirmation
				t.Fatal(err)
			}

			e.proxy.Refuse(false)
			waitFor(t, waitLimit, "ready", e.b.Ready)
			want := payload(t, "known", int64(known)).Version()
			if c.wantStored != int64(known) {
				want = stored.Version()
			}
			waitFor(t, waitLimit, "the store to hold the newest version", func() bool { return e.stored("c1") == want })
			if got := e.hub.has("c1", stored.Version(), true); got != c.wantSeed {
				t.Errorf("hub seeded with the stored event: %v, want %v", got, c.wantSeed)
			}
			if !c.wantSeed && !e.hub.has("c1", mine.Version(), true) {
				t.Errorf("hub not seeded with the newer event the gateway knew")
			}
			if c.wantStored == int64(known) {
				// Written back and re-published (marked stored: the instances that missed it
				// get it and need not store it again).
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				m, err := watch.ReceiveMessage(rctx)
				if err != nil {
					t.Fatalf("the write-back was not re-published: %v", err)
				}
				if m.Payload != string(wire.MarkStored(mine.Raw)) {
					t.Errorf("re-published %q, want %q", m.Payload, wire.MarkStored(mine.Raw))
				}
			}
		})
	}
}

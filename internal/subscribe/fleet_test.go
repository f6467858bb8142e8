package subscribe

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
	"github.com/sse-gateway/sse-gateway/internal/store"
)

// member is one instance of a fleet sharing one Redis: its subscriber, hub and the commands
// its client ran.
type member struct {
	b    *Redis
	hub  *fakeHub
	cmds *cmdCounter
	stop context.CancelFunc // ends its Run (the instance goes away)
	done chan struct{}      // closed when Run returned
}

// startFleet starts n instances on srv, each with its own client, and waits until every one
// is ready. They stop when t ends, if not before.
func startFleet(t *testing.T, srv *redistest.Server, n int, cfg Config) []*member {
	t.Helper()
	var fleet []*member
	for i := range n {
		c := cfg
		c.InstanceID = fmt.Sprintf("fleet-%d", i)
		m := &member{hub: &fakeHub{}, cmds: &cmdCounter{}, done: make(chan struct{})}
		client := newClient(t, srv.Addr())
		client.AddHook(m.cmds)
		m.b = NewRedis(client, store.NewRedis(client, store.Config{}), m.hub, c, testLogger(t), prometheus.NewRegistry())
		ctx, cancel := context.WithCancel(context.Background())
		m.stop = cancel
		go func() {
			defer close(m.done)
			if err := m.b.Run(ctx); err != nil {
				t.Errorf("instance %d: Run returned %v, want nil", i, err)
			}
		}()
		t.Cleanup(func() {
			cancel()
			select {
			case <-m.done:
			case <-time.After(10 * time.Second):
				t.Errorf("instance %d: Run did not return within 10s of its context ending", i)
			}
		})
		fleet = append(fleet, m)
	}
	for i, m := range fleet {
		waitFor(t, waitLimit, fmt.Sprintf("instance %d ready", i), m.b.Ready)
	}
	return fleet
}

// writes is how many times m ran the set-if-newer script.
func (m *member) writes() int { return m.cmds.count("evalsha") + m.cmds.count("eval") }

// idle reports whether m dispatched everything it received and has nothing left to store.
func (m *member) idle() bool { return m.b.mailbox.len() == 0 && m.b.writer.len() == 0 }

// TestFleetWritesBackOncePerEvent: three instances receive every event. Events published
// through the store (API, CLI) are stored already and none of them writes them again;
// raw PUBLISHes are stored by about one instance each, not by all three (before, every
// instance stored every event it received: 3 writes per event). The figure logged is the
// one docs/PERFORMANCE.md quotes (go test -v -run TestFleetWritesBackOncePerEvent
// ./internal/subscribe).
func TestFleetWritesBackOncePerEvent(t *testing.T) {
	t.Parallel()
	const instances, events = 3, 100
	srv := redistest.Start(t)
	cfg := testConfig()
	// Long enough that the first writer's notice reaches the others before their own
	// delay is up, for all but a few events even on a loaded machine.
	cfg.WriteBackSpread = time.Second
	fleet := startFleet(t, srv, instances, cfg)
	direct := newClient(t, srv.Addr())
	st := store.NewRedis(direct, store.Config{})
	ctx := context.Background()

	settle := func(what string, ch func(i int) string, lm int64) {
		t.Helper()
		waitFor(t, waitLimit, what, func() bool {
			for _, m := range fleet {
				if !m.idle() {
					return false
				}
				for i := range events {
					if !m.hub.got(ch(i), payload(t, "e", lm).Version()) {
						return false
					}
				}
			}
			return true
		})
	}
	total := func() int {
		n := 0
		for _, m := range fleet {
			n += m.writes()
		}
		return n
	}

	api := func(i int) string { return fmt.Sprintf("api%d", i) }
	for i := range events {
		mustPublish(t, st, api(i), payload(t, "e", 1000), true)
	}
	settle("every instance has every stored event", api, 1000)
	if n := total(); n != 0 {
		t.Errorf("instances ran the store script %d times for %d events published stored; want 0", n, events)
	}

	before := total()
	raw := func(i int) string { return fmt.Sprintf("raw%d", i) }
	pipe := direct.Pipeline()
	for i := range events {
		pipe.Publish(ctx, "sse:"+raw(i), payload(t, "e", 2000).Raw)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	settle("every instance has every raw event, and stored what it had to", raw, 2000)
	for i := range events {
		if p, found, err := st.Get(ctx, raw(i)); err != nil || !found || p.LastModified != 2000 {
			t.Fatalf("raw event %d not stored: %v %v %v", i, p, found, err)
		}
	}
	n := total() - before
	t.Logf("store writes per raw event: %.2f fleet-wide, %.2f per instance (%d instances, %d events; every instance writing would be %d)",
		float64(n)/events, float64(n)/events/instances, instances, events, instances*events)
	// Every instance writing is 3 per event; one notice racing another instance's delay now
	// and then adds one. Half-way between is a failure.
	if n >= 2*events {
		t.Errorf("%d store writes for %d raw events on %d instances; want about one per event", n, events, instances)
	}
}

// TestFleetStoresWhenOthersAreGone: an instance whose own delay is long still stores a raw
// event when the others that received it went away before storing it: the event stays
// pending on every instance until it is stored or noticed stored.
func TestFleetStoresWhenOthersAreGone(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := testConfig()
	cfg.WriteBackSpread = time.Second
	fleet := startFleet(t, srv, 3, cfg)
	direct := newClient(t, srv.Addr())
	p := payload(t, "e", 3000)
	if err := direct.Publish(context.Background(), "sse:c", p.Raw).Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range fleet {
		waitFor(t, waitLimit, "the event at every instance", func() bool { return m.hub.got("c", p.Version()) })
	}
	// Two of three go away, most likely before their delay is up (whoever's is shorter).
	for _, m := range fleet[:2] {
		m.stop()
		<-m.done
	}
	waitFor(t, waitLimit, "the event stored", func() bool {
		got, found, err := store.NewRedis(direct, store.Config{}).Get(context.Background(), "c")
		return err == nil && found && got.Version() == p.Version()
	})
}

// TestNoticeCatchesUpAMissedEvent: an instance that did not receive a raw event (its
// subscription was down when it was published) and resynced before another instance wrote
// it back (each waits up to WriteBackSpread) learns of it from the writer's stored notice and
// reads it from the store. The event is stored here without reaching this instance's
// subscription, as the writer does it (Save with SaveNotify); before the notice was acted on,
// the instance's streams never got it.
func TestNoticeCatchesUpAMissedEvent(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	fleet := startFleet(t, srv, 1, testConfig())
	m := fleet[0]
	m.hub.mu.Lock()
	m.hub.channels = []string{"c", "other"}
	m.hub.mu.Unlock()

	direct := newClient(t, srv.Addr())
	st := store.NewRedis(direct, store.Config{})
	missed := payload(t, "missed", 4000)
	if _, errs := st.Save(context.Background(), []store.Entry{{Channel: "c", Payload: missed}}, store.SaveNotify); errs != nil {
		t.Fatalf("Save: %v", errs)
	}
	waitFor(t, waitLimit, "the missed event read from the store and handed to the hub", func() bool {
		return m.hub.has("c", missed.Version(), true)
	})

	// An event the instance received itself costs no lookup when its notice arrives.
	seen := payload(t, "seen", 5000)
	if err := direct.Publish(context.Background(), "sse:other", seen.Raw).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLimit, "the raw event delivered, stored and noticed", func() bool {
		p, found, err := st.Get(context.Background(), "other")
		return m.hub.has("other", seen.Version(), false) && m.idle() && err == nil && found && p.Version() == seen.Version()
	})
	if m.hub.has("other", seen.Version(), true) {
		t.Errorf("the instance looked up an event it had received itself after its stored notice")
	}
}

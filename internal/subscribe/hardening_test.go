package subscribe

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/redistest"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// TestWriteBackOffDeliveryPath blocks every store write of the gateway: events must still
// reach the hub, on more channels than there are dispatchers (each used to wait for its
// batch's store pipeline before taking the next).
func TestWriteBackOffDeliveryPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig())
	gate := make(chan struct{})
	var blocked atomic.Int32
	e.cmds.setBefore(func(name string) {
		if name == "evalsha" || name == "eval" {
			blocked.Add(1)
			<-gate
		}
	})
	defer close(gate)
	pub := e.direct
	const channels = 3 * dispatchers
	for i := range channels {
		ch := fmt.Sprintf("c%d", i)
		p := payload(t, "e", int64(1000+i))
		if err := pub.Publish(context.Background(), "sse:"+ch, p.Raw).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, ch+" at the hub while every store write hangs", func() bool { return e.hub.got(ch, p.Version()) })
	}
	if blocked.Load() == 0 {
		t.Fatal("no store write was attempted: the test proves nothing")
	}
	if n := testutil.ToFloat64(e.b.metrics.writeBackPending); n == 0 {
		t.Errorf("writeback_pending_channels = 0 while every write hangs")
	}
}

// failingPipelines fails the first n pipelines made through it with errInjected.
type failingPipelines struct{ n atomic.Int32 }

var errInjected = errors.New("injected: redis unreachable")

func (f *failingPipelines) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failingPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (f *failingPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.n.Add(-1) >= 0 {
			for _, c := range cmds {
				c.SetErr(errInjected)
			}
			return errInjected
		}
		return next(ctx, cmds)
	}
}

// seedEnv is a subscriber whose seeder alone runs, on a private Redis, with a hook on its
// client; channels are what its hub says has subscribers.
func seedEnv(t *testing.T, hook redis.Hook, channels ...string) (*Redis, *fakeHub, *store.Redis) {
	t.Helper()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	client.AddHook(hook)
	h := &fakeHub{channels: channels}
	b := NewRedis(client, store.NewRedis(client, store.Config{}), h, testConfig(), testLogger(t), nil)
	b.backoffMin = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.seeder.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b, h, store.NewRedis(newClient(t, srv.Addr()), store.Config{})
}

// TestSeedRetriesFailedLookups: a seed lookup that fails (Redis unreachable) is retried until
// it succeeds, while the channel has subscribers; a channel that lost them is given up.
func TestSeedRetriesFailedLookups(t *testing.T) {
	t.Parallel()
	fail := &failingPipelines{}
	fail.n.Store(3)
	b, h, pub := seedEnv(t, fail, "c")
	p := payload(t, "e", 42)
	mustPublish(t, pub, "c", p, true)
	b.Seed([]string{"c", "gone"})
	waitFor(t, 10*time.Second, "the hub seeded with c's stored event after three failed lookups", func() bool {
		return e2got(h, "c", p)
	})
	if fail.n.Load() >= 0 {
		t.Fatalf("the lookups did not fail first (%d failures left)", fail.n.Load())
	}
	waitFor(t, 5*time.Second, "the seeder to give up the channel without subscribers", func() bool { return b.seeder.len() == 0 })
	if len(h.messages("gone", true)) != 0 {
		t.Errorf("a channel without subscribers was seeded")
	}
}

func e2got(h *fakeHub, channel string, p wire.Payload) bool {
	for _, m := range h.messages(channel, true) {
		if m.Version == p.Version() {
			return true
		}
	}
	return false
}

// afterSeed is a real hub that runs a test's interleaving right after handing a seed
// lookup's first answer to the hub, on the seeder's goroutine: between the answer and the
// lookup's end.
type afterSeed struct {
	*hub.Hub
	once sync.Once
	then func()
}

func (h *afterSeed) Seed(channel string, m *hub.Message) int {
	n := h.Hub.Seed(channel, m)
	h.once.Do(h.then)
	return n
}

// offers records what a hub offers one subscription.
type offers struct {
	mu  sync.Mutex
	got []hub.Version
}

func (o *offers) Offer(_ int, m *hub.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, m.Version)
}

func (o *offers) has(v hub.Version) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Contains(o.got, v)
}

// TestSeedReachesAStreamThatSubscribedAfterTheAnswer reproduces, on a real hub, the stream
// TestChurn found without its first event: stream a subscribes to c and asks for its stored
// event; the answer reaches a; a leaves (the hub drops c with it); stream b subscribes to c
// afresh and asks, before the lookup has ended. b must get c's stored event.
func TestSeedReachesAStreamThatSubscribedAfterTheAnswer(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	h := &afterSeed{Hub: hub.New(hub.Config{}, nil)}
	t.Cleanup(h.Close)
	b := NewRedis(client, store.NewRedis(client, store.Config{}), h, testConfig(), testLogger(t), nil)
	p := payload(t, "e", 42)
	mustPublish(t, store.NewRedis(newClient(t, srv.Addr()), store.Config{}), "c", p, true)

	var first, second offers
	subA, unseeded := h.Subscribe(&first, []string{"c"}, hub.Version{})
	if len(unseeded) != 1 {
		t.Fatalf("a new channel is not unseeded: %v", unseeded)
	}
	h.then = func() {
		h.Unsubscribe(subA)
		subB, unseeded := h.Subscribe(&second, []string{"c"}, hub.Version{})
		t.Cleanup(func() { h.Unsubscribe(subB) })
		if len(unseeded) != 1 {
			t.Errorf("b found c seeded: the hub kept the channel a left")
		}
		b.Seed([]string{"c"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.seeder.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	b.Seed([]string{"c"})

	waitFor(t, 10*time.Second, "b offered c's stored event", func() bool { return second.has(p.Version()) })
	if !first.has(p.Version()) {
		t.Errorf("a was not offered c's stored event")
	}
}

// TestSeedPipelinesChannels: a stream's channels are looked up in one pipeline.
func TestSeedPipelinesChannels(t *testing.T) {
	t.Parallel()
	cmds := &cmdCounter{}
	var chans []string
	for i := range 10 {
		chans = append(chans, fmt.Sprintf("c%d", i))
	}
	b, h, pub := seedEnv(t, cmds, chans...)
	want := map[string]wire.Payload{}
	for i, ch := range chans[:5] {
		p := payload(t, "e", int64(100+i))
		mustPublish(t, pub, ch, p, true)
		want[ch] = p
	}
	b.Seed(chans)
	waitFor(t, 10*time.Second, "every channel seeded", func() bool {
		for _, ch := range chans {
			if p, ok := want[ch]; ok && !e2got(h, ch, p) {
				return false
			}
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.calls) == len(chans)
	})
	if n, g := cmds.count("pipeline:get"), cmds.count("get"); n != 1 || g != len(chans) {
		t.Fatalf("%d channels looked up in %d pipelines of %d GETs, want 1 pipeline", len(chans), n, g)
	}
}

// TestSeedPrefersWhatArrived: an event this instance received, newer than what the store
// answers (its write not done yet), is what a new stream is seeded with.
func TestSeedPrefersWhatArrived(t *testing.T) {
	t.Parallel()
	b, h, pub := seedEnv(t, &cmdCounter{}, "c")
	old, arrived := payload(t, "old", 1), payload(t, "new", 2)
	mustPublish(t, pub, "c", old, true)
	b.lastSeen.update("c", arrived)
	b.Seed([]string{"c"})
	waitFor(t, 10*time.Second, "c seeded", func() bool { return len(h.messages("c", true)) > 0 })
	if got := h.messages("c", true)[0].Version; got != arrived.Version() {
		t.Fatalf("seeded with %v, want the newer event that arrived, %v", got, arrived.Version())
	}
}

// TestConflictingStampNotDelivered: a raw PUBLISH with the lastModified of the channel's
// newest event and another ETag is not handed on, and is counted as malformed "conflict";
// the next event with a later stamp is.
func TestConflictingStampNotDelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "c")
	first, twin, next := payload(t, "a", 1000), payload(t, "b", 1000), payload(t, "c", 1001)
	conflicts := func() float64 { return testutil.ToFloat64(e.b.metrics.rejected[MalformedConflict]) }
	publish := func(p wire.Payload) {
		if err := e.direct.Publish(context.Background(), "sse:c", p.Raw).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// One at a time: the mailbox keeps only a channel's newest pending event, so a later one
	// published at once could replace the twin before it is looked at.
	publish(first)
	waitFor(t, 5*time.Second, "the first event at the hub", func() bool { return e.hub.got("c", first.Version()) })
	publish(twin)
	waitFor(t, 5*time.Second, "the twin counted as a conflict", func() bool { return conflicts() == 1 })
	publish(next)
	waitFor(t, 5*time.Second, "the later event at the hub", func() bool { return e.hub.got("c", next.Version()) })
	if e.hub.has("c", twin.Version(), false) {
		t.Fatalf("the event with another config's lastModified was handed to the hub")
	}
	if n := conflicts(); n != 1 {
		t.Fatalf("malformed{reason=conflict} = %v, want 1", n)
	}
}

// TestFutureStampRejected: a lastModified far ahead of the clock (here in microseconds) is
// rejected as malformed "future" and never reaches the hub or the store.
func TestFutureStampRejected(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxClockSkew = 5 * time.Minute
	e := newEnv(t, cfg, "c")
	micro := payload(t, "micro", time.Now().UnixMicro())
	ok := payload(t, "ms", time.Now().UnixMilli())
	for _, p := range []wire.Payload{micro, ok} {
		if err := e.direct.Publish(context.Background(), "sse:c", p.Raw).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the event in milliseconds at the hub", func() bool { return e.hub.got("c", ok.Version()) })
	if e.hub.has("c", micro.Version(), false) {
		t.Fatal("an event stamped in microseconds reached the hub")
	}
	if n := testutil.ToFloat64(e.b.metrics.rejected[MalformedFuture]); n != 1 {
		t.Fatalf("malformed{reason=future} = %v, want 1", n)
	}
	waitFor(t, 5*time.Second, "the event in milliseconds stored", func() bool { return e.stored("c") == ok.Version() })
}

// TestLastSeenBounded: events of channels nobody here subscribes to are forgotten once
// stored; lastSeen does not grow with every channel ever published.
func TestLastSeenBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "kept")
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			p := payload(t, "e", 7)
			_ = e.direct.Publish(context.Background(), fmt.Sprintf("sse:x%d", i), p.Raw).Err()
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "every event received, dispatched and stored", func() bool {
		return testutil.ToFloat64(e.b.metrics.received) == 200 && e.b.mailbox.len() == 0 && e.b.writer.len() == 0
	})
	e.b.lastSeen.prune(e.hub.Channels(), e.b.writer.pending, time.Now())
	if n := e.b.lastSeen.len(); n != 0 {
		t.Fatalf("lastSeen holds %d channels nobody subscribes to after they were stored", n)
	}
}

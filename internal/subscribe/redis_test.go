package subscribe

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/redistest"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

func fnv32a(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

func TestPublishDeliversExactFrame(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "c1")
	p := payload(t, `"abc"`, 1700000000000)
	mustPublish(t, e.publisher(), "c1", p, true)
	waitFor(t, waitLimit, "the hub to get the event", func() bool { return e.hub.has("c1", p.Version(), false) })

	m := e.hub.messages("c1", false)[0]
	id := fmt.Sprintf("1700000000000-%08x", fnv32a(`"abc"`))
	want := "id: " + id + "\nevent: message\ndata: {\"id\":\"" + id + "\",\"timestamp\":" +
		strconv.FormatInt(m.Received.UnixMilli(), 10) + ",\"channel\":\"c1\",\"data\":" +
		`"{\"etag\":\"\\\"abc\\\"\",\"lastModified\":1700000000000,\"type\":\"refetchConfig\"}"` +
		",\"name\":\"change\"}\n\n"
	if string(m.Frame) != want {
		t.Errorf("frame:\n%q\nwant\n%q", m.Frame, want)
	}
	if m.ID != id || m.Channel != "c1" || m.Version != p.Version() {
		t.Errorf("message id %q channel %q version %v, want %q c1 %v", m.ID, m.Channel, m.Version, id, p.Version())
	}
	if string(m.Chunk) != string(wire.Chunk(m.Frame)) {
		t.Errorf("chunk does not wrap the frame")
	}
	if got := e.stored("c1"); got != p.Version() {
		t.Errorf("stored latest %v, want %v", got, p.Version())
	}
	if got := testutil.ToFloat64(e.b.metrics.received); got != 1 {
		t.Errorf("events_received_total = %v, want 1", got)
	}
}

func TestRawPublishIsForwardedAndStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "c2")
	// As a config service would: redis-cli PUBLISH, extra fields kept verbatim.
	raw := `{ "etag": "\"x\"", "lastModified": 5, "sentAtNs": 123 }`
	if err := e.direct.Publish(context.Background(), "sse:c2", raw).Err(); err != nil {
		t.Fatal(err)
	}
	v := hub.Version{Time: 5, Tie: fnv32a(`"x"`)}
	waitFor(t, waitLimit, "the hub to get the event", func() bool { return e.hub.has("c2", v, false) })
	if f := string(e.hub.messages("c2", false)[0].Frame); !strings.Contains(f, `\"sentAtNs\":123`) {
		t.Errorf("extra field lost: %q", f)
	}
	// Whoever sees an event first stores it.
	waitFor(t, waitLimit, "the gateway to store the event", func() bool { return e.stored("c2") == v })
}

func TestMalformedEventsCountedNotForwarded(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxPayload = 256
	e := newEnv(t, cfg, "c1")
	valid := `{"etag":"x","lastModified":1}`
	cases := []struct {
		name, channel, payload string
		reason                 MalformedReason
	}{
		{"not JSON", "c1", "hello", MalformedNotObject},
		{"array", "c1", `[1,2]`, MalformedNotObject},
		{"truncated", "c1", `{"etag":"x"`, MalformedNotObject},
		{"invalid UTF-8", "c1", "{\"etag\":\"\xff\",\"lastModified\":1}", MalformedNotObject},
		{"empty", "c1", "", MalformedNotObject},
		{"no etag", "c1", `{"lastModified":1}`, MalformedETag},
		{"empty etag", "c1", `{"etag":"","lastModified":1}`, MalformedETag},
		{"numeric etag", "c1", `{"etag":1,"lastModified":1}`, MalformedETag},
		{"no lastModified", "c1", `{"etag":"x"}`, MalformedLastModified},
		{"string lastModified", "c1", `{"etag":"x","lastModified":"1"}`, MalformedLastModified},
		{"fractional lastModified", "c1", `{"etag":"x","lastModified":1.5}`, MalformedLastModified},
		{"negative lastModified", "c1", `{"etag":"x","lastModified":-1}`, MalformedLastModified},
		{"numeric type", "c1", `{"etag":"x","lastModified":1,"type":3}`, MalformedType},
		{"too large", "c1", `{"etag":"x","lastModified":1,"pad":"` + strings.Repeat("p", 300) + `"}`, MalformedTooLarge},
		{"space in channel", "bad channel", valid, MalformedChannel},
		{"channel starting with a dash", "-c", valid, MalformedChannel},
		{"newline in channel", "c\n1", valid, MalformedChannel},
		{"overlong channel", strings.Repeat("c", 201), valid, MalformedChannel},
		{"empty channel", "", valid, MalformedChannel},
	}
	want := map[MalformedReason]float64{}
	for _, c := range cases {
		if err := e.direct.Publish(context.Background(), "sse:"+c.channel, c.payload).Err(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want[c.reason]++
	}
	// The read loop handles messages in order: once the sentinel is through, so is the rest.
	sentinel := payload(t, "sentinel", 2)
	if err := e.direct.Publish(context.Background(), "sse:c1", sentinel.Raw).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLimit, "the sentinel event", func() bool { return e.hub.has("c1", sentinel.Version(), false) })

	for reason := range numMalformedReasons {
		if got := testutil.ToFloat64(e.b.metrics.malformed.WithLabelValues(reason.String())); got != want[reason] {
			t.Errorf("events_malformed_total{reason=%q} = %v, want %v", reason, got, want[reason])
		}
	}
	if got, want := testutil.ToFloat64(e.b.metrics.received), float64(len(cases)+1); got != want {
		t.Errorf("events_received_total = %v, want %v", got, want)
	}
	if n := len(e.hub.messages("c1", false)); n != 1 {
		t.Errorf("hub got %d events on c1, want only the sentinel", n)
	}
	if !e.b.Ready() {
		t.Errorf("not ready after malformed events")
	}
}

func TestReservedChannelsNeverForwarded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "c1")
	ctx := context.Background()
	for ch, msg := range map[string]string{
		"sse:_probe.other": strconv.FormatInt(time.Now().UnixNano(), 10), // another instance's probe
		"sse:_probe.test":  "not a number",                               // a forged probe of ours
		"sse:_x":           `{"etag":"x","lastModified":1}`,
	} {
		if err := e.direct.Publish(ctx, ch, msg).Err(); err != nil {
			t.Fatal(err)
		}
	}
	sentinel := payload(t, "sentinel", 2)
	if err := e.direct.Publish(ctx, "sse:c1", sentinel.Raw).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLimit, "the sentinel event", func() bool { return e.hub.has("c1", sentinel.Version(), false) })
	if n := e.hub.reservedCalls(); n != 0 {
		t.Errorf("hub got %d events on reserved channels", n)
	}
	if got := testutil.ToFloat64(e.b.metrics.received); got != 1 {
		t.Errorf("events_received_total = %v, want 1 (probes and reserved channels excluded)", got)
	}
	if _, err := e.publisher().Publish(ctx, "_probe.test", sentinel); err != store.ErrChannel {
		t.Errorf("Publish on a reserved channel: err %v, want ErrChannel", err)
	}
}

// TestProbeRecognition checks that only this instance's probe counts as a sign of life.
func TestProbeRecognition(t *testing.T) {
	t.Parallel()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialed
	defer client.Close()
	reg := prometheus.NewRegistry()
	b := NewRedis(client, store.NewRedis(client, store.Config{}), &fakeHub{}, Config{InstanceID: "me"}, nil, reg)
	now := strconv.FormatInt(time.Now().UnixNano(), 10)

	b.handle(&redis.Message{Channel: "sse:_probe.other", Payload: now})
	b.handle(&redis.Message{Channel: "sse:_probe.me", Payload: "garbage"})
	if histogramCount(t, reg) != 0 {
		t.Fatalf("a foreign or unreadable probe was timed as ours")
	}
	b.handle(&redis.Message{Channel: "sse:_probe.me", Payload: now})
	if histogramCount(t, reg) != 1 {
		t.Fatalf("own probe not timed")
	}
	if b.mailbox.len() != 0 || testutil.ToFloat64(b.metrics.received) != 0 {
		t.Fatalf("a probe was taken for an event")
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sse_gateway_redis_probe_rtt_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("probe histogram not registered")
	return 0
}

func TestStoreNeverGoesBackwards(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	direct := newClient(t, srv.Addr())
	client := newClient(t, srv.Addr())
	st := store.NewRedis(client, store.Config{})
	lo, hi := `"a"`, `"b"`
	if wire.ETagHash(lo) > wire.ETagHash(hi) {
		lo, hi = hi, lo
	}
	steps := []struct {
		name  string
		lm    int64
		etag  string
		store bool
	}{
		{"first", 2000, lo, true},
		{"redelivery", 2000, lo, false},
		{"replay of an older lastModified", 1999, hi, false},
		{"same lastModified, another etag", 2000, hi, false},
		{"newer lastModified, lower etag hash", 2001, lo, true},
		{"largest 10-digit lastModified", 9999999999, lo, true},
		{"smallest 11-digit lastModified", 10000000000, lo, true},
		{"back below", 9999999999, hi, false},
		{"huge", 1 << 62, lo, true},
		{"max int64", math.MaxInt64, lo, true},
		{"after max", 1 << 62, hi, false},
	}
	var newest hub.Version
	for _, s := range steps {
		p := payload(t, s.etag, s.lm)
		ok, err := st.Publish(context.Background(), "c", p)
		var want error
		if newest.Time == p.LastModified && newest.Tie != p.Version().Tie {
			want = store.ErrConflict
		}
		if err != want || ok != s.store {
			t.Fatalf("%s: Publish = %v, %v; want %v, %v", s.name, ok, err, s.store, want)
		}
		if s.store {
			newest = p.Version()
		}
		got, found, err := st.Get(context.Background(), "c")
		if err != nil || !found || got.Version() != newest {
			t.Fatalf("%s: stored %v (found %v, %v); want version %v", s.name, got.Version(), found, err, newest)
		}
	}

	// Something unreadable at the key (not written by the gateway) is replaced.
	key := store.DefaultKeyPrefix + "latest:c"
	if err := direct.Set(context.Background(), key, "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, found, err := st.Get(context.Background(), "c"); found || !errors.Is(err, store.ErrUnreadable) {
		t.Fatalf("Get of garbage: found %v, %v; want ErrUnreadable", found, err)
	}
	mustPublish(t, st, "c", payload(t, lo, 1), true)
	ttl, err := direct.PTTL(context.Background(), key).Result()
	if err != nil || ttl <= store.DefaultLatestTTL-time.Minute || ttl > store.DefaultLatestTTL {
		t.Fatalf("TTL of the stored latest = %v, %v; want about %v", ttl, err, store.DefaultLatestTTL)
	}
	if _, found, err := st.Get(context.Background(), "none"); found || err != nil {
		t.Fatalf("Get of a channel never published: found %v, %v; want nothing", found, err)
	}
	if _, err := st.Publish(context.Background(), "c", wire.Payload{}); err != store.ErrPayload {
		t.Fatalf("Publish of an empty payload: %v, want ErrPayload", err)
	}
}

// TestReplayNotStoredOverNewer replays an older event through the subscription: the
// gateway hands it on (the hub drops it) but never stores it over the newer one (it knows the
// newer one stored, or the set-if-newer script refuses).
func TestReplayNotStoredOverNewer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "c")
	newer, older := payload(t, "n", 2000), payload(t, "o", 1000)
	stores := func() int { return e.cmds.count("evalsha") + e.cmds.count("eval") }
	// Raw, as a config service publishes: the gateway is the one to store it.
	if err := e.direct.Publish(context.Background(), "sse:c", newer.Raw).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLimit, "the newer event at the hub", func() bool { return e.hub.got("c", newer.Version()) })
	waitFor(t, waitLimit, "the gateway to store it", func() bool { return stores() >= 1 && e.stored("c") == newer.Version() })
	// Sent alone, so the mailbox cannot coalesce it away.
	if err := e.direct.Publish(context.Background(), "sse:c", older.Raw).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLimit, "the replay dispatched, nothing left to store", func() bool {
		return e.hub.has("c", older.Version(), false) && e.b.mailbox.len() == 0 && e.b.writer.len() == 0
	})
	if got := e.stored("c"); got != newer.Version() {
		t.Fatalf("stored %v after a replay, want %v", got, newer.Version())
	}
}

// TestSeedIsSharedPerChannel: a connect storm onto one channel the hub has not seen costs
// one lookup, whose answer seeds the hub once.
func TestSeedIsSharedPerChannel(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := payload(t, "e", 42)
	mustPublish(t, store.NewRedis(newClient(t, srv.Addr()), store.Config{}), "c", p, true)

	client := newClient(t, srv.Addr())
	gate, entered := make(chan struct{}), make(chan struct{})
	var first sync.Once
	cmds := &cmdCounter{before: func(name string) {
		if name == "get" {
			first.Do(func() { close(entered); <-gate })
		}
	}}
	client.AddHook(cmds)
	h := &fakeHub{channels: []string{"c"}}
	b := NewRedis(client, store.NewRedis(client, store.Config{}), h, testConfig(), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.seeder.run(ctx) }()
	defer func() { cancel(); <-done }()

	b.Seed([]string{"c"})
	<-entered // the lookup is under way, held at its GET
	const callers = 50
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() { b.Seed([]string{"c"}) })
	}
	wg.Wait()
	close(gate)
	waitFor(t, 5*time.Second, "the hub to be seeded", func() bool { return len(h.messages("c", true)) > 0 })
	if n := cmds.count("get"); n != 1 {
		t.Errorf("%d Seed calls during one lookup made %d GETs, want 1", callers+1, n)
	}
	seeds := h.messages("c", true)
	if len(seeds) != 1 || seeds[0] == nil || seeds[0].Version != p.Version() {
		t.Fatalf("hub seeded with %v, want one seed of version %v", seeds, p.Version())
	}
	if want := wire.Encode("c", p, seeds[0].Received); string(seeds[0].Frame) != string(want) {
		t.Errorf("seed frame %q, want %q", seeds[0].Frame, want)
	}
}

// TestSlowHubNeverBlocksReadLoop stalls the hub: the read loop keeps reading (the probe
// keeps coming back, so the instance stays ready), memory stays one pending event per
// channel, and once the hub moves again it gets every channel's newest event, in order.
func TestSlowHubNeverBlocksReadLoop(t *testing.T) {
	t.Parallel()
	const channels, perChannel = 20, 100
	e := newEnv(t, testConfig())
	release := e.hub.block()
	defer release()

	pipe := e.direct.Pipeline()
	for i := 1; i <= perChannel; i++ {
		for c := range channels {
			pipe.Publish(context.Background(), fmt.Sprintf("sse:ch%d", c), payload(t, fmt.Sprintf("e%d", i), int64(1000+i)).Raw)
		}
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLimit, "the read loop to take every event", func() bool {
		return testutil.ToFloat64(e.b.metrics.received) == channels*perChannel
	})
	if n := e.b.mailbox.len(); n > channels {
		t.Errorf("mailbox holds %d channels, want at most %d", n, channels)
	}
	probes := histogramCount(t, e.reg)
	waitFor(t, waitLimit, "probes to keep coming back while the hub is stalled", func() bool {
		return histogramCount(t, e.reg) >= probes+4
	})
	if !e.b.Ready() {
		t.Errorf("not ready while the hub is stalled")
	}

	release()
	newest := payload(t, fmt.Sprintf("e%d", perChannel), 1000+perChannel).Version()
	for c := range channels {
		ch := fmt.Sprintf("ch%d", c)
		waitFor(t, waitLimit, "the newest event of "+ch, func() bool { return e.hub.newest(ch) == newest })
		var prev hub.Version
		for _, m := range e.hub.messages(ch, false) {
			if !prev.Less(m.Version) {
				t.Errorf("%s: hub got %v after %v", ch, m.Version, prev)
			}
			prev = m.Version
		}
		waitFor(t, waitLimit, "the newest event of "+ch+" stored", func() bool { return e.stored(ch) == newest })
	}
	// Every event received either reached the hub or was replaced in the mailbox by a newer
	// one of its channel, and counted so.
	handed := 0
	for c := range channels {
		handed += len(e.hub.messages(fmt.Sprintf("ch%d", c), false))
	}
	if superseded := int(testutil.ToFloat64(e.b.metrics.superseded)); superseded == 0 || handed+superseded != channels*perChannel {
		t.Errorf("%d events reached the hub and %d were counted superseded, of %d received", handed, superseded, channels*perChannel)
	}
}

func TestTwoInstancesOneRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig(), "c")
	cfg := testConfig()
	cfg.InstanceID = "other"
	h2, reg2 := &fakeHub{channels: []string{"c"}}, prometheus.NewRegistry()
	c2 := newClient(t, e.srv.Addr())
	b2 := NewRedis(c2, store.NewRedis(c2, store.Config{}), h2, cfg, testLogger(t), reg2)
	e.run(b2)
	waitFor(t, waitLimit, "the second instance to become ready", b2.Ready)

	p := payload(t, "x", 7)
	mustPublish(t, e.publisher(), "c", p, true)
	waitFor(t, waitLimit, "both hubs to get the event", func() bool {
		return e.hub.has("c", p.Version(), false) && h2.has("c", p.Version(), false)
	})
	p1, p2 := histogramCount(t, e.reg), histogramCount(t, reg2)
	waitFor(t, waitLimit, "both instances to see their own probes", func() bool {
		return histogramCount(t, e.reg) >= p1+2 && histogramCount(t, reg2) >= p2+2
	})
	if e.hub.reservedCalls()+h2.reservedCalls() != 0 {
		t.Errorf("a probe reached a hub")
	}
	for i, b := range []*Redis{e.b, b2} {
		if got := testutil.ToFloat64(b.metrics.received); got != 1 {
			t.Errorf("instance %d: events_received_total = %v, want 1", i, got)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialed
	defer client.Close()
	NewRedis(client, store.NewRedis(client, store.Config{}), &fakeHub{}, Config{}, nil, reg)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{
		"sse_gateway_events_received_total", "sse_gateway_events_malformed_total",
		"sse_gateway_redis_connected", "sse_gateway_redis_reconnects_total", "sse_gateway_redis_probe_rtt_seconds",
	} {
		if !names[want] {
			t.Errorf("metric %s not registered", want)
		}
	}
}

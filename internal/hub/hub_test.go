package hub

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestVersionLess(t *testing.T) {
	cases := []struct {
		a, b Version
		less bool
	}{
		{Version{1, 0}, Version{2, 0}, true},
		{Version{2, 0}, Version{1, 0}, false},
		{Version{1, 1}, Version{1, 2}, true},
		{Version{1, 2}, Version{1, 1}, false},
		{Version{1, 5}, Version{1, 5}, false},
		{Version{1, 0xffffffff}, Version{2, 0}, true},
		{Version{}, Version{0, 1}, true},
	}
	for _, c := range cases {
		if got := c.a.Less(c.b); got != c.less {
			t.Errorf("%v.Less(%v) = %v", c.a, c.b, got)
		}
	}
	if !(Version{}).IsZero() || (Version{0, 1}).IsZero() {
		t.Error("IsZero")
	}
}

func TestFanOutToChannelSubscribersOnly(t *testing.T) {
	h := newHub(t, Config{})
	var onA, onB [3]recordSink
	var both recordSink
	for i := range onA {
		h.Subscribe(&onA[i], []string{"a"}, Version{})
		h.Subscribe(&onB[i], []string{"b"}, Version{})
	}
	h.Subscribe(&both, []string{"b", "a"}, Version{})

	m := msg("a", 10, 1)
	if n := h.Publish(m); n != 4 {
		t.Fatalf("Publish reported %d subscribers, want 4", n)
	}
	for i := range onA {
		if got := onA[i].got(); len(got) != 1 || got[0].m != m || got[0].idx != 0 {
			t.Fatalf("sink a%d got %+v", i, got)
		}
		if got := onB[i].got(); len(got) != 0 {
			t.Fatalf("sink on b got %+v", got)
		}
	}
	// The two-channel sink is told the index of the channel within its own list.
	if got := both.got(); len(got) != 1 || got[0].m != m || got[0].idx != 1 {
		t.Fatalf("two-channel sink got %+v", got)
	}
	if h.Publish(msg("nobody", 1, 1)) != 0 || h.Latest("nobody") != nil {
		t.Fatal("a channel without subscribers must not keep messages")
	}
	if h.Latest("a") != m {
		t.Fatal("Latest(a) is not the published message")
	}
	chans := h.Channels()
	sort.Strings(chans)
	if !slices.Equal(chans, []string{"a", "b"}) {
		t.Fatalf("Channels = %v", chans)
	}
}

func TestUnsubscribeSwapRemove(t *testing.T) {
	h := newHub(t, Config{})
	const n = 300
	sinks := make([]*recordSink, n)
	subs := make([]*Subscription, n)
	for i := range sinks {
		sinks[i] = &recordSink{}
		// Every third subscription also has other channels around "c", so that swap-remove
		// has to fix positions of subscriptions whose slot index in "c" is not 0.
		chans := []string{"c"}
		switch i % 3 {
		case 1:
			chans = []string{"x", "c"}
		case 2:
			chans = []string{"y", "z", "c"}
		}
		subs[i], _ = h.Subscribe(sinks[i], chans, Version{})
	}
	live := make(map[int]bool, n)
	for i := range n {
		live[i] = true
	}
	order := rand.Perm(n)
	// Remove the last, the first, then the rest in random order, publishing after each
	// batch: exactly the live subscriptions receive, each exactly once.
	order = append([]int{n - 1, 0}, slices.DeleteFunc(order, func(i int) bool { return i == 0 || i == n-1 })...)
	version := int64(0)
	for len(order) > 0 {
		batch := min(len(order), 1+rand.IntN(25))
		for _, i := range order[:batch] {
			h.Unsubscribe(subs[i])
			h.Unsubscribe(subs[i]) // idempotent
			delete(live, i)
		}
		order = order[batch:]
		version++
		m := msg("c", version, 0)
		if got := h.Publish(m); len(live) > 0 && got != len(live) {
			t.Fatalf("Publish reported %d, want %d live", got, len(live))
		}
		for i, s := range sinks {
			got := s.got()
			last := len(got) > 0 && got[len(got)-1].m == m
			if last != live[i] {
				t.Fatalf("after removing down to %d: sink %d live=%v but received=%v", len(live), i, live[i], last)
			}
			wantIdx := []int{0, 1, 2}[i%3] // "c" is the last of the subscription's channels
			if last && got[len(got)-1].idx != wantIdx {
				t.Fatalf("sink %d got the message on index %d, want %d", i, got[len(got)-1].idx, wantIdx)
			}
			if live[i] && len(got) != int(version) {
				t.Fatalf("sink %d got %d offers for %d publishes", i, len(got), version)
			}
		}
	}
	if chans := h.Channels(); len(chans) != 0 {
		t.Fatalf("channels left after every unsubscribe: %v", chans)
	}
	h.Unsubscribe(nil) // allowed
}

func TestUnsubscribeShrinksAndKeepsOrder(t *testing.T) {
	// Grow a channel far past 64 slots, remove most (this triggers the slot slice shrink),
	// then check the survivors still each get exactly one offer per publish.
	h := newHub(t, Config{})
	const n = 1000
	sinks := make([]countSink, n)
	subs := make([]*Subscription, n)
	for i := range sinks {
		subs[i], _ = h.Subscribe(&sinks[i], []string{"c"}, Version{})
	}
	for i := range n {
		if i%10 != 0 {
			h.Unsubscribe(subs[i])
		}
	}
	for v := int64(1); v <= 3; v++ {
		h.Publish(msg("c", v, 0))
	}
	for i := range sinks {
		want := 0
		if i%10 == 0 {
			want = 3
		}
		if sinks[i].n != want {
			t.Fatalf("sink %d got %d offers, want %d", i, sinks[i].n, want)
		}
	}
}

func TestDropStaleAndDuplicate(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := New(Config{}, reg)
	defer h.Close()
	var s recordSink
	h.Subscribe(&s, []string{"c"}, Version{})
	stale := func() float64 { return testutil.ToFloat64(h.metrics.drops[DropStale]) }
	dup := func() float64 { return testutil.ToFloat64(h.metrics.drops[DropDuplicate]) }

	v5 := msg("c", 5, 100)
	h.Publish(v5)
	for _, c := range []struct {
		m          *Message
		stale, dup float64
	}{
		{msg("c", 5, 100), 0, 1}, // redelivery of the same version (another Message value)
		{v5, 0, 2},               // the very same message again
		{msg("c", 4, 999), 1, 2}, // older lastModified, larger tie
		{msg("c", 5, 99), 2, 2},  // same millisecond, smaller ETag hash
		{msg("c", 0, 0), 3, 2},
	} {
		if n := h.Publish(c.m); n != 0 {
			t.Fatalf("dropped publish of %v reported %d", c.m.Version, n)
		}
		if stale() != c.stale || dup() != c.dup {
			t.Fatalf("after %v: stale=%v dup=%v, want %v %v", c.m.Version, stale(), dup(), c.stale, c.dup)
		}
	}
	if got := s.versions(0); len(got) != 1 || got[0] != v5.Version {
		t.Fatalf("sink was offered %v, want only %v", got, v5.Version)
	}
	if h.Latest("c") != v5 {
		t.Fatal("a dropped message replaced the channel's latest")
	}
	// A newer tie at the same millisecond is newer.
	v5b := msg("c", 5, 101)
	if h.Publish(v5b) != 1 || h.Latest("c") != v5b {
		t.Fatal("same-millisecond newer tie not published")
	}
	// The dropped counter is registered under the contract's name.
	if n, err := testutil.GatherAndCount(reg, "sse_gateway_events_dropped_total"); err != nil || n != 2 {
		t.Fatalf("events_dropped_total series = %d, %v", n, err)
	}
}

func TestRacingPublishersKeepPerChannelOrder(t *testing.T) {
	for _, cfg := range []Config{{}, {ParallelFanout: 2, Workers: 4}} {
		t.Run(fmt.Sprintf("parallel=%d", cfg.ParallelFanout), func(t *testing.T) {
			h := newHub(t, cfg)
			sinks := make([]*recordSink, 20)
			for i := range sinks {
				sinks[i] = &recordSink{}
				h.Subscribe(sinks[i], []string{"other", "c"}, Version{})
			}
			const per = 500
			var wg sync.WaitGroup
			// Two publishers race: one publishes even times, one odd times, each in
			// increasing order, with ties drawn at random.
			for p := range 2 {
				wg.Go(func() {
					for i := range per {
						h.Publish(msg("c", int64(2*i+p+1), rand.Uint32()))
					}
				})
			}
			wg.Wait()
			maxV := h.Latest("c").Version
			if maxV.Time != 2*per {
				t.Fatalf("latest = %v, want time %d", maxV, 2*per)
			}
			for i, s := range sinks {
				vs := s.versions(1)
				if len(vs) == 0 || vs[len(vs)-1] != maxV {
					t.Fatalf("sink %d did not end on the newest version: %v", i, vs[max(0, len(vs)-3):])
				}
				for j := 1; j < len(vs); j++ {
					if !vs[j-1].Less(vs[j]) {
						t.Fatalf("sink %d: version %v offered after %v", i, vs[j], vs[j-1])
					}
				}
				if len(s.versions(0)) != 0 {
					t.Fatalf("sink %d got offers on the other channel", i)
				}
			}
		})
	}
}

func TestSubscribeFloor(t *testing.T) {
	h := newHub(t, Config{})
	var keeper recordSink // keeps the channel (and its latest) alive
	h.Subscribe(&keeper, []string{"c"}, Version{})
	v5 := msg("c", 5, 5)
	h.Publish(v5)

	cases := []struct {
		name  string
		floor Version
		offer bool
	}{
		{"fresh", Version{}, true},
		{"older", Version{4, 0xffffffff}, true},
		{"same ms older tie", Version{5, 4}, true},
		{"equal", Version{5, 5}, false},
		{"newer tie", Version{5, 6}, false},
		{"newer", Version{9, 0}, false},
	}
	for _, c := range cases {
		var s recordSink
		sub, unseeded := h.Subscribe(&s, []string{"c"}, c.floor)
		if len(unseeded) != 0 {
			t.Fatalf("%s: channel with a message reported unseeded", c.name)
		}
		got := s.got()
		if c.offer != (len(got) == 1 && got[0].m == v5) || len(got) > 1 {
			t.Fatalf("%s: floor %v, offers %+v", c.name, c.floor, got)
		}
		h.Unsubscribe(sub)
	}

	// A client ahead of this instance (it saw v9 elsewhere) is not offered versions up to its
	// floor even when they are new to the hub, but is offered later ones.
	var ahead recordSink
	h.Subscribe(&ahead, []string{"c"}, Version{9, 0})
	h.Publish(msg("c", 7, 0))
	h.Publish(msg("c", 9, 0))
	if len(ahead.got()) != 0 {
		t.Fatalf("client ahead was offered %v", ahead.versions(0))
	}
	h.Publish(msg("c", 10, 0))
	if vs := ahead.versions(0); len(vs) != 1 || vs[0] != (Version{10, 0}) {
		t.Fatalf("client ahead got %v, want only 10", vs)
	}
}

func TestUnseededAndSeed(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := New(Config{}, reg)
	defer h.Close()
	var s1 recordSink
	sub1, unseeded := h.Subscribe(&s1, []string{"a", "b", "c"}, Version{})
	if !slices.Equal(unseeded, []int{0, 1, 2}) {
		t.Fatalf("fresh channels: unseeded = %v", unseeded)
	}
	// "a": the store had nothing. "b": the store had a message. "c": a message arrived
	// from the broker before the store answered.
	if n := h.Seed("a", nil); n != 0 {
		t.Fatalf("Seed(nil) = %d", n)
	}
	mb := msg("b", 3, 0)
	if n := h.Seed("b", mb); n != 1 {
		t.Fatalf("Seed(b) = %d", n)
	}
	mc := msg("c", 8, 0)
	h.Publish(mc)
	// The store's answer for "c" is older than what the broker delivered: dropped.
	h.Seed("c", msg("c", 7, 0))
	if got := s1.got(); len(got) != 2 || got[0].m != mb || got[0].idx != 1 || got[1].m != mc || got[1].idx != 2 {
		t.Fatalf("offers %+v", got)
	}
	if testutil.ToFloat64(h.metrics.drops[DropStale]) != 1 {
		t.Fatal("stale seed not counted")
	}

	var s2 recordSink
	sub2, unseeded := h.Subscribe(&s2, []string{"c", "b", "a", "d"}, Version{})
	if !slices.Equal(unseeded, []int{3}) {
		t.Fatalf("after seeding: unseeded = %v, want [3]", unseeded)
	}
	if got := s2.got(); len(got) != 2 || got[0].m != mc || got[0].idx != 0 || got[1].m != mb || got[1].idx != 1 {
		t.Fatalf("new subscriber offers %+v", got)
	}
	// Seed of a channel nobody subscribes to is a no-op.
	if h.Seed("nobody", nil) != 0 || h.Seed("nobody", msg("nobody", 1, 0)) != 0 || h.Latest("nobody") != nil {
		t.Fatal("seed of an unsubscribed channel kept state")
	}
	// While another subscription holds a channel, it stays seeded: a newcomer is offered
	// the newest at once and is not sent to the store again.
	h.Unsubscribe(sub1)
	for _, name := range []string{"a", "b", "c"} {
		var s recordSink
		sub, unseeded := h.Subscribe(&s, []string{name}, Version{})
		h.Unsubscribe(sub)
		if len(unseeded) != 0 {
			t.Errorf("%s, still held by another subscription: unseeded = %v, want none", name, unseeded)
		}
	}
	// Once every subscription is gone the channel is forgotten and is unseeded again.
	h.Unsubscribe(sub2)
	for _, name := range []string{"a", "b", "c", "d"} {
		var s recordSink
		sub, unseeded := h.Subscribe(&s, []string{name}, Version{})
		h.Unsubscribe(sub)
		if !slices.Equal(unseeded, []int{0}) || len(s.got()) != 0 {
			t.Errorf("%s after its last subscription left: unseeded = %v, offers %d; want [0] and none", name, unseeded, len(s.got()))
		}
	}
}

func TestChannelForgottenAfterLastUnsubscribe(t *testing.T) {
	h := newHub(t, Config{})
	var s recordSink
	sub, _ := h.Subscribe(&s, []string{"c"}, Version{})
	h.Seed("c", msg("c", 1, 0))
	h.Unsubscribe(sub)
	if h.Latest("c") != nil || len(h.Channels()) != 0 {
		t.Fatal("channel kept after its last subscription left")
	}
	sub, unseeded := h.Subscribe(&s, []string{"c"}, Version{})
	defer h.Unsubscribe(sub)
	if !slices.Equal(unseeded, []int{0}) {
		t.Fatalf("re-created channel unseeded = %v, want [0] (the store must be asked again)", unseeded)
	}
}

func TestParallelFanoutDeliversExactlyOnce(t *testing.T) {
	for _, cfg := range []Config{
		{ParallelFanout: 2, Workers: 4},
		{ParallelFanout: 2, Workers: 2},
		{ParallelFanout: 1, Workers: 7},
		{ParallelFanout: 2, Workers: 1}, // one worker: never split
	} {
		t.Run(fmt.Sprintf("workers=%d", cfg.Workers), func(t *testing.T) {
			h := newHub(t, cfg)
			for _, n := range []int{1, 2, 3, 5, 8, 13, 100, 1001} {
				name := fmt.Sprintf("c%d", n)
				sinks := make([]countSink, n)
				subs := make([]*Subscription, n)
				for i := range sinks {
					subs[i], _ = h.Subscribe(&sinks[i], []string{name}, Version{})
				}
				const publishes = 20
				for v := int64(1); v <= publishes; v++ {
					if got := h.Publish(msg(name, v, 0)); got != n {
						t.Fatalf("n=%d: Publish reported %d", n, got)
					}
				}
				for i := range sinks {
					if sinks[i].n != publishes {
						t.Fatalf("n=%d: sink %d got %d offers, want %d", n, i, sinks[i].n, publishes)
					}
				}
				for _, s := range subs {
					h.Unsubscribe(s)
				}
			}
		})
	}
}

func TestParallelFanoutWithBusyWorkers(t *testing.T) {
	// Many channels published at once with a tiny worker pool: the publisher falls back to
	// delivering itself when no worker is free, and still delivers everything exactly once.
	h := newHub(t, Config{ParallelFanout: 4, Workers: 2})
	const chans, subsPer, publishes = 8, 64, 50
	sinks := make([][]countSink, chans)
	for c := range chans {
		sinks[c] = make([]countSink, subsPer)
		for i := range sinks[c] {
			h.Subscribe(&sinks[c][i], []string{fmt.Sprint("c", c)}, Version{})
		}
	}
	var wg sync.WaitGroup
	for c := range chans {
		wg.Go(func() {
			for v := int64(1); v <= publishes; v++ {
				h.Publish(msg(fmt.Sprint("c", c), v, 0))
			}
		})
	}
	wg.Wait()
	for c := range chans {
		for i := range sinks[c] {
			if sinks[c][i].n != publishes {
				t.Fatalf("channel %d sink %d: %d offers", c, i, sinks[c][i].n)
			}
		}
	}
}

// stalledSink models a connection that cannot write: like the real sinks it keeps only the
// newest message per channel and returns at once.
type stalledSink struct {
	mu        sync.Mutex
	pending   []*Message
	coalesced int
}

func (s *stalledSink) Offer(idx int, m *Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[idx] != nil {
		s.coalesced++
	}
	s.pending[idx] = m
}

func TestStalledSinkDoesNotAffectOthers(t *testing.T) {
	h := newHub(t, Config{ParallelFanout: 8, Workers: 2})
	stalled := &stalledSink{pending: make([]*Message, 2)}
	h.Subscribe(stalled, []string{"x", "c"}, Version{})
	fast := make([]countSink, 50)
	for i := range fast {
		h.Subscribe(&fast[i], []string{"c"}, Version{})
	}
	const publishes = 1000
	var last *Message
	for v := int64(1); v <= publishes; v++ {
		last = msg("c", v, 0)
		if n := h.Publish(last); n != len(fast)+1 {
			t.Fatalf("publish %d reached %d subscribers", v, n)
		}
	}
	for i := range fast {
		if fast[i].n != publishes {
			t.Fatalf("fast sink %d got %d of %d", i, fast[i].n, publishes)
		}
	}
	stalled.mu.Lock()
	defer stalled.mu.Unlock()
	if stalled.pending[1] != last || stalled.pending[0] != nil || stalled.coalesced != publishes-1 {
		t.Fatalf("stalled sink: pending %v, coalesced %d", stalled.pending, stalled.coalesced)
	}
}

func TestConcurrentSubscribeUnsubscribePublish(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := New(Config{ParallelFanout: 16, Workers: 3}, reg)
	defer h.Close()
	channels := []string{"c0", "c1", "c2", "c3"}

	// Stable subscribers stay for the whole run and must see every channel's versions in
	// strictly increasing order, ending at the newest.
	stable := make([]*recordSink, 8)
	for i := range stable {
		stable[i] = &recordSink{}
		h.Subscribe(stable[i], channels, Version{})
	}

	stop := make(chan struct{})
	var churn sync.WaitGroup
	for w := range 4 {
		churn.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			var held []*Subscription
			for i := 0; ; i++ {
				select {
				case <-stop:
					for _, s := range held {
						h.Unsubscribe(s)
					}
					return
				default:
				}
				if len(held) > 0 && (len(held) > 40 || r.IntN(2) == 0) {
					j := r.IntN(len(held))
					h.Unsubscribe(held[j])
					held = slices.Delete(held, j, j+1)
					continue
				}
				pick := slices.Clone(channels)
				r.Shuffle(len(pick), func(a, b int) { pick[a], pick[b] = pick[b], pick[a] })
				s := &recordSink{}
				sub, _ := h.Subscribe(s, pick[:1+r.IntN(len(pick))], Version{Time: int64(r.IntN(100))})
				held = append(held, sub)
			}
		})
	}
	const per = 300
	var pubs sync.WaitGroup
	for p := range 3 {
		pubs.Go(func() {
			for i := range per {
				for _, c := range channels {
					h.Publish(msg(c, int64(3*i+p+1), 0))
				}
			}
		})
	}
	pubs.Wait()
	close(stop)
	churn.Wait()

	for i, s := range stable {
		for idx := range channels {
			vs := s.versions(idx)
			if len(vs) == 0 || vs[len(vs)-1].Time != 3*per {
				t.Fatalf("stable %d channel %d ends at %v", i, idx, vs[max(0, len(vs)-1):])
			}
			for j := 1; j < len(vs); j++ {
				if !vs[j-1].Less(vs[j]) {
					t.Fatalf("stable %d channel %d: %v after %v", i, idx, vs[j], vs[j-1])
				}
			}
		}
	}
	if got := testutil.ToFloat64(h.metrics.subscriptions); got != float64(len(stable)) {
		t.Fatalf("subscriptions gauge = %v, want %d", got, len(stable))
	}
	if got := len(h.Channels()); got != len(channels) {
		t.Fatalf("channels = %d", got)
	}
}

// TestPublishReportsSubscriptionCount pins Publish's documented result: "the channel's
// subscription count (0 when dropped)", whichever fan-out path runs.
func TestPublishReportsSubscriptionCount(t *testing.T) {
	for _, cfg := range []Config{{}, {ParallelFanout: 2, Workers: 2}} {
		h := newHub(t, cfg)
		var a, b, c recordSink
		h.Subscribe(&a, []string{"c"}, Version{})
		h.Subscribe(&b, []string{"c"}, Version{})
		h.Subscribe(&c, []string{"c"}, Version{Time: 100}) // already has v100
		if n := h.Publish(msg("c", 50, 0)); n != 3 {
			t.Errorf("ParallelFanout=%d: Publish = %d, want 3 (subscriptions on the channel)", cfg.ParallelFanout, n)
		}
	}
}

func TestSubscriptionsGauge(t *testing.T) {
	h := newHub(t, Config{})
	var s recordSink
	a, _ := h.Subscribe(&s, []string{"a", "b"}, Version{})
	b, _ := h.Subscribe(&s, []string{"a"}, Version{})
	if got := testutil.ToFloat64(h.metrics.subscriptions); got != 2 {
		t.Fatalf("gauge = %v", got)
	}
	h.Unsubscribe(a)
	h.Unsubscribe(a)
	h.Unsubscribe(b)
	if got := testutil.ToFloat64(h.metrics.subscriptions); got != 0 {
		t.Fatalf("gauge after unsubscribe = %v", got)
	}
	// A subscription to no channel at all must not leave the gauge counting it.
	e, _ := h.Subscribe(&s, nil, Version{})
	h.Unsubscribe(e)
	if got := testutil.ToFloat64(h.metrics.subscriptions); got != 0 {
		t.Fatalf("gauge after Subscribe/Unsubscribe of an empty channel list = %v, want 0", got)
	}
}

func TestChannelsGaugeRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := New(Config{}, reg)
	defer h.Close()
	var s recordSink
	h.Subscribe(&s, []string{"a", "b", "c"}, Version{})
	if got := testutil.ToFloat64(h.metrics.channels); got != 3 {
		t.Fatalf("channels gauge = %v", got)
	}
	for _, name := range []string{"sse_gateway_fanout_duration_seconds", "sse_gateway_subscriptions", "sse_gateway_channels"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Fatalf("%s: %d series, %v", name, n, err)
		}
	}
}

// SubscribeFromNow offers only what is published after the subscription: not the channel's
// newest message, nor the store's answer seeded for it, but everything newer after that, and
// a seed that brings news once it has been offered something (a resync after an outage).
func TestSubscribeFromNow(t *testing.T) {
	h := newHub(t, Config{})
	var old recordSink
	h.Subscribe(&old, []string{"held"}, Version{})
	h.Publish(msg("held", 1, 0))
	var s recordSink
	sub, unseeded := h.SubscribeFromNow(&s, []string{"held", "fresh"})
	if len(unseeded) != 1 || unseeded[0] != 1 {
		t.Fatalf("unseeded %v, want [1]: the hub still needs fresh's newest", unseeded)
	}
	h.Seed("fresh", msg("fresh", 5, 0)) // the store's answer to the connect
	if got := s.got(); len(got) != 0 {
		t.Fatalf("offered %d messages on subscribing, want nothing", len(got))
	}
	h.Publish(msg("held", 2, 0))
	h.Publish(msg("fresh", 6, 0))
	h.Seed("fresh", msg("fresh", 7, 0)) // a resync bringing a missed publish
	var got []string
	for _, o := range s.got() {
		got = append(got, fmt.Sprintf("%s@%d", o.m.Channel, o.m.Version.Time))
	}
	if want := []string{"held@2", "fresh@6", "fresh@7"}; !slices.Equal(got, want) {
		t.Fatalf("offered %v, want %v", got, want)
	}
	h.Unsubscribe(sub)
}

// gateSink blocks in Offer until released, the way a fan-out to many streams keeps its
// channel's lock for a while.
type gateSink struct {
	entered chan struct{}
	release chan struct{}
}

func (s *gateSink) Offer(int, *Message) {
	s.entered <- struct{}{}
	<-s.release
}

func TestBusyWhileAPublishIsInProgress(t *testing.T) {
	h := newHub(t, Config{})
	g := &gateSink{entered: make(chan struct{}), release: make(chan struct{})}
	h.Subscribe(g, []string{"c"}, Version{})
	h.Subscribe(&countSink{}, []string{"d"}, Version{})
	if h.Busy([]string{"c", "d", "unknown"}) {
		t.Fatal("busy before any publish")
	}
	published := make(chan struct{})
	go func() { defer close(published); h.Publish(msg("c", 1, 0)) }()
	<-g.entered
	if !h.Busy([]string{"d", "c"}) || h.Busy([]string{"d"}) {
		t.Fatalf("during c's fan-out: Busy(d, c) = %v, Busy(d) = %v; want true, false", h.Busy([]string{"d", "c"}), h.Busy([]string{"d"}))
	}
	close(g.release)
	<-published
	if h.Busy([]string{"c"}) {
		t.Fatal("busy after the publish returned")
	}
}

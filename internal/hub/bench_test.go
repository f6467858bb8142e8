package hub

import (
	"fmt"
	"testing"
	"time"
)

// publishLoop alternates two messages so that every Publish is newer than the channel's
// latest without allocating a message per publish.
type publishLoop struct {
	ms [2]*Message
	v  int64
}

func newPublishLoop(channel string) *publishLoop {
	return &publishLoop{ms: [2]*Message{msg(channel, 0, 0), msg(channel, 0, 0)}}
}

func (p *publishLoop) next() *Message {
	p.v++
	m := p.ms[p.v%2]
	m.Version = Version{Time: p.v}
	m.Received = time.Now()
	return m
}

func subscribeN(h *Hub, channel string, n int) []countSink {
	sinks := make([]countSink, n)
	for i := range sinks {
		h.Subscribe(&sinks[i], []string{channel}, Version{})
	}
	return sinks
}

// TestPublishAllocationsDoNotGrowWithSubscribers: the hub's per-subscriber work allocates
// nothing, so allocations per publish are the same for 1 subscriber as for thousands, on the
// serial and on the parallel fan-out path. (An allocation count, not a timing.)
func TestPublishAllocationsDoNotGrowWithSubscribers(t *testing.T) {
	h := newHub(t, Config{ParallelFanout: 4096, Workers: 2})
	allocs := func(n int) float64 {
		name := fmt.Sprint("allocs", n)
		sinks := subscribeN(h, name, n)
		loop := newPublishLoop(name)
		got := testing.AllocsPerRun(50, func() { h.Publish(loop.next()) })
		if sinks[n-1].n < 50 {
			t.Fatalf("n=%d: last sink got %d offers", n, sinks[n-1].n)
		}
		return got
	}
	serial1, serial1000, serial4000 := allocs(1), allocs(1000), allocs(4000)
	if serial1000 != serial1 || serial4000 != serial1 {
		t.Fatalf("serial fan-out allocations per publish grow with subscribers: 1=%v 1000=%v 4000=%v", serial1, serial1000, serial4000)
	}
	if serial1 != 0 {
		t.Errorf("serial fan-out allocates %v per publish, want 0", serial1)
	}
	par5k, par20k := allocs(5000), allocs(12000)
	if par20k != par5k {
		t.Fatalf("parallel fan-out allocations per publish grow with subscribers: 5000=%v 12000=%v", par5k, par20k)
	}
	if par5k > 2 {
		t.Errorf("parallel fan-out allocates %v per publish, want a small constant", par5k)
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 1000, 50000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			h := New(Config{}, nil)
			defer h.Close()
			sinks := subscribeN(h, "bench", n)
			loop := newPublishLoop("bench")
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.Publish(loop.next())
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*int64(n)), "ns/delivery")
			if sinks[0].n == 0 {
				b.Fatal("no delivery")
			}
		})
	}
}

func BenchmarkSubscribeUnsubscribe(b *testing.B) {
	for _, others := range []int{0, 1000} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) {
			h := New(Config{}, nil)
			defer h.Close()
			subscribeN(h, "bench", others)
			var s countSink
			chans := []string{"bench"}
			b.ReportAllocs()
			for b.Loop() {
				sub, _ := h.Subscribe(&s, chans, Version{})
				h.Unsubscribe(sub)
			}
		})
	}
}

package hub

import (
	"fmt"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// offer is one call of Sink.Offer as a recordSink saw it.
type offer struct {
	idx int
	m   *Message
}

// recordSink records every offer. Offers may come from several goroutines at once (different
// channels, or the parallel fan-out workers), as the Sink contract allows.
type recordSink struct {
	mu     sync.Mutex
	offers []offer
}

func (s *recordSink) Offer(idx int, m *Message) {
	s.mu.Lock()
	s.offers = append(s.offers, offer{idx, m})
	s.mu.Unlock()
}

func (s *recordSink) got() []offer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]offer(nil), s.offers...)
}

// versions lists the versions offered on channel index idx, in order.
func (s *recordSink) versions(idx int) []Version {
	var out []Version
	for _, o := range s.got() {
		if o.idx == idx {
			out = append(out, o.m.Version)
		}
	}
	return out
}

// countSink counts offers without allocating or locking (one goroutine offers to one sink
// at a time when the sink is on a single channel).
type countSink struct{ n int }

func (s *countSink) Offer(int, *Message) { s.n++ }

func msg(channel string, t int64, tie uint32) *Message {
	v := Version{Time: t, Tie: tie}
	return &Message{Channel: channel, Version: v, ID: fmt.Sprintf("%d-%08x", t, tie), Frame: []byte("f"), Chunk: []byte("c")}
}

func newHub(t testing.TB, cfg Config) *Hub {
	t.Helper()
	h := New(cfg, nil)
	t.Cleanup(h.Close)
	return h
}

package stream

import (
	"fmt"
	"testing"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

func pendingOfPoll(t testing.TB, st stream) []*hub.Message {
	t.Helper()
	ps, ok := st.(*pollStream)
	if !ok {
		t.Fatalf("stream %T is neither a loop nor a poll stream", st)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]*hub.Message(nil), ps.pending...)
}

// pollerEntries counts the streams the poller still tracks (under epoll or in the wheel).
func pollerEntries(s *Server) int {
	if s.poller == nil {
		return 0
	}
	p := s.poller
	p.mu.RLock()
	n := len(p.conns)
	p.mu.RUnlock()
	p.wheel.mu.Lock()
	defer p.wheel.mu.Unlock()
	for _, c := range p.wheel.slots {
		for ; c != nil; c = c.link.next {
			n++
		}
	}
	return n
}

// registryReport describes what the Server's registry still holds, for failure messages.
func registryReport(s *Server) string {
	s.mu.Lock()
	var reserved, loops int
	var streams []*pollStream
	for _, st := range s.streams {
		switch ps := st.(type) {
		case nil:
			reserved++
		case *pollStream:
			streams = append(streams, ps)
		default:
			loops++
		}
	}
	total := len(s.streams)
	s.mu.Unlock()
	var closingN, polled int
	var detail []string
	for _, ps := range streams {
		ps.mu.Lock()
		if ps.state.has(closing) {
			closingN++
		}
		inPoller := s.poller.lookup(ps.id) != nil
		if inPoller {
			polled++
		}
		if len(detail) < 5 {
			detail = append(detail, fmt.Sprintf("{id %d key %s closing %v reason %q subscribed %v in poller %v}",
				ps.id, ps.grant.Name, ps.state.has(closing), ps.reason, ps.sub != nil, inPoller))
		}
		ps.mu.Unlock()
	}
	return fmt.Sprintf("%d entries: %d reserved (nil), %d loop streams, %d poll streams of which %d closing and %d still in the poller %v",
		total, reserved, loops, len(streams), closingN, polled, detail)
}

package stream

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

// socketStream is a taken-over stream on one end of a socket pair, tracked by p as if it
// were under epoll; peer is the other end.
func socketStream(t *testing.T, p *poller, id uint64) (ps *pollStream, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	ps = &pollStream{streamBase: streamBase{id: id}, p: p, fd: fds[0], pending: make([]*hub.Message, 1), lastWrite: time.Now().UnixNano()}
	p.mu.Lock()
	p.conns[id%buckets][id] = ps
	p.mu.Unlock()
	return ps, fds[1]
}

// readAll returns what is waiting on a non-blocking socket.
func readAll(t *testing.T, fd int) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			out = append(out, buf[:n]...)
			continue
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			t.Fatal(err)
		}
		return string(out)
	}
}

// The sweeper visits one bucket per tick (heartbeat/16, here 100ms): a quiet stream gets one heartbeat
// per interval, a stalled write is closed as slow on the first tick past the write timeout,
// and a stream past its lifetime is closed on its bucket's next visit.
func TestSweeperTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hb, wt = 1600 * time.Millisecond, time.Second
		s := timerServer(Config{Heartbeat: hb, WriteTimeout: wt, RetryMin: time.Second, RetryMax: 2 * time.Second})
		p, err := newPoller(s)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p.epfd)
		_, quietPeer := socketStream(t, p, 1)     // bucket 1: visited on ticks 2, 18, 34, ...
		stalled, _ := socketStream(t, p, 3)       // bucket 3
		expiring, _ := socketStream(t, p, 2)      // bucket 2: visited on ticks 3, 19, ...
		expiring.expires = time.Now().Add(hb / 2) // 800ms
		stalled.mu.Lock()
		stalled.out, stalled.stalledAt = []byte("rest of a frame"), time.Now().Add(350*time.Millisecond).UnixNano()
		stalled.mu.Unlock()
		p.mu.Lock()
		p.stalled[stalled] = struct{}{}
		p.mu.Unlock()

		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { p.sweeper(stop) })
		defer func() { close(stop); wg.Wait() }()

		at := func(d time.Duration) {
			time.Sleep(d - time.Since(bubbleStart))
			synctest.Wait()
		}
		state := func(c *pollStream) (bool, CloseReason) {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.state.has(closing), c.reason
		}
		beat := string(chunkedHeartbeat)

		// Ticks at 100ms steps: the stalled frame (since 350ms) is past its deadline at
		// 1.35s, and the tick at 1.4s closes it.
		at(1400*time.Millisecond - 1)
		if closing, _ := state(stalled); closing {
			t.Fatal("stalled stream closed before its write timeout passed")
		}
		at(1400 * time.Millisecond)
		if closing, reason := state(stalled); !closing || reason != CloseSlow {
			t.Fatalf("stalled stream at 1.4s: closing %v reason %v, want slow", closing, reason)
		}

		// Bucket 1 is visited at 200ms (quiet for only 200ms) and 1.8s (quiet for
		// heartbeat-tick): the first heartbeat goes out at 1.8s, the next at 3.4s.
		if got := readAll(t, quietPeer); got != "" {
			t.Fatalf("heartbeat before the stream was quiet for an interval: %q", got)
		}
		at(1800*time.Millisecond - 1)
		if got := readAll(t, quietPeer); got != "" {
			t.Fatalf("heartbeat before 1.8s: %q", got)
		}
		at(1800 * time.Millisecond)
		if got := readAll(t, quietPeer); got != beat {
			t.Fatalf("at 1.8s the peer read %q, want one heartbeat", got)
		}

		// The lifetime (800ms) is checked when bucket 2 is visited: at 1.9s.
		if closing, _ := state(expiring); closing {
			t.Fatal("stream closed before its bucket's visit")
		}
		at(1900 * time.Millisecond)
		if closing, reason := state(expiring); !closing || reason != CloseLifetime || expiring.retry < time.Second {
			t.Fatalf("expired stream at 1.9s: closing %v reason %v retry %v, want lifetime with a retry", closing, reason, expiring.retry)
		}

		at(3400*time.Millisecond - 1)
		if got := readAll(t, quietPeer); got != "" {
			t.Fatalf("second heartbeat early: %q", got)
		}
		at(3400 * time.Millisecond)
		if got := readAll(t, quietPeer); got != beat {
			t.Fatalf("at 3.4s the peer read %q, want the second heartbeat", got)
		}
		if n := testutilCounter(s.metrics.beats); n != 2 {
			t.Fatalf("heartbeats counted %v, want 2", n)
		}
	})
}

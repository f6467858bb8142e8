package stream

import (
	"errors"
	"slices"
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
	return ps, fds[1]
}

// track hands a prepared stream to the poller's timers, as takeOver does once its head is out.
func track(p *poller, ps *pollStream) {
	p.mu.Lock()
	p.conns[ps.id] = ps
	p.mu.Unlock()
	ps.mu.Lock()
	p.wheel.schedule(ps, ps.nextTimerLocked(), false)
	ps.mu.Unlock()
}

// stall makes ps hold the unwritten rest of a frame since at, as a write that hit EAGAIN does.
func stall(p *poller, ps *pollStream, at time.Time) {
	ps.mu.Lock()
	ps.out, ps.stalledAt = []byte("rest of a frame"), at.UnixNano()
	p.watch(ps, true)
	ps.mu.Unlock()
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

// Every per-stream timer of a taken-over stream fires on the first sweeper tick at or after
// its time (tick = heartbeat/16, here 100ms): a quiet stream's heartbeat exactly one interval
// after its last write, a stalled write's deadline, a lifetime. Before the timing wheel the
// sweeper visited one of 16 buckets per tick, so a timer waited for its bucket: heartbeats up
// to an interval late, lifetimes up to a whole heartbeat interval late.
func TestSweeperTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hb, wt, tick = 1600 * time.Millisecond, time.Second, 100 * time.Millisecond
		s := timerServer(Config{Heartbeat: hb, WriteTimeout: wt, RetryMin: time.Second, RetryMax: 2 * time.Second})
		p, err := newPoller(s)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p.epfd)
		start := time.Now()
		quiet, quietPeer := socketStream(t, p, 1)
		written, writtenPeer := socketStream(t, p, 2)
		stalled, _ := socketStream(t, p, 3)
		expiring, _ := socketStream(t, p, 4)
		expiring.expires = start.Add(850 * time.Millisecond)
		for _, ps := range []*pollStream{quiet, written, stalled, expiring} {
			track(p, ps)
		}
		stall(p, stalled, start.Add(350*time.Millisecond))

		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { p.sweeper(stop) })
		defer func() { close(stop); wg.Wait() }()

		closed := func(c *pollStream) (bool, CloseReason) {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.state.has(closing), c.reason
		}
		beat := string(chunkedHeartbeat)
		// Sampled just after every tick: when each thing was first seen.
		seen := map[string][]time.Duration{}
		closedAt := map[*pollStream]time.Duration{}
		for at := tick; at <= 4*time.Second; at += tick {
			time.Sleep(time.Until(start.Add(at)))
			synctest.Wait()
			if at == 600*time.Millisecond {
				// An event written at 0.6s: the next heartbeat is due at 2.2s.
				written.mu.Lock()
				written.lastWrite = time.Now().UnixNano()
				written.mu.Unlock()
			}
			for name, fd := range map[string]int{"quiet": quietPeer, "written": writtenPeer} {
				for got := readAll(t, fd); got != ""; got = got[len(beat):] {
					if len(got) < len(beat) || got[:len(beat)] != beat {
						t.Fatalf("%s stream's peer read %q, want heartbeats", name, got)
					}
					seen[name] = append(seen[name], at)
				}
			}
			for _, c := range []*pollStream{stalled, expiring} {
				if _, ok := closedAt[c]; !ok {
					if yes, _ := closed(c); yes {
						closedAt[c] = at
					}
				}
			}
		}
		ms := func(d ...time.Duration) []time.Duration {
			for i := range d {
				d[i] *= time.Millisecond
			}
			return d
		}
		for name, want := range map[string][]time.Duration{
			"quiet":   ms(1600, 3200),
			"written": ms(2200, 3800),
		} {
			if got := seen[name]; !slices.Equal(got, want) {
				t.Errorf("%s stream: heartbeats at %v, want %v (one interval after the last write)", name, got, want)
			}
		}
		if _, reason := closed(stalled); closedAt[stalled] != 1400*time.Millisecond || reason != CloseSlow {
			t.Errorf("stalled stream closed at %v (%v), want 1.4s (slow): its write timeout ran out at 1.35s", closedAt[stalled], reason)
		}
		if _, reason := closed(expiring); closedAt[expiring] != 900*time.Millisecond || reason != CloseLifetime || expiring.retry < time.Second {
			t.Errorf("expiring stream closed at %v (%v, retry %v), want 0.9s (lifetime, with a retry): its lifetime ended at 0.85s", closedAt[expiring], reason, expiring.retry)
		}
		if n := testutilCounter(s.metrics.beats); n != 4 {
			t.Errorf("heartbeats counted %v, want 4", n)
		}
	})
}

// A sweep costs the streams that are due, not the streams that are open: idle streams are
// not looked at between their heartbeats, and one whose heartbeat a write pushed back comes
// up once more at its old time, then at its new one.
func TestWheelSweepsOnlyDueStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hb, n = 1600 * time.Millisecond, 200
		s := timerServer(Config{Heartbeat: hb})
		p, err := newPoller(s)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p.epfd)
		start := time.Now()
		var all []*pollStream
		for i := range n {
			ps, _ := socketStream(t, p, uint64(i+1))
			track(p, ps)
			all = append(all, ps)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { p.sweeper(stop) })
		defer func() { close(stop); wg.Wait() }()
		swept := func() uint64 {
			p.wheel.mu.Lock()
			defer p.wheel.mu.Unlock()
			return p.wheel.swept
		}
		at := func(d time.Duration) {
			time.Sleep(time.Until(start.Add(d)))
			synctest.Wait()
		}

		at(500 * time.Millisecond)
		// A write at 0.5s to one stream: its heartbeat moves to 2.1s.
		all[0].mu.Lock()
		all[0].lastWrite = time.Now().UnixNano()
		all[0].mu.Unlock()
		at(hb - time.Millisecond)
		if got := swept(); got != 0 {
			t.Fatalf("%d streams looked at before any timer was due", got)
		}
		at(hb)
		if got := swept(); got != n {
			t.Fatalf("%d streams looked at when %d heartbeats came due", got, n)
		}
		if got := testutilCounter(s.metrics.beats); got != n-1 {
			t.Fatalf("%v heartbeats at 1.6s, want %d (the stream written at 0.5s is not due)", got, n-1)
		}
		at(2100 * time.Millisecond)
		if got := swept(); got != n+1 {
			t.Fatalf("%d streams looked at by 2.1s, want %d (the pushed-back one, once more)", got, n+1)
		}
		at(2*hb - time.Millisecond)
		if got := swept(); got != n+1 {
			t.Fatalf("%d streams looked at before the second interval, want %d", got, n+1)
		}
	})
}

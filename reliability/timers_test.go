package reliability

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// timedStream is a raw HTTP/1.1 stream that records when each read returned bytes: the
// gaps a load balancer's idle timeout would see, and when the gateway ended it.
type timedStream struct {
	mu     sync.Mutex
	reads  []time.Time // one per read that returned bytes; [0] holds the response head
	data   bytes.Buffer
	ended  time.Time // zero while open
	endErr error
}

// openTimed opens a stream on channels from source and reads it on its own goroutine until
// the gateway ends it or the test does.
func openTimed(t *testing.T, addr, source, channels string) *timedStream {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET "+streamPath(channels)+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	s := &timedStream{}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			now := time.Now()
			s.mu.Lock()
			if n > 0 {
				s.reads = append(s.reads, now)
				s.data.Write(buf[:n])
			}
			if err != nil {
				s.ended, s.endErr = now, err
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// maxGap is the longest time the stream went without a byte, from its head to its last
// read (or to now, while it is open).
func (s *timedStream) maxGap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var worst time.Duration
	for i := 1; i < len(s.reads); i++ {
		worst = max(worst, s.reads[i].Sub(s.reads[i-1]))
	}
	if s.ended.IsZero() && len(s.reads) > 0 {
		worst = max(worst, time.Since(s.reads[len(s.reads)-1]))
	}
	return worst
}

// lifetime is the time from the response head to the end of the stream; ok is false while
// it is open.
func (s *timedStream) lifetime() (d time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended.IsZero() || len(s.reads) == 0 {
		return 0, false
	}
	return s.ended.Sub(s.reads[0]), true
}

func (s *timedStream) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data.String()
}

// TestTimersOnTime (issue 10, item 3): every per-stream timer of a stream fires within a
// second of its time. A load balancer whose idle timeout is just above --heartbeat must
// never see a healthy stream quiet for longer than that, and --max-lifetime must cut
// streams when it says. The poller's sweeper used to visit one of 16 buckets per tick, so a
// heartbeat came up to an interval late (gaps of heartbeat + 15 s with long intervals) and a
// lifetime up to a whole heartbeat interval late.
func TestTimersOnTime(t *testing.T) {
	t.Parallel()
	r := startRedis(t)

	t.Run("heartbeat", func(t *testing.T) {
		t.Parallel()
		const hb, n, run = 2 * time.Second, 48, 7 * time.Second
		g := startGateway(t, "timers-hb", r.URL(), "--heartbeat", hb.String())
		var streams []*timedStream
		for i := range n {
			streams = append(streams, openTimed(t, g.Addr, source(i), "timers-hb"))
			time.Sleep(hb / n) // spread the opens over an interval: every phase of a sweep
		}
		// An event in the middle restarts every stream's quiet interval at an arbitrary
		// phase of the sweeper.
		time.Sleep(run / 3)
		if s, body := g.publishAPI("timers-hb", payload(`"hb1"`, time.Now().UnixMilli(), 0, false)); s != http.StatusAccepted {
			t.Fatalf("publish: %d %s", s, body)
		}
		time.Sleep(run - run/3)
		var gaps []time.Duration
		for i, s := range streams {
			if _, ended := s.lifetime(); ended {
				t.Fatalf("stream %d ended: %v", i, s.endErr)
			}
			if !strings.Contains(s.text(), `hb1`) {
				t.Errorf("stream %d never received the event: %q", i, s.text())
			}
			gaps = append(gaps, s.maxGap())
		}
		slices.Sort(gaps)
		worst := gaps[len(gaps)-1]
		t.Logf("--heartbeat %v, %d streams for %v: longest quiet gap per stream: median %v, worst %v",
			hb, n, run, gaps[len(gaps)/2].Round(time.Millisecond), worst.Round(time.Millisecond))
		if limit := hb + time.Second; worst > limit {
			t.Errorf("a stream was quiet for %v, longer than --heartbeat + 1s = %v (gaps %v)", worst.Round(time.Millisecond), limit, roundAll(gaps))
		}
	})

	t.Run("lifetime", func(t *testing.T) {
		t.Parallel()
		const life, n = 3 * time.Second, 24 // the default --heartbeat 15s
		g := startGateway(t, "timers-life", r.URL(), "--max-lifetime", life.String())
		var streams []*timedStream
		for i := range n {
			streams = append(streams, openTimed(t, g.Addr, source(i), "timers-life"))
			time.Sleep(50 * time.Millisecond)
		}
		waitFor(t, 30*time.Second, func() string { return "not every stream ended" }, func() bool {
			for _, s := range streams {
				if _, ok := s.lifetime(); !ok {
					return false
				}
			}
			return true
		})
		var lives []time.Duration
		for i, s := range streams {
			d, _ := s.lifetime()
			lives = append(lives, d)
			if !strings.Contains(s.text(), "retry: ") {
				t.Errorf("stream %d ended after %v without a retry: frame", i, d.Round(time.Millisecond))
			}
		}
		slices.Sort(lives)
		t.Logf("--max-lifetime %v (jittered to 80-100%%): %d streams lived %v to %v",
			life, n, lives[0].Round(time.Millisecond), lives[n-1].Round(time.Millisecond))
		if lo, hi := life*8/10-100*time.Millisecond, life+time.Second; lives[0] < lo || lives[n-1] > hi {
			t.Errorf("streams lived %v, want each within [%v, %v]", roundAll(lives), lo, hi)
		}
		if got := g.metrics().get("sse_gateway_stream_closes_total", `reason="lifetime"`); got != n {
			t.Errorf("stream_closes_total{reason=lifetime} = %v, want %d", got, n)
		}
	})
}

func roundAll(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(10*time.Millisecond).String())
	}
	return fmt.Sprint(out)
}

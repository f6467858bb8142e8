package stream

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// The timer-driven logic of streams, on synctest's fake clock: exact instants, no sleeps.

// timerServer is a Server with only what the timer logic uses: its config and metrics.
func timerServer(cfg Config) *Server {
	cfg.setDefaults()
	return &Server{cfg: cfg, metrics: newMetrics(nil), streams: make(map[uint64]stream)}
}

// timedWriter is a ResponseWriter that records when each write happened.
type timedWriter struct {
	mu     sync.Mutex
	header http.Header
	writes []timedWrite
}

type timedWrite struct {
	at   time.Duration // since the test's start
	data string
}

var bubbleStart = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // synctest's fake clock starts here

func (w *timedWriter) Header() http.Header { return w.header }
func (w *timedWriter) WriteHeader(int)     {}
func (w *timedWriter) Flush()              {}
func (w *timedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, timedWrite{time.Since(bubbleStart), string(p)})
	return len(p), nil
}

func (w *timedWriter) snapshot() []timedWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

// A stream on the net/http path writes a heartbeat after each quiet interval (an event
// restarts the interval), and at the end of its lifetime a retry: frame before it ends.
func TestLoopStreamTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := timerServer(Config{Heartbeat: time.Second, RetryMin: 2 * time.Second, RetryMax: 3 * time.Second})
		l := &loopStream{
			streamBase: streamBase{expires: time.Now().Add(3500 * time.Millisecond)},
			srv:        s,
			pending:    make([]*hub.Message, 1),
			wake:       make(chan struct{}, 1),
			done:       make(chan struct{}),
		}
		w := &timedWriter{header: http.Header{}}
		r := httptest.NewRequest(http.MethodGet, "/event-stream", nil)
		ended := make(chan CloseReason, 1)
		go func() { ended <- l.run(w, http.NewResponseController(w), r) }()

		p, err := wire.ParsePayload([]byte(`{"etag":"\"a\"","lastModified":1}`), 0)
		if err != nil {
			t.Fatal(err)
		}
		msg := wire.NewMessage("c", p, time.Now())
		time.Sleep(1500 * time.Millisecond)
		l.Offer(0, msg)
		if reason := <-ended; reason != CloseLifetime {
			t.Fatalf("ended with %v, want lifetime", reason)
		}
		hb := string(wire.Heartbeat)
		want := []timedWrite{
			{time.Second, hb},
			{1500 * time.Millisecond, string(msg.Frame)},
			{2500 * time.Millisecond, hb}, // the event restarted the quiet interval
			{3500 * time.Millisecond, hb}, // the ticker and the lifetime fire together
		}
		got := w.snapshot()
		if len(got) < 1 {
			t.Fatal("nothing written")
		}
		retry := got[len(got)-1]
		var ms int
		if _, err := fmt.Sscanf(retry.data, "retry: %d\n\n", &ms); err != nil || retry.at != 3500*time.Millisecond || ms < 2000 || ms > 3000 {
			t.Fatalf("last write %+v, want a retry: of 2-3s at the end of the lifetime", retry)
		}
		got = got[:len(got)-1]
		// At 3.5s the heartbeat and the lifetime are due at once; either may go first.
		if len(got) == len(want)-1 {
			want = want[:len(want)-1]
		}
		if !slices.Equal(got, want) {
			t.Fatalf("writes\n%v\nwant\n%v", got, want)
		}
	})
}

// closeRecorder is a registered stream that records when and how it was closed.
type closeRecorder struct {
	streamBase
	mu     sync.Mutex
	at     time.Duration
	reason CloseReason
	retry  time.Duration
}

func (c *closeRecorder) close(reason CloseReason, retry time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.reason, c.retry = time.Since(bubbleStart), reason, retry
}

// Drain closes the streams evenly over its window, each with a jittered retry:, and closes
// whatever is left at once when its context ends.
func TestDrainSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := timerServer(Config{RetryMin: time.Second, RetryMax: 5 * time.Second})
		var all []*closeRecorder
		for i := range 8 {
			c := &closeRecorder{streamBase: streamBase{id: uint64(i + 1)}}
			s.streams[c.id] = c
			all = append(all, c)
		}
		s.streams[100] = nil // admitted, not yet registered: nothing to close
		ctx, cancel := context.WithTimeout(context.Background(), 1100*time.Millisecond)
		defer cancel()
		s.Drain(ctx, 2*time.Second)
		if !s.Draining() {
			t.Fatal("not draining after Drain")
		}
		var at []time.Duration
		for _, c := range all {
			if c.reason != CloseDrain || c.retry < time.Second || c.retry >= 5*time.Second {
				t.Errorf("stream %d closed with %v, retry %v; want drain and a retry in [1s, 5s)", c.id, c.reason, c.retry)
			}
			at = append(at, c.at)
		}
		slices.Sort(at)
		// One every 2s/8 = 250ms, until the context ends at 1.1s: the rest close then.
		want := []time.Duration{0, 250, 500, 750, 1000, 1100, 1100, 1100}
		for i := range want {
			want[i] *= time.Millisecond
		}
		if !slices.Equal(at, want) {
			t.Fatalf("closed at %v, want %v", at, want)
		}
	})
}

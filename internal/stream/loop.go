package stream

import (
	"errors"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// loopStream is a stream served on the ordinary net/http path (HTTP/2, TLS, HTTP/1.0): the
// handler's goroutine owns the ResponseWriter and does every write, under a deadline.
type loopStream struct {
	streamBase
	srv *Server

	mu      sync.Mutex
	pending []*hub.Message // guarded by mu: newest unwritten message per channel
	reason  CloseReason    // guarded by mu: set once, by close
	retry   time.Duration  // guarded by mu: set with reason

	wake chan struct{} // capacity 1: "pending changed"
	done chan struct{} // closed by close, under mu
}

// Offer implements hub.Sink: keep the newest message per channel and wake the writer.
func (l *loopStream) Offer(idx int, m *hub.Message) {
	l.mu.Lock()
	if l.pending[idx] != nil {
		l.srv.metrics.coalesced.Inc()
	}
	l.pending[idx] = m
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *loopStream) close(reason CloseReason, retry time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reason != 0 {
		return
	}
	l.reason, l.retry = reason, retry
	close(l.done)
}

func (s *Server) serveLoop(w http.ResponseWriter, r *http.Request, b *streamBase, channels []string, from start) {
	b.protocol = protoHTTP1
	if r.ProtoMajor >= 2 {
		b.protocol = protoH2
	}
	l := &loopStream{
		streamBase: *b,
		srv:        s,
		pending:    make([]*hub.Message, len(channels)),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	// Subscribed before the headers go out: once a client sees 200, nothing published after
	// that can miss it. Offers only fill pending until run writes them.
	s.register(l)
	sub, seed := s.subscribe(l, channels, from)
	l.sub = sub
	rc := http.NewResponseController(w)
	s.writeHeaders(w, r)
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := w.Write(wire.Heartbeat); err != nil || rc.Flush() != nil {
		l.close(CloseClient, 0)
		s.forget(&l.streamBase, l.sub, CloseClient)
		return
	}
	idle(rc)
	seed()
	if s.draining.Load() {
		l.close(CloseDrain, s.retryJitter())
	}
	reason := l.run(w, rc, r)
	s.forget(&l.streamBase, l.sub, reason)
	if reason == CloseDrain || reason == CloseLifetime {
		// End the response as failed (RST_STREAM on HTTP/2, a cut connection on HTTP/1)
		// so that clients come back: a cleanly finished body makes some (r3labs/sse)
		// stop reconnecting.
		panic(http.ErrAbortHandler)
	}
}

// run is the stream's writer loop; it returns the close reason.
func (l *loopStream) run(w http.ResponseWriter, rc *http.ResponseController, r *http.Request) CloseReason {
	cfg := &l.srv.cfg
	beat := time.NewTicker(cfg.Heartbeat)
	defer beat.Stop()
	var lifetime <-chan time.Time
	if !l.expires.IsZero() {
		t := time.NewTimer(time.Until(l.expires))
		defer t.Stop()
		lifetime = t.C
	}
	batch := make([]*hub.Message, len(l.pending))
	for {
		select {
		case <-r.Context().Done():
			reason := CloseClient
			if kernelTimedOut(r.Context()) {
				reason = CloseSlow // TCP_USER_TIMEOUT: a client that stopped reading
			}
			l.close(reason, 0)
			return reason
		case <-l.done:
			l.mu.Lock()
			reason, retry := l.reason, l.retry
			l.mu.Unlock()
			if retry > 0 {
				_ = rc.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
				if _, err := w.Write(wire.Retry(retry)); err == nil && rc.Flush() == nil {
					l.srv.metrics.frames.WithLabelValues(frameRetry).Inc()
				}
			}
			return reason
		case <-lifetime:
			l.close(CloseLifetime, l.srv.retryJitter())
		case <-l.wake:
			l.mu.Lock()
			n := 0
			for i, m := range l.pending {
				if m != nil {
					batch[n] = m
					n++
					l.pending[i] = nil
				}
			}
			l.mu.Unlock()
			if err := l.write(w, rc, batch[:n]); err != nil {
				return l.fail(err)
			}
			clear(batch)
			beat.Reset(cfg.Heartbeat)
		case <-beat.C:
			if err := l.writeRaw(w, rc, wire.Heartbeat); err != nil {
				return l.fail(err)
			}
			l.srv.metrics.beats.Inc()
		}
	}
}

// write writes a batch of messages and flushes once.
func (l *loopStream) write(w http.ResponseWriter, rc *http.ResponseController, msgs []*hub.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now()
	_ = rc.SetWriteDeadline(now.Add(l.srv.cfg.WriteTimeout))
	for _, m := range msgs {
		if _, err := w.Write(m.Frame); err != nil {
			return err
		}
		l.srv.wrote(m, len(m.Frame), now.UnixNano())
	}
	if err := rc.Flush(); err != nil {
		return err
	}
	idle(rc)
	return nil
}

// idle clears the write deadline once a write is done: the deadline bounds a write, not the
// quiet time after it. On HTTP/2 a deadline left to pass resets the stream even with nothing
// to write, so an idle stream would be cut one write timeout after its last write.
func idle(rc *http.ResponseController) { _ = rc.SetWriteDeadline(time.Time{}) }

func (l *loopStream) writeRaw(w http.ResponseWriter, rc *http.ResponseController, b []byte) error {
	_ = rc.SetWriteDeadline(time.Now().Add(l.srv.cfg.WriteTimeout))
	if _, err := w.Write(b); err != nil {
		return err
	}
	l.srv.metrics.bytes.Add(float64(len(b)))
	if err := rc.Flush(); err != nil {
		return err
	}
	idle(rc)
	return nil
}

func (l *loopStream) fail(err error) CloseReason {
	reason := CloseClient
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		reason = CloseSlow
	}
	l.close(reason, 0)
	return reason
}

// wrote accounts one delivered event of n bytes, written at now (unix nanos): the writer's
// own clock read, so that a delivery costs one (measured: 2.6% of a 1-channel fan-out's CPU
// went to the second read, time.Since here).
func (s *Server) wrote(m *hub.Message, n int, now int64) {
	s.metrics.events.Inc()
	s.metrics.bytes.Add(float64(n))
	if !m.LastModified.IsZero() {
		s.metrics.age.Observe(time.Duration(now - m.LastModified.UnixNano()).Seconds())
	}
}

//go:build linux

package stream

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// maxInput is how much a client may send on a stream after its request before it is cut off:
// an SSE client sends nothing, so anything more is misuse.
const maxInput = 16 << 10

// pollState is a taken-over stream's lifecycle, one bit per fact (as nats-server keeps its
// client flags), all guarded by the stream's mu:
//
//	opening ──headers written──▶ open ──closeLocked──▶ closing ──finish──▶ finished
//	                                                      │                    ▲
//	                                         goodbye not all written       finish
//	                                                      ▼                    │
//	                                                  lingering ──written, failed or deadline
//
// A close may be asked for while the stream is still opening (a revocation, a hang-up, a
// drain); the closer then leaves it to the handler (finishLater), which finishes the close once
// the headers are out, so that the goodbye follows them.
//
// A stream closed on purpose owes its client a goodbye: the rest of the frame it was writing,
// then retry: (drain, lifetime) or the chunked terminator (revoked). What the socket cannot
// take at once is written as epoll reports it writable (lingering), for at most the write
// timeout, so a client that does not read cannot hold a drain or the closer.
type pollState uint8

const (
	// opening: the response head is not written yet, so Offer only fills pending.
	opening pollState = 1 << iota
	// closing: a close was asked for (reason is set) and is queued for the closer.
	closing
	// finishLater: the closer found the stream opening; its handler finishes the close.
	finishLater
	// finished: the close was carried out (finish is idempotent).
	finished
	// lingering: closing, and the goodbye is being written as the socket takes it; the
	// next finish closes the stream whatever is left.
	lingering
)

func (s pollState) has(f pollState) bool { return s&f != 0 }
func (s *pollState) set(f pollState)     { *s |= f }
func (s *pollState) clear(f pollState)   { *s &^= f }

// pollStream is a taken-over HTTP/1.1 stream. It has no goroutine: publishers write to it
// directly with non-blocking writes; what the socket cannot take now stays referenced (never
// copied) in out, and pending holds only the newest message per channel behind it.
//
// Lock order: a hub channel lock (held by the publisher calling Offer), then mu, then the
// poller's mu (watch, ctl) or closeMu (closeLocked). Nothing holding mu takes a hub lock:
// unsubscribing is left to the closer goroutine, which holds no stream lock while it does.
type pollStream struct {
	streamBase
	p  *poller // immutable
	fd int     // immutable: the socket's descriptor, detached from the Go runtime; closed by finish

	mu        sync.Mutex
	state     pollState      // guarded by mu
	out       []byte         // guarded by mu: unwritten rest of the frame being written; nil when idle
	pending   []*hub.Message // guarded by mu: newest message per channel waiting behind out
	stalledAt int64          // guarded by mu: unix nanos when out became non-nil
	lastWrite int64          // guarded by mu: unix nanos of the last completed write
	input     int            // guarded by mu: bytes the client has sent after its request
	reason    CloseReason    // guarded by mu: set once, by closeLocked
	retry     time.Duration  // guarded by mu: set with reason
	bye       []byte         // guarded by mu: the unwritten rest of the goodbye after out
	byeBy     int64          // guarded by mu: unix nanos when a lingering goodbye is given up

	link wheelLink // guarded by the poller's wheel's mu: its place among the timers
}

// takeOver runs a stream's opening on the goroutine that admitted it (a handler's, or the
// accepting goroutine's: accept_linux.go): it registers the stream, puts its socket fd
// (detached from the Go runtime, or never given to it) under epoll, subscribes it, and
// writes head; from then on the stream has no goroutine of its own.
func (p *poller) takeOver(fd int, b *streamBase, channels []string, from start, head []byte) {
	s := p.srv
	ps := &pollStream{
		streamBase: *b,
		p:          p,
		fd:         fd,
		pending:    make([]*hub.Message, len(channels)),
		lastWrite:  time.Now().UnixNano(),
		state:      opening,
	}
	// Registered before epoll can report a hang-up: the closer's forget must find the
	// stream in the registry, or a stale entry would outlive it.
	s.register(ps)
	if err := p.add(ps); err != nil {
		if !errors.Is(err, errStopped) {
			s.log.Error("epoll add failed", "err", err)
		}
		ps.mu.Lock()
		ps.state.clear(opening) // nothing will be written: let finish close it now
		ps.closeLocked(CloseDrain, 0)
		ps.mu.Unlock()
		ps.finish() // the closer may be gone; finish is idempotent
		return
	}
	sub, seed := s.subscribe(ps, channels, from)
	ps.mu.Lock()
	closed := ps.state.has(closing)
	if !closed {
		ps.sub = sub
	}
	ps.mu.Unlock()
	if closed {
		// Closed while subscribing (the client left at once): the closer found no
		// subscription to remove, so this goroutine removes it, and finishes the close if
		// the closer left that to it.
		s.hub.Unsubscribe(sub)
		ps.mu.Lock()
		ps.state.clear(opening)
		later := ps.state.has(finishLater)
		ps.mu.Unlock()
		if later {
			ps.finish()
		}
		return
	}
	// Subscribed before the headers go out: once a client sees 200, nothing published after
	// that can miss it. Until then Offer only fills pending, which goes out right after. The
	// head goes out like any frame: a fresh socket takes it whole; what it does not take
	// waits in out for epoll, with the write deadline running.
	ps.mu.Lock()
	ps.state.clear(opening)
	now := time.Now().UnixNano()
	if ps.state.has(closing) {
		// Closed while the head was not out yet (a drain, a revocation): the goodbye
		// follows the head.
		ps.out, ps.stalledAt = head, now
	} else if ps.writeLocked(head, now) {
		if ps.out == nil {
			ps.flushPendingLocked(now)
		}
		if !ps.state.has(closing) {
			p.wheel.schedule(ps, ps.nextTimerLocked(), false)
		}
	}
	later := ps.state.has(finishLater)
	ps.mu.Unlock()
	if later {
		ps.finish()
		return
	}
	seed()
	if s.draining.Load() {
		ps.close(CloseDrain, s.retryJitter())
	}
}

// Offer implements hub.Sink. It writes at once when the socket is idle; otherwise the message
// replaces any older pending one of its channel.
func (c *pollStream) Offer(idx int, m *hub.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.has(closing) {
		return
	}
	if c.out != nil || c.state.has(opening) {
		if c.pending[idx] != nil {
			c.p.srv.metrics.coalesced.Inc()
		}
		c.pending[idx] = m
		return
	}
	now := time.Now().UnixNano()
	if c.writeLocked(m.Chunk, now) {
		c.p.srv.wrote(m, len(m.Chunk), now)
	}
}

// writeLocked writes b without blocking. What the socket does not take is kept in out and
// the stream is watched for writability; a write error closes the stream. It reports whether
// b was handed to the socket (fully or in part).
func (c *pollStream) writeLocked(b []byte, now int64) bool {
	for len(b) > 0 {
		n, err := unix.Write(c.fd, b)
		if n > 0 {
			b = b[n:]
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			c.out = b
			c.stalledAt = now
			c.p.watch(c, true)
			return true
		default:
			c.closeLocked(failReason(err), 0)
			return false
		}
	}
	c.lastWrite = now
	return true
}

// failReason classifies a socket error: ETIMEDOUT is the kernel giving up on data the peer
// did not take within TCP_USER_TIMEOUT (the write timeout) — a slow or vanished client —
// anything else is the client going away.
func failReason(err error) CloseReason {
	if errors.Is(err, unix.ETIMEDOUT) {
		return CloseSlow
	}
	return CloseClient
}

// socketReason classifies why epoll reported an error or hang-up on the stream's socket.
func (c *pollStream) socketReason() CloseReason {
	if soErr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && soErr != 0 {
		return failReason(unix.Errno(soErr))
	}
	return CloseClient
}

// flush continues a stalled stream once epoll says it is writable: the rest of the current
// frame, then the pending messages in channel order.
func (c *pollStream) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.has(lingering) {
		if c.writeGoodbyeLocked() {
			c.endGoodbyeLocked()
		}
		return
	}
	if c.state.has(closing) || c.out == nil {
		return
	}
	now := time.Now().UnixNano()
	out, since := c.out, c.stalledAt
	c.out = nil
	if !c.writeLocked(out, now) {
		return
	}
	if c.out != nil {
		// Still the same frame: its deadline runs from when it first stalled, so a client
		// that trickles a few bytes at a time is still closed as slow.
		c.stalledAt = since
		return
	}
	if c.flushPendingLocked(now) {
		c.p.watch(c, false)
	}
}

// flushPendingLocked writes the pending messages in channel order until the socket stalls;
// it reports whether everything was written.
func (c *pollStream) flushPendingLocked(now int64) bool {
	for i, m := range c.pending {
		if m == nil {
			continue
		}
		c.pending[i] = nil
		if !c.writeLocked(m.Chunk, now) {
			return false
		}
		c.p.srv.wrote(m, len(m.Chunk), now)
		if c.out != nil {
			return false
		}
	}
	return true
}

// readable consumes what a client sent. An SSE client sends nothing after its request, so
// EOF means it left, and data is discarded up to a small limit.
func (c *pollStream) readable() {
	var buf [512]byte
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.state.has(closing) {
		n, err := unix.Read(c.fd, buf[:])
		switch {
		case n > 0:
			c.input += n
			if c.input > maxInput {
				c.closeLocked(CloseClient, 0)
			}
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR):
		default: // EOF or an error
			c.closeLocked(CloseClient, 0)
		}
	}
}

// timers runs the stream's timers that are due at now (unix nanos): its lifetime, the
// deadline of a stalled write, its heartbeat after a quiet interval. Then it puts the stream
// back in the wheel at its next timer. The sweeper calls it for the streams the wheel says
// are due; a stream that comes up early (its heartbeat was pushed back by a write) only goes
// back in.
func (c *pollStream) timers(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.has(lingering) {
		if now >= c.byeBy {
			c.endGoodbyeLocked() // the client did not take it in time
		} else {
			c.p.wheel.schedule(c, c.byeBy, false)
		}
		return
	}
	if c.state.has(closing) {
		return
	}
	cfg := &c.p.srv.cfg
	switch {
	case !c.expires.IsZero() && now >= c.expires.UnixNano():
		c.closeLocked(CloseLifetime, c.p.srv.retryJitter())
		return
	case c.out != nil:
		if now-c.stalledAt >= int64(cfg.WriteTimeout) {
			c.closeLocked(CloseSlow, 0)
			return
		}
	case c.state.has(opening):
	case now-c.lastWrite >= int64(cfg.Heartbeat):
		if !c.writeLocked(chunkedHeartbeat, now) {
			return
		}
		c.p.srv.metrics.beats.Inc()
		c.p.srv.metrics.bytes.Add(float64(len(chunkedHeartbeat)))
	}
	c.p.wheel.schedule(c, c.nextTimerLocked(), false)
}

// nextTimerLocked is when the stream's next timer is due (unix nanos): the write deadline
// while a write is stalled (no heartbeat can go out behind it), else a heartbeat interval
// after the last write; the lifetime if that comes first.
func (c *pollStream) nextTimerLocked() int64 {
	cfg := &c.p.srv.cfg
	next := c.lastWrite + int64(cfg.Heartbeat)
	if c.out != nil {
		next = c.stalledAt + int64(cfg.WriteTimeout)
	}
	if !c.expires.IsZero() {
		next = min(next, c.expires.UnixNano())
	}
	return next
}

func (c *pollStream) close(reason CloseReason, retry time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(reason, retry)
}

// closeLocked marks the stream closing and queues it for the closer: the caller may hold a
// hub channel lock, and unsubscribing needs that lock, so the close itself happens elsewhere.
func (c *pollStream) closeLocked(reason CloseReason, retry time.Duration) {
	if c.state.has(closing) {
		return
	}
	c.state.set(closing)
	c.reason, c.retry = reason, retry
	// Out of epoll at once: a hung-up socket keeps reporting until it is closed, and the
	// closer may be a while behind. The fd is still open here, so its number is still ours.
	c.p.ctl(unix.EPOLL_CTL_DEL, c.fd, nil)
	c.p.enqueueClose(c)
}

// sayGoodbyeLocked starts the goodbye of a stream closed on purpose: the rest of a partly
// written frame, then the retry: frame — with no chunked terminator after it: clients must
// see the stream fail and come back, and some (r3labs/sse) treat a clean end as "done" and
// never reconnect — or, for a revoked key, the chunked terminator (a clean end: reconnecting
// would only earn a 401). It reports whether the stream can be closed now: nothing owed,
// all of it written, the socket failed, or the poller stopped. Otherwise the stream lingers
// under epoll for writability until the write timeout, counted from when its frame stalled.
func (c *pollStream) sayGoodbyeLocked(now int64) bool {
	switch {
	case c.retry > 0:
		c.bye = wire.Chunk(wire.Retry(c.retry))
	case c.reason == CloseRevoked:
		c.bye = wire.ChunkTerminator
	default:
		return true // a client that left or stalled: nothing more to say
	}
	if c.writeGoodbyeLocked() {
		return true
	}
	start := now
	if c.out != nil {
		start = c.stalledAt
	}
	c.byeBy = start + int64(c.p.srv.cfg.WriteTimeout)
	if now >= c.byeBy || !c.p.linger(c) {
		return true
	}
	c.state.set(lingering)
	c.p.wheel.schedule(c, c.byeBy, false)
	return false
}

// writeGoodbyeLocked writes what the socket takes of the goodbye (out, then bye) without
// blocking. It reports whether nothing is left to do: all written, or the socket failed.
func (c *pollStream) writeGoodbyeLocked() bool {
	for _, b := range []*[]byte{&c.out, &c.bye} {
		for len(*b) > 0 {
			n, err := unix.Write(c.fd, *b)
			if n > 0 {
				*b = (*b)[n:]
			}
			switch {
			case err == nil, errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.EAGAIN):
				return false
			default:
				c.out, c.bye = nil, nil
				return true
			}
		}
		*b = nil
	}
	if c.retry > 0 {
		c.p.srv.metrics.frames.WithLabelValues(frameRetry).Inc()
	}
	return true
}

// endGoodbyeLocked ends a lingering stream's goodbye (written, failed, or given up): out of
// epoll at once, since a writable socket keeps reporting, and to the closer, whose finish
// closes it.
func (c *pollStream) endGoodbyeLocked() {
	if c.state.has(finished) {
		return
	}
	c.p.ctl(unix.EPOLL_CTL_DEL, c.fd, nil)
	c.p.enqueueClose(c)
}

// finish carries out a close, on the closer's goroutine (or the handler's, for a stream
// closed while opening): a polite goodbye if the socket can take it, then the close, and the
// bookkeeping.
func (c *pollStream) finish() {
	p := c.p
	c.mu.Lock()
	if c.state.has(finished) {
		c.mu.Unlock()
		return
	}
	if c.state.has(opening) {
		// Its handler is writing the response headers: it finishes the close itself once
		// they are out, so that the goodbye follows them.
		c.state.set(finishLater)
		c.mu.Unlock()
		return
	}
	if !c.state.has(lingering) && !c.sayGoodbyeLocked(time.Now().UnixNano()) {
		// The epoll loop writes the rest as the socket takes it, and calls finish again.
		c.mu.Unlock()
		return
	}
	c.state.set(finished)
	sub := c.sub
	c.sub = nil
	reason := c.reason
	c.mu.Unlock()
	p.remove(c)
	_ = unix.Close(c.fd)
	p.srv.forget(&c.streamBase, sub, reason)
}

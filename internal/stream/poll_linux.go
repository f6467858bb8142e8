//go:build linux

package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// buckets spreads heartbeat work: every tick the sweeper visits one bucket, so each stream is
// looked at once per heartbeat interval and the writes are spread across it.
const buckets = 16

// maxInput is how much a client may send on a stream after its request before it is cut off:
// an SSE client sends nothing, so anything more is misuse.
const maxInput = 16 << 10

var (
	chunkedHeartbeat = wire.Chunk(wire.Heartbeat)
	idleEvents       = uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	stalledEvents    = idleEvents | unix.EPOLLOUT
)

// poller owns the taken-over streams: an epoll set that reports hang-ups and writability,
// a sweeper for heartbeats, write deadlines and lifetimes, and a closer.
type poller struct {
	srv  *Server
	epfd int

	mu      sync.RWMutex
	conns   [buckets]map[uint64]*pollStream // guarded by mu
	stalled map[*pollStream]struct{}        // guarded by mu
	stopped bool                            // guarded by mu: run has ended; epfd takes no more changes

	closeMu   sync.Mutex
	closeQ    []*pollStream // guarded by closeMu
	closeWake chan struct{}
}

// pollStream is a taken-over HTTP/1.1 stream. It has no goroutine: publishers write to it
// directly with non-blocking writes; what the socket cannot take now stays referenced (never
// copied) in out, and pending holds only the newest message per channel behind it.
type pollStream struct {
	streamBase
	p  *poller
	nc net.Conn
	fd int

	mu          sync.Mutex
	out         []byte         // unwritten rest of the frame being written; nil when idle
	pending     []*hub.Message // newest message per channel waiting behind out
	stalledAt   int64          // unix nanos when out became non-nil
	lastWrite   int64          // unix nanos of the last completed write
	input       int            // bytes the client has sent after its request
	closing     bool
	finished    bool // the close was carried out (finish is idempotent)
	opening     bool // the response headers are not written yet: Offer only fills pending
	finishLater bool // the closer found it opening; the handler finishes the close
	reason      string
	retry       time.Duration
}

func newPoller(s *Server) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &poller{srv: s, epfd: fd, stalled: make(map[*pollStream]struct{}), closeWake: make(chan struct{}, 1)}
	for i := range p.conns {
		p.conns[i] = make(map[uint64]*pollStream)
	}
	return p, nil
}

func epollEvent(id uint64, events uint32) *unix.EpollEvent {
	// The event carries the stream id, not the fd: an fd number is reused as soon as it is
	// closed, an id never is, so a late event can never reach the wrong stream.
	return &unix.EpollEvent{Events: events, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
}

func (p *poller) lookup(id uint64) *pollStream {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.conns[id%buckets][id]
}

// serveTakeover writes the response headers itself and hands the connection to the poller;
// the handler goroutine (and net/http's buffers) are gone once it returns.
func (s *Server) serveTakeover(w http.ResponseWriter, r *http.Request, b *streamBase, channels []string, floor hub.Version) {
	cors := corsHeaderLines(w.Header())
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable after all (a wrapped writer): serve it the ordinary way.
		s.serveLoop(w, r, b, channels, floor)
		return
	}
	b.protocol = protoHTTP1
	fd, ok := socketFD(nc)
	if !ok || brw.Reader.Buffered() > 0 {
		// Not a plain socket, or the client pipelined bytes after its request: not a
		// well-behaved SSE client; refuse rather than guess.
		_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, _ = nc.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 41\r\n\r\n{\"error\":\"unexpected data after request\"}"))
		_ = nc.Close()
		s.unadmit(b)
		s.metrics.opens.WithLabelValues("400").Inc()
		return
	}
	if r.Context().Value(tunedKey{}) == nil {
		s.setUserTimeout(fd) // not accepted through ConnContext (an embedding server)
	}
	ps := &pollStream{
		streamBase: *b,
		p:          s.poller,
		nc:         nc,
		fd:         fd,
		pending:    make([]*hub.Message, len(channels)),
		lastWrite:  time.Now().UnixNano(),
		opening:    true,
	}
	// Registered before epoll can report a hang-up: the closer's forget must find the
	// stream in the registry, or a stale entry would outlive it.
	s.register(ps)
	if err := s.poller.add(ps); err != nil {
		if !errors.Is(err, errStopped) {
			s.log.Error("epoll add failed", "err", err)
		}
		ps.mu.Lock()
		ps.opening = false // nothing will be written: let finish close it now
		ps.closeLocked(CloseDrain, 0)
		ps.mu.Unlock()
		s.poller.finish(ps) // the closer may be gone; finish is idempotent
		return
	}
	sub, seed := s.subscribe(context.WithoutCancel(r.Context()), ps, channels, floor)
	ps.mu.Lock()
	closed := ps.closing
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
		ps.opening = false
		later := ps.finishLater
		ps.mu.Unlock()
		if later {
			s.poller.finish(ps)
		}
		return
	}
	// Subscribed before the headers go out: once a client sees 200, nothing published after
	// that can miss it. Until then Offer only fills pending, which goes out right after.
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n" +
		"Connection: keep-alive\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n" + cors + "\r\n"
	_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	_, err = nc.Write(append([]byte(head), chunkedHeartbeat...))
	_ = nc.SetWriteDeadline(time.Time{})
	ps.mu.Lock()
	ps.opening = false
	if err != nil {
		ps.closeLocked(CloseClient, 0)
	} else if !ps.closing {
		ps.flushPendingLocked(time.Now().UnixNano())
	}
	later := ps.finishLater
	ps.mu.Unlock()
	if later {
		s.poller.finish(ps)
	}
	if err != nil || later {
		return
	}
	seed()
	if s.draining.Load() {
		ps.close(CloseDrain, s.retryJitter())
	}
}

func socketFD(nc net.Conn) (int, bool) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if raw.Control(func(f uintptr) { fd = int(f) }) != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// add puts a stream under epoll. A stream already closing (revoked while opening) is left
// out: its closer may have run, and its fd number may already belong to another socket.
func (p *poller) add(ps *pollStream) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closing {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return errStopped
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, ps.fd, epollEvent(ps.id, idleEvents)); err != nil {
		return err
	}
	p.conns[ps.id%buckets][ps.id] = ps
	return nil
}

// errStopped: the poller's Run has ended; a stream can no longer be taken over.
var errStopped = errors.New("stream poller stopped")

// ctl changes the epoll set unless the poller has stopped (its epoll fd may be closed, and
// its number reused).
func (p *poller) ctl(op, fd int, ev *unix.EpollEvent) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.stopped {
		_ = unix.EpollCtl(p.epfd, op, fd, ev)
	}
}

// Offer implements hub.Sink. It writes at once when the socket is idle; otherwise the message
// replaces any older pending one of its channel.
func (c *pollStream) Offer(idx int, m *hub.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if c.out != nil || c.opening {
		if c.pending[idx] != nil {
			c.p.srv.metrics.coalesced.Inc()
		}
		c.pending[idx] = m
		return
	}
	if c.writeLocked(m.Chunk, time.Now().UnixNano()) {
		c.p.srv.wrote(m, len(m.Chunk))
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
func failReason(err error) string {
	if errors.Is(err, unix.ETIMEDOUT) {
		return CloseSlow
	}
	return CloseClient
}

// socketReason classifies why epoll reported an error or hang-up on the stream's socket.
func (c *pollStream) socketReason() string {
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
	if c.closing || c.out == nil {
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
		c.p.srv.wrote(m, len(m.Chunk))
		if c.out != nil {
			return false
		}
	}
	return true
}

// watch arms or disarms writability events for a stream and tracks it in the stalled set
// the sweeper checks write deadlines on.
func (p *poller) watch(c *pollStream, stalled bool) {
	ev := idleEvents
	if stalled {
		ev = stalledEvents
	}
	p.ctl(unix.EPOLL_CTL_MOD, c.fd, epollEvent(c.id, ev))
	p.mu.Lock()
	if stalled {
		p.stalled[c] = struct{}{}
	} else {
		delete(p.stalled, c)
	}
	p.mu.Unlock()
}

// readable consumes what a client sent. An SSE client sends nothing after its request, so
// EOF means it left, and data is discarded up to a small limit.
func (c *pollStream) readable() {
	var buf [512]byte
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closing {
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

// beat writes a heartbeat if the stream has been quiet for the interval, and closes streams
// past their lifetime.
func (c *pollStream) beat(now int64, quiet int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if !c.expires.IsZero() && now >= c.expires.UnixNano() {
		c.closeLocked(CloseLifetime, c.p.srv.retryJitter())
		return
	}
	if c.out != nil || c.opening || now-c.lastWrite < quiet {
		return
	}
	if c.writeLocked(chunkedHeartbeat, now) {
		c.p.srv.metrics.beats.Inc()
		c.p.srv.metrics.bytes.Add(float64(len(chunkedHeartbeat)))
	}
}

func (c *pollStream) close(reason string, retry time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(reason, retry)
}

// closeLocked marks the stream closing and queues it for the closer: the caller may hold a
// hub channel lock, and unsubscribing needs that lock, so the close itself happens elsewhere.
func (c *pollStream) closeLocked(reason string, retry time.Duration) {
	if c.closing {
		return
	}
	c.closing, c.reason, c.retry = true, reason, retry
	p := c.p
	// Out of epoll at once: a hung-up socket keeps reporting until it is closed, and the
	// closer may be a while behind. The fd is still open here, so its number is still ours.
	p.ctl(unix.EPOLL_CTL_DEL, c.fd, nil)
	p.closeMu.Lock()
	p.closeQ = append(p.closeQ, c)
	p.closeMu.Unlock()
	select {
	case p.closeWake <- struct{}{}:
	default:
	}
}

// finish is the closer's half of a close: a polite goodbye if the socket can take it, then
// the close, and the bookkeeping.
func (p *poller) finish(c *pollStream) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	if c.opening {
		// Its handler is writing the response headers: it finishes the close itself once
		// they are out, so that the goodbye follows them.
		c.finishLater = true
		c.mu.Unlock()
		return
	}
	c.finished = true
	switch {
	case c.out != nil:
	case c.retry > 0:
		// The retry: frame, and then no chunked terminator: clients must see the stream
		// fail and come back. Some (r3labs/sse) treat a clean end as "done" and never
		// reconnect.
		_, _ = unix.Write(c.fd, wire.Chunk(wire.Retry(c.retry)))
		p.srv.metrics.frames.WithLabelValues(frameRetry).Inc()
	case c.reason == CloseRevoked:
		// A clean end: the key is gone, reconnecting would only earn a 401.
		_, _ = unix.Write(c.fd, wire.ChunkTerminator)
	}
	sub := c.sub
	c.sub = nil
	reason := c.reason
	c.mu.Unlock()
	p.mu.Lock()
	delete(p.conns[c.id%buckets], c.id)
	delete(p.stalled, c)
	p.mu.Unlock()
	_ = c.nc.Close()
	p.srv.forget(&c.streamBase, sub, reason)
}

// run is the poller's event loop; it owns the sweeper and closer goroutines and waits for
// them. When ctx ends, streams still open are closed.
func (p *poller) run(ctx context.Context) error {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() { defer wg.Done(); p.closer(stop) }()
	go func() { defer wg.Done(); p.sweeper(stop) }()
	defer func() {
		// Stopped first: a stream still being handed over now fails to be added and is
		// finished by its handler, instead of joining a poller nobody runs.
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		p.closeAll()
		close(stop)
		wg.Wait()
		p.drainCloseQ()
		_ = unix.Close(p.epfd)
	}()
	events := make([]unix.EpollEvent, 512)
	for ctx.Err() == nil {
		n, err := unix.EpollWait(p.epfd, events, 250)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("epoll wait: %w", err)
		}
		for _, ev := range events[:n] {
			c := p.lookup(uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32)
			if c == nil {
				continue
			}
			if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
				c.mu.Lock()
				if !c.closing {
					c.closeLocked(c.socketReason(), 0)
				}
				c.mu.Unlock()
				continue
			}
			if ev.Events&unix.EPOLLIN != 0 {
				c.readable()
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				c.flush()
			}
		}
	}
	return nil
}

func (p *poller) closeAll() {
	p.mu.RLock()
	var all []*pollStream
	for i := range p.conns {
		for _, c := range p.conns[i] {
			all = append(all, c)
		}
	}
	p.mu.RUnlock()
	for _, c := range all {
		c.close(CloseDrain, p.srv.retryJitter())
	}
}

func (p *poller) closer(stop <-chan struct{}) {
	for {
		select {
		case <-p.closeWake:
			p.drainCloseQ()
		case <-stop:
			return
		}
	}
}

func (p *poller) drainCloseQ() {
	for {
		p.closeMu.Lock()
		q := p.closeQ
		p.closeQ = nil
		p.closeMu.Unlock()
		if len(q) == 0 {
			return
		}
		for _, c := range q {
			p.finish(c)
		}
	}
}

// sweeper visits one bucket per tick for heartbeats and lifetimes, and every tick checks the
// (normally tiny) stalled set for write deadlines.
func (p *poller) sweeper(stop <-chan struct{}) {
	hb := p.srv.cfg.Heartbeat
	tick := min(hb/buckets, time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	var batch []*pollStream
	for b := 0; ; b = (b + 1) % buckets {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		deadline := now - int64(p.srv.cfg.WriteTimeout)
		batch = batch[:0]
		p.mu.RLock()
		for c := range p.stalled {
			batch = append(batch, c)
		}
		p.mu.RUnlock()
		for _, c := range batch {
			c.mu.Lock()
			if c.out != nil && c.stalledAt < deadline {
				c.closeLocked(CloseSlow, 0)
			}
			c.mu.Unlock()
		}
		batch = batch[:0]
		p.mu.RLock()
		for _, c := range p.conns[b] {
			batch = append(batch, c)
		}
		p.mu.RUnlock()
		quiet := int64(hb - tick)
		for _, c := range batch {
			c.beat(now, quiet)
		}
		clear(batch)
	}
}

// ConnContext is for http.Server.ConnContext: it arms TCP_USER_TIMEOUT on every accepted
// connection, so that streams on every path (taken over, HTTP/2, TLS) find half-open and
// non-reading peers. It changes nothing in ctx.
//
// On the net/http path the kernel's verdict arrives as a cancelled request context, which
// cannot be told apart from a client hanging up (the socket's error is consumed by net/http's
// background read), so such closes count as "client"; taken-over streams see the error
// themselves and count "slow".
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = nc.NetConn()
	}
	if fd, ok := socketFD(c); ok {
		s.setUserTimeout(fd)
		return context.WithValue(ctx, tunedKey{}, true)
	}
	return ctx
}

// tunedKey marks a connection's context once ConnContext has tuned its socket.
type tunedKey struct{}

// setUserTimeout tunes a stream socket.
//
// TCP_USER_TIMEOUT: half-open peers (a phone that left coverage) never acknowledge, and
// non-reading peers keep a zero window; with it the kernel fails such a socket once data has
// waited for the write timeout, instead of retransmitting for a quarter of an hour.
//
// SO_SNDBUF: a fixed send buffer instead of the kernel's autotuning, which on loopback (or
// behind a same-host proxy) hands every socket megabytes at once. With it a client that
// stops reading fills its buffer after a few frames, and from then on holds only its newest
// pending event, instead of pinning megabytes of kernel memory per slow client.
func (s *Server) setUserTimeout(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(s.cfg.WriteTimeout.Milliseconds()))
	if s.cfg.SendBuffer > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, s.cfg.SendBuffer)
	}
}

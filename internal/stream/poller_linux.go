//go:build linux

package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var (
	idleEvents    = uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	stalledEvents = idleEvents | unix.EPOLLOUT
)

// errStopped: the poller's run has ended; a stream can no longer be taken over.
var errStopped = errors.New("stream poller stopped")

// poller owns the taken-over streams once their opening is done. Its run goroutine waits on
// an epoll set that reports hang-ups and writability, and owns two goroutines it waits for: a
// sweeper that runs the streams' timers (heartbeats, write deadlines, lifetimes) as they come
// due in the timing wheel, and a closer that carries out closes (unsubscribing from the hub,
// which a publisher holding a hub lock cannot do itself).
//
// Lock order: a stream's mu before the poller's mu, the wheel's mu or closeMu, never the
// other way round; the poller's goroutines copy what they need out of those locks before
// they lock a stream.
type poller struct {
	srv   *Server // immutable
	epfd  int     // immutable; closed when run ends (after stopped is set)
	wheel *wheel  // immutable pointer; the streams' timers

	mu      sync.RWMutex
	conns   map[uint64]*pollStream // guarded by mu: every stream under epoll, by id
	stopped bool                   // guarded by mu: run has ended; epfd takes no more changes

	closeMu   sync.Mutex
	closeQ    []*pollStream // guarded by closeMu: closes for the closer to carry out
	closeWake chan struct{} // capacity 1: "closeQ grew"
}

func newPoller(s *Server) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return &poller{
		srv:       s,
		epfd:      fd,
		wheel:     newWheel(s.cfg.Heartbeat, s.cfg.WriteTimeout, time.Now()),
		conns:     make(map[uint64]*pollStream),
		closeWake: make(chan struct{}, 1),
	}, nil
}

func epollEvent(id uint64, events uint32) *unix.EpollEvent {
	// The event carries the stream id, not the fd: an fd number is reused as soon as it is
	// closed, an id never is, so a late event can never reach the wrong stream.
	return &unix.EpollEvent{Events: events, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
}

func (p *poller) lookup(id uint64) *pollStream {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.conns[id]
}

// add puts a stream under epoll. A stream already closing (revoked while opening) is left
// out: its closer may have run, and its fd number may already belong to another socket.
func (p *poller) add(ps *pollStream) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.state.has(closing) {
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
	p.conns[ps.id] = ps
	return nil
}

// remove forgets a finished stream.
func (p *poller) remove(c *pollStream) {
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
	p.wheel.remove(c)
}

// ctl changes the epoll set unless the poller has stopped (its epoll fd may be closed, and
// its number reused).
func (p *poller) ctl(op, fd int, ev *unix.EpollEvent) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.stopped {
		_ = unix.EpollCtl(p.epfd, op, fd, ev)
	}
}

// watch arms or disarms writability events for a stream; a stream that stalls is brought
// forward in the wheel to its write deadline. The caller holds c.mu.
func (p *poller) watch(c *pollStream, stalled bool) {
	ev := idleEvents
	if stalled {
		ev = stalledEvents
	}
	p.ctl(unix.EPOLL_CTL_MOD, c.fd, epollEvent(c.id, ev))
	if stalled {
		p.wheel.schedule(c, c.stalledAt+int64(p.srv.cfg.WriteTimeout), true)
	}
}

// linger puts a closing stream back under epoll, for writability only, so that the epoll
// loop can write the rest of its goodbye (closeLocked took it out). It reports false when
// the poller has stopped: nobody would finish it.
func (p *poller) linger(c *pollStream) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.stopped {
		return false
	}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, epollEvent(c.id, unix.EPOLLOUT)) == nil
}

// enqueueClose hands a closing stream to the closer; it never blocks.
func (p *poller) enqueueClose(c *pollStream) {
	p.closeMu.Lock()
	p.closeQ = append(p.closeQ, c)
	p.closeMu.Unlock()
	select {
	case p.closeWake <- struct{}{}:
	default:
	}
}

// run is the poller's event loop; it owns the sweeper and closer goroutines and waits for
// them. When ctx ends, streams still open are closed.
func (p *poller) run(ctx context.Context) error {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { p.closer(stop) })
	wg.Go(func() { p.sweeper(stop) })
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
				switch {
				case c.state.has(lingering):
					c.endGoodbyeLocked() // the client is gone: nobody to say goodbye to
				case !c.state.has(closing):
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

// closeAll closes every stream when run ends, and ends the goodbyes still being written:
// once stopped, nothing would finish them.
func (p *poller) closeAll() {
	p.mu.RLock()
	all := make([]*pollStream, 0, len(p.conns))
	for _, c := range p.conns {
		all = append(all, c)
	}
	p.mu.RUnlock()
	for _, c := range all {
		c.mu.Lock()
		if c.state.has(lingering) {
			c.endGoodbyeLocked()
		} else {
			c.closeLocked(CloseDrain, p.srv.retryJitter())
		}
		c.mu.Unlock()
	}
}

// closer carries out queued closes until stop is closed.
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
			c.finish()
		}
	}
}

// sweeper runs, every tick of the wheel, the timers of the streams that came due, until stop
// is closed.
func (p *poller) sweeper(stop <-chan struct{}) {
	t := time.NewTicker(time.Duration(p.wheel.tick))
	defer t.Stop()
	var batch []*pollStream
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		batch = p.wheel.due(now, batch[:0])
		for _, c := range batch {
			c.timers(now)
		}
		clear(batch)
	}
}

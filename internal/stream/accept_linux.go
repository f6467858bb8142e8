//go:build linux

package stream

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// plainAccept is the plain accept path, which the listener's accepting goroutine (net/http's
// Serve) runs in Accept. It accepts a connection as a bare descriptor that the Go runtime
// never registers, and reads what has arrived on it. If that is a whole plain HTTP/1.1 GET of
// the streams' path (parsePlainGet), the stream is admitted and handed to the poller right
// there: no net.Conn, no net/http connection, goroutine, buffers, request or header map, and
// the response head goes out as the stream's first write. Anything else, another method,
// path or form, whatever a hostile client sends, goes to net/http as a net.Conn that returns
// what was read first, as if nothing had been.
//
// A connection whose request has not arrived yet (it is accepted as soon as the handshake
// completes, and in a connect storm the next accept comes within microseconds) waits, for up
// to plainWait, in a short list that is read again before each accept, and then goes to
// net/http, which waits for its request under ReadHeaderTimeout.
//
// The work per stream (a parse, a key lookup, the admission, a hub subscription, one write)
// is what a handler goroutine would do after net/http's. Two kinds of stream are opened on a
// goroutine of their own instead, so that nothing makes the accepting goroutine wait: one
// whose channels are being fanned out to (its subscription would wait for the fan-out;
// openPlain), and, with a key quota, which asks Redis, every one.
type plainAccept struct {
	s    *Server
	addr net.Addr
	path string
	// file is a duplicate of the listening socket that the runtime's poller can wait on,
	// with a deadline (a net.TCPListener's raw access cannot wait); raw is its raw access.
	file *os.File
	raw  syscall.RawConn
	// inherited: the listening socket carried the options accepted sockets inherit
	// (tuneListening) before it listened (Server.Listen).
	inherited bool

	mu       sync.Mutex    // held by accept for its whole run: one accepting goroutine at a time
	waiting  []waitingConn // guarded by mu: in the order they are due
	ready    []net.Conn    // guarded by mu: connections for net/http, handed out one per accept
	deadline time.Time     // guarded by mu: file's read deadline
	closed   bool          // guarded by mu
}

// waitingConn is an accepted connection whose request had not arrived.
type waitingConn struct {
	fd    int
	peer  netip.Addr
	until time.Time
}

// plainWait is how long an accepted connection may wait for its request on the plain path
// before it goes to net/http: far longer than a client takes to send a request right after
// connecting, far shorter than anything a client would notice.
const plainWait = 5 * time.Millisecond

// newPlainAccept sets up the plain accept path on l, or returns nil where it cannot (l is not a
// TCP listener, or out of descriptors); inherited as in plainAccept.
func newPlainAccept(s *Server, l net.Listener, path string, inherited bool) *plainAccept {
	f := listeningFile(l)
	if f == nil {
		return nil
	}
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil
	}
	return &plainAccept{s: s, addr: l.Addr(), path: path, file: f, raw: raw, inherited: inherited}
}

// close stops accept (closing the duplicate ends its wait) and hangs up on the connections
// it was holding.
func (p *plainAccept) close() {
	_ = p.file.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, w := range p.waiting {
		_ = unix.Close(w.fd)
	}
	for _, c := range p.ready {
		_ = c.Close()
	}
	p.waiting, p.ready = nil, nil
}

// accept returns the next connection for net/http, opening every plain stream request it
// accepts on the way.
func (p *plainAccept) accept() (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return nil, net.ErrClosed
		}
		p.readWaiting()
		if len(p.ready) > 0 {
			c := p.ready[0]
			p.ready[0] = nil
			p.ready = p.ready[1:]
			return c, nil
		}
		fd, peer, err := p.acceptFD()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // the oldest waiting connection is due
		}
		if err != nil {
			return nil, err
		}
		p.s.tuneAccepted(fd, p.inherited)
		if err := p.serve(fd, peer, time.Time{}); err != nil {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: p.addr, Err: err}
		}
	}
}

// readWaiting reads the waiting connections again: each whose request arrived is served,
// and each whose wait is over goes to net/http.
func (p *plainAccept) readWaiting() {
	if len(p.waiting) == 0 {
		return
	}
	waiting := p.waiting
	p.waiting = nil
	for i, w := range waiting {
		if err := p.serve(w.fd, w.peer, w.until); err != nil {
			// Out of descriptors for net/http's copy; the rest are read again on the next
			// accept, which net/http makes after backing off.
			p.s.log.Warn("handing a connection to net/http failed", "err", err)
			p.waiting = append(p.waiting, waiting[i+1:]...)
			return
		}
	}
}

// acceptFD accepts a connection as a non-blocking, close-on-exec descriptor, waiting for one
// in the runtime's poller, until the first waiting connection is due. Its errors are as
// net.TCPListener.Accept's: net/http's Serve backs off after a temporary one (out of
// descriptors) and returns after the listener is closed.
func (p *plainAccept) acceptFD() (int, netip.Addr, error) {
	var deadline time.Time
	if len(p.waiting) > 0 {
		deadline = p.waiting[0].until
	}
	if !deadline.Equal(p.deadline) {
		if err := p.file.SetReadDeadline(deadline); err != nil {
			return -1, netip.Addr{}, err
		}
		p.deadline = deadline
	}
	fd, sa, err := -1, unix.Sockaddr(nil), error(nil)
	rerr := p.raw.Read(func(lfd uintptr) bool {
		for {
			fd, sa, err = unix.Accept4(int(lfd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			switch {
			case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
				// Interrupted, or a connection reset while it waited: the next one.
			case errors.Is(err, unix.EAGAIN):
				return false // none yet: wait until the listener is readable
			default:
				return true
			}
		}
	})
	switch {
	case rerr != nil:
		return -1, netip.Addr{}, rerr // closed, or the deadline
	case err != nil:
		return -1, netip.Addr{}, &net.OpError{Op: "accept", Net: "tcp", Addr: p.addr, Err: os.NewSyscallError("accept4", err)}
	}
	var peer netip.Addr
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		peer = netip.AddrFrom4(a.Addr)
	case *unix.SockaddrInet6:
		peer = netip.AddrFrom16(a.Addr).Unmap()
	}
	return fd, peer, nil
}

// serve reads fd's request: a plain stream request is opened; a connection with nothing to
// read yet waits until until (zero: a new connection, plainWait from now); anything else, and
// a connection whose wait is over, goes to the ready list for net/http. serve owns fd; an
// error is net/http's copy failing (out of descriptors), after which fd is closed.
func (p *plainAccept) serve(fd int, peer netip.Addr, until time.Time) error {
	s := p.s
	var buf [maxPlainRequest]byte
	n, err := unix.Read(fd, buf[:])
	var pre []byte
	switch {
	case err == nil && n > 0:
		if g, ok := parsePlainGet(buf[:n], p.path); ok {
			s.metrics.plain.Inc()
			ip := limitKey(s.forwardedClient(peer, g.forwardedFor))
			if s.quota != nil {
				go s.openPlain(fd, g, ip, true) // the quota asks Redis
			} else {
				s.openPlain(fd, g, ip, false)
			}
			return nil
		}
		pre = bytes.Clone(buf[:n])
	case errors.Is(err, unix.EAGAIN) && (until.IsZero() || time.Now().Before(until)):
		if until.IsZero() {
			until = time.Now().Add(plainWait)
		}
		p.waiting = append(p.waiting, waitingConn{fd, peer, until})
		return nil
	}
	// Not a plain stream request, its request is late, or the client is already gone:
	// net/http reads the rest, or finds out.
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f) // a duplicate, which the runtime registers
	_ = f.Close()
	if err != nil {
		return err
	}
	p.ready = append(p.ready, &trackedConn{Conn: c, pre: pre, tuned: true})
	return nil
}

// openPlain admits a stream read by the plain accept path and hands it to the poller, or
// writes its refusal and hangs up. Unless it may wait (it runs on a goroutine of its own),
// a stream whose channels are being fanned out to is handed to the poller on a goroutine of
// its own: its subscription waits for the fan-out, and the accepting goroutine must not.
func (s *Server) openPlain(fd int, g plainGet, ip netip.Addr, mayWait bool) {
	cors := s.corsLines(g.origin)
	b, channels, from, no := s.admitStream(context.Background(), g.query, g.lastEventID, ip)
	if no != nil {
		// A fresh socket's send buffer takes the few hundred bytes whole, without blocking.
		_, _ = unix.Write(fd, rawRefusal(no, cors))
		_ = unix.Close(fd)
		s.metrics.refused(no.status)
		return
	}
	b.protocol = protoHTTP1
	head := plainHead
	if cors != "" {
		head = responseHead(cors)
	}
	if !mayWait && s.hub.Busy(channels) {
		go s.poller.takeOver(fd, b, channels, from, head)
		return
	}
	s.poller.takeOver(fd, b, channels, from, head)
}

package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
)

// ConnContext is for http.Server.ConnContext: it tunes every accepted connection's socket
// (see tuneSocket) that the plain accept path has not tuned already, so that streams on every
// path (taken over, HTTP/2, TLS) find half-open and non-reading peers, and remembers a
// connection accepted through Listener so that its stream can learn why it failed (see
// kernelTimedOut). It changes nothing else in ctx.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*trackedConn); ok {
		ctx = context.WithValue(ctx, trackedKey{}, tc)
		if tc.tuned {
			return context.WithValue(ctx, tunedKey{}, true)
		}
	}
	if fd, ok := socketFD(c); ok {
		s.tuneSocket(fd)
		return context.WithValue(ctx, tunedKey{}, true)
	}
	return ctx
}

// tunedKey marks a connection's context once ConnContext has tuned its socket.
type tunedKey struct{}

// trackedKey holds a connection's *trackedConn in its context.
type trackedKey struct{}

// Listener wraps the listener streams are served on (by an http.Server whose ConnContext is
// the server's), for two things.
//
// The plain accept path: a plain HTTP/1.1 GET of path that has arrived whole with its
// connection is opened on the accepting goroutine, without net/http (accept_linux.go);
// every other request, and every request when path is "" or there is no poller, goes to
// net/http as it came.
//
// Read errors: on the net/http path, a stream cut by the kernel's TCP_USER_TIMEOUT (a client
// that stopped reading, or vanished) is counted "slow" like on the taken-over path, not
// "client": net/http's background read consumes the socket's error and only cancels the
// request's context, so each connection keeps its first read error for the stream to look
// at.
func (s *Server) Listener(l net.Listener, path string) net.Listener {
	return s.listener(l, path, false)
}

// Listen opens a TCP listener on addr for streams, as Listener wraps one. The socket options
// accepted sockets inherit (TCP_NODELAY, SO_SNDBUF) are set before it listens, so that the
// plain accept path need not set them per connection, and no connection misses them. It has
// no kernel keepalive probes: heartbeats and TCP_USER_TIMEOUT find dead peers sooner, and
// every accepted connection saves the setsockopt calls (connect storms are syscall-bound).
func (s *Server) Listen(ctx context.Context, addr, path string) (net.Listener, error) {
	plain := path != "" && s.poller != nil
	inherited := false
	lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
		if plain {
			return c.Control(func(fd uintptr) { inherited = s.tuneListening(int(fd)) })
		}
		return nil
	}}
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return s.listener(l, path, inherited), nil
}

// listener wraps l; inherited: l's sockets carry the options tuneListening sets.
func (s *Server) listener(l net.Listener, path string, inherited bool) net.Listener {
	tl := trackingListener{Listener: l}
	if path != "" && s.poller != nil {
		tl.plain = newPlainAccept(s, l, path, inherited)
	}
	return tl
}

type trackingListener struct {
	net.Listener
	plain *plainAccept // nil: no plain accept path
}

func (l trackingListener) Accept() (net.Conn, error) {
	if l.plain != nil {
		return l.plain.accept()
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c}, nil
}

// Close closes the listener, and the plain accept path's duplicate of it, which would
// otherwise keep the socket listening.
func (l trackingListener) Close() error {
	if l.plain != nil {
		l.plain.close()
	}
	return l.Listener.Close()
}

// trackedConn is an accepted connection that remembers its first read error.
//
// Its pre and tuned are set by the plain accept path before net/http has the connection, and
// from then on read only by net/http's connection goroutine.
type trackedConn struct {
	net.Conn
	readErr atomic.Pointer[error] // set once, by the first failed Read
	pre     []byte                // what the plain accept path read and left to net/http
	tuned   bool                  // the plain accept path has tuned the socket
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		c.readErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

// NetConn returns the wrapped connection (as *tls.Conn does), for socket options and the
// takeover.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes a TCP connection, which net/http does before closing after an error.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// kernelTimedOut reports whether the connection of ctx (a request's context) failed because
// the kernel gave up on data its peer did not acknowledge (ETIMEDOUT).
func kernelTimedOut(ctx context.Context) bool {
	tc, _ := ctx.Value(trackedKey{}).(*trackedConn)
	if tc == nil {
		return false
	}
	err := tc.readErr.Load()
	return err != nil && errors.Is(*err, syscall.ETIMEDOUT)
}

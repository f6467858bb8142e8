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
// (see tuneSocket), so that streams on every path (taken over, HTTP/2, TLS) find half-open
// and non-reading peers, and remembers a connection accepted through Listener so that its
// stream can learn why it failed (see kernelTimedOut). It changes nothing else in ctx.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*trackedConn); ok {
		ctx = context.WithValue(ctx, trackedKey{}, tc)
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

// Listener wraps the listener streams are served on so that, on the net/http path, a
// stream cut by the kernel's TCP_USER_TIMEOUT (a client that stopped reading, or vanished)
// is counted "slow" like on the taken-over path, not "client": net/http's background read
// consumes the socket's error and only cancels the request's context, so each connection
// keeps its first read error for the stream to look at. The server's ConnContext must be
// the http.Server's.
func (s *Server) Listener(l net.Listener) net.Listener { return trackingListener{l} }

type trackingListener struct{ net.Listener }

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c}, nil
}

// trackedConn is an accepted connection that remembers its first read error.
type trackedConn struct {
	net.Conn
	readErr atomic.Pointer[error] // set once, by the first failed Read
}

func (c *trackedConn) Read(p []byte) (int, error) {
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

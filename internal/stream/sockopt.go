package stream

import (
	"context"
	"net"
)

// ConnContext is for http.Server.ConnContext: it tunes every accepted connection's socket
// (see tuneSocket), so that streams on every path (taken over, HTTP/2, TLS) find half-open
// and non-reading peers. It changes nothing else in ctx.
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
		s.tuneSocket(fd)
		return context.WithValue(ctx, tunedKey{}, true)
	}
	return ctx
}

// tunedKey marks a connection's context once ConnContext has tuned its socket.
type tunedKey struct{}

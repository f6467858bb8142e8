//go:build linux

package stream

import (
	"net"

	"golang.org/x/sys/unix"
)

// socketFD returns the descriptor of a TCP connection's socket.
func socketFD(nc net.Conn) (int, bool) {
	if w, ok := nc.(*trackedConn); ok {
		nc = w.Conn
	}
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

// tuneSocket sets a stream socket's options, once per connection.
//
// TCP_USER_TIMEOUT: half-open peers (a phone that left coverage) never acknowledge, and
// non-reading peers keep a zero window; with it the kernel fails such a socket once data has
// waited for the write timeout, instead of retransmitting for a quarter of an hour.
//
// SO_SNDBUF: a fixed send buffer instead of the kernel's autotuning, which on loopback (or
// behind a same-host proxy) hands every socket megabytes at once. With it a client that
// stops reading fills its buffer after a few frames, and from then on holds only its newest
// pending event, instead of pinning megabytes of kernel memory per slow client.
func (s *Server) tuneSocket(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(s.cfg.WriteTimeout.Milliseconds()))
	if s.cfg.SendBuffer > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, s.cfg.SendBuffer)
	}
}

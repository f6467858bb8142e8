//go:build linux

package stream

import (
	"errors"
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

// detach takes a hijacked TCP connection's socket away from the Go runtime: it returns a
// duplicate of its descriptor (close-on-exec, and non-blocking like the original: the two
// share the flag) and closes the connection, which takes the original out of the runtime's
// netpoller. A taken-over stream then holds an int instead of a net.Conn: no netFD, no
// addresses, no runtime poll descriptor, and the runtime's poller is not woken by the
// stream's socket (see the package doc for what it saved). The caller owns the returned
// descriptor and closes it with unix.Close.
func detach(nc net.Conn) (int, error) {
	if w, ok := nc.(*trackedConn); ok {
		nc = w.Conn
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := raw.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, dupErr
	}
	_ = tc.Close()
	return fd, nil
}

//go:build linux

package stream

import (
	"errors"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpConn returns the TCP connection under nc (an accepted connection, maybe tracked) and its
// raw access.
func tcpConn(nc net.Conn) (*net.TCPConn, syscall.RawConn, error) {
	if w, ok := nc.(*trackedConn); ok {
		nc = w.Conn
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil, nil, errors.New("not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	return tc, raw, err
}

// socketFD returns the descriptor of a TCP connection's socket.
func socketFD(nc net.Conn) (int, bool) {
	_, raw, err := tcpConn(nc)
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

// tuneListening sets on a listening socket what the sockets it accepts inherit from it:
// TCP_NODELAY (net/http's connections have it, set by the Go runtime per connection; a frame
// must not wait for the previous one's acknowledgement) and SO_SNDBUF (see tuneSocket). It
// reports whether both were set; if so, an accepted socket needs only tuneAccepted.
// (TCP_USER_TIMEOUT cannot be set on a listening socket.)
func (s *Server) tuneListening(fd int) bool {
	if unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) != nil {
		return false
	}
	return s.cfg.SendBuffer <= 0 || unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, s.cfg.SendBuffer) == nil
}

// tuneAccepted sets the options of a socket accepted from a listening socket that
// tuneListening set up, or, with inherited false, every option tuneSocket and tuneListening
// would have.
func (s *Server) tuneAccepted(fd int, inherited bool) {
	if !inherited {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		s.tuneSocket(fd)
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(s.cfg.WriteTimeout.Milliseconds()))
}

// detach takes a hijacked TCP connection's socket away from the Go runtime: it returns a
// duplicate of its descriptor (close-on-exec, and non-blocking like the original: the two
// share the flag) and closes the connection, which takes the original out of the runtime's
// netpoller. A taken-over stream then holds an int instead of a net.Conn: no netFD, no
// addresses, no runtime poll descriptor, and the runtime's poller is not woken by the
// stream's socket (see the package doc for what it saved). The caller owns the returned
// descriptor and closes it with unix.Close.
func detach(nc net.Conn) (int, error) {
	tc, raw, err := tcpConn(nc)
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

// listeningFile returns a duplicate of a TCP listener's socket as a file that the runtime's
// poller can wait on (it is non-blocking: it shares the listener's flags), or nil.
func listeningFile(l net.Listener) *os.File {
	tl, ok := l.(*net.TCPListener)
	if !ok {
		return nil
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	fd, dupErr := -1, error(nil)
	if err := raw.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || dupErr != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), "listener")
}

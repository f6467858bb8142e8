// Package streamclient is the raw SSE client side the load generators' worker processes
// (loadgen, fleetload) share: they hold tens of thousands of streams each, so every stream
// is a bare net.Conn read into an sseparse.Parser, dialed from one of many loopback source
// addresses, and a connect error is counted by a short reason rather than logged.
package streamclient

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/sseparse"
)

// Dialer dials from source (nil: the kernel's choice) within timeout. It asks the kernel to
// pick the source port at connect time rather than bind time, so that many source
// addresses share the ephemeral range without EADDRINUSE; rcvBuf > 0 sets SO_RCVBUF (a
// slow consumer's small window).
func Dialer(timeout time.Duration, source net.IP, rcvBuf int) *net.Dialer {
	d := &net.Dialer{
		Timeout: timeout,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
				if serr == nil && rcvBuf > 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	if source != nil {
		d.LocalAddr = &net.TCPAddr{IP: source}
	}
	return d
}

// SourceIP returns the source address of stream i: one of n addresses counting up from
// 127.0.0.2, so each address needs at most streams/n ephemeral ports (about 28k exist per
// source and destination). n <= 0 returns nil: the kernel's choice.
func SourceIP(i, n int) net.IP {
	if n <= 0 {
		return nil
	}
	v := uint32(0x7f000002) + uint32(i%n)
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// Read feeds p what body yields until body ends. It returns p's error when the stream broke
// the protocol (the caller closes the connection), nil when the stream ended, whether by
// EOF or a read error.
func Read(body io.Reader, p *sseparse.Parser) error {
	buf := make([]byte, 512) // most frames are small; the parser carries a split line over
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if perr := p.Feed(buf[:n]); perr != nil {
				return perr
			}
		}
		if err != nil {
			return nil
		}
	}
}

// Classify turns a connect error into a short, countable reason: a run with thousands of
// failures reports a few counters, not thousands of messages. An HTTP refusal ("status
// ...", "content-type ...") is its own reason; any other error is cut to 80 bytes.
func Classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no ephemeral port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed before response"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := err.Error()
	if strings.HasPrefix(s, "status ") || strings.HasPrefix(s, "content-type") {
		return s
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

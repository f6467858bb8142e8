//go:build !linux

package stream

import "net"

// socketFD reports no descriptor: TCP_USER_TIMEOUT and takeover are Linux-only, so sockets
// are left as they are.
func socketFD(net.Conn) (int, bool) { return 0, false }

// tuneSocket does nothing here (see sockopt_linux.go).
func (s *Server) tuneSocket(int) {}

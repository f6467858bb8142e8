//go:build !linux

package stream

import (
	"errors"
	"net"
	"os"
)

// socketFD reports no descriptor: TCP_USER_TIMEOUT and takeover are Linux-only, so sockets
// are left as they are.
func socketFD(net.Conn) (int, bool) { return 0, false }

// tuneSocket does nothing here (see sockopt_linux.go).
func (s *Server) tuneSocket(int) {}

// detach is never called here: only a poller takes sockets over (sockopt_linux.go).
func detach(net.Conn) (int, error) { return -1, errors.New("stream: no takeover on this platform") }

// listeningFile is nil here: there is no plain accept path (see Listener).
func listeningFile(net.Listener) *os.File { return nil }

// tuneListening sets nothing here (see sockopt_linux.go).
func (s *Server) tuneListening(int) bool { return false }

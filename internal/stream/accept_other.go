//go:build !linux

package stream

import "net"

// plainAccept is Linux-only (it hands streams to the poller); newPlainAccept is never called
// here, since there is no poller (see Listener).
type plainAccept struct{}

func newPlainAccept(*Server, net.Listener, string, bool) *plainAccept { return nil }

func (*plainAccept) accept() (net.Conn, error) { panic("stream: no plain accept path here") }

func (*plainAccept) close() {}

package e2e

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// balancer stands in front of a lone gateway the way a load balancer stands in front of a
// fleet: clients always reach it, and it holds a new connection while no gateway listens
// (the lone gateway restarting after a drain, on the same address), dialing it again every
// 50 ms for up to 15 s, then relays bytes both ways unchanged. A real fleet has another
// instance up during a drain; a client reconnecting to a lone gateway that has not yet come
// back would be refused instead, and react-native-sse never retries a refused connection
// (docs/CLIENTS.md): a drain would then test how fast the harness restarts a process against
// the retry: jitter, not the client's reconnect. Point an SDK's sse.url at Addr.
type balancer struct {
	Addr     string
	upstream string // the gateway's host:port
}

func startBalancer(t testing.TB, gw *gateway) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{Addr: ln.Addr().String(), upstream: gw.Addr}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { b.relay(c) })
		}
	})
	return b
}

// relay connects c to the gateway and copies both ways until either side ends; a side that
// ends closes the other, so a stream the gateway cuts is cut towards the client.
func (b *balancer) relay(c net.Conn) {
	var up net.Conn
	for deadline := time.Now().Add(15 * time.Second); ; {
		var err error
		if up, err = net.DialTimeout("tcp", b.upstream, time.Second); err == nil {
			break
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	up.Close()
	c.Close()
	<-done
}

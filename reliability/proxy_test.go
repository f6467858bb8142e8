package reliability

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// freezeProxy is a TCP proxy between a gateway and Redis that can stop forwarding in the
// Redis -> gateway direction while keeping every TCP connection up and still forwarding
// gateway -> Redis: the gateway's commands reach Redis, nothing comes back. That is a
// subscription that died silently (a stuck middlebox, a half-dead NAT entry), which no
// socket error will ever report.
type freezeProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu        sync.Mutex
	frozenAll bool // freeze every connection, including new ones
	conns     map[*proxyConn]struct{}
	changed   chan struct{} // closed and replaced whenever freezing changes
	closed    bool
	wg        sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	frozen         bool // guarded by freezeProxy.mu
}

// startProxy listens on a free loopback port and forwards to target until the test ends.
func startProxy(t testing.TB, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &freezeProxy{t: t, ln: ln, target: target, conns: map[*proxyConn]struct{}{}, changed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the redis:// URL to give the gateway.
func (p *freezeProxy) URL() string { return "redis://" + p.ln.Addr().String() + "/0" }

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pc, c, s, false)
		go p.pipe(pc, s, c, true)
	}
}

// pipe copies src to dst; in the Redis -> gateway direction it holds each chunk while the
// connection is frozen (the bytes are kept, not dropped: TCP stays consistent).
func (p *freezeProxy) pipe(pc *proxyConn, src, dst net.Conn, fromRedis bool) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		pc.client.Close()
		pc.server.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromRedis && !p.waitThawed(pc) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitThawed blocks while pc is frozen; it reports false when the proxy closed meanwhile.
func (p *freezeProxy) waitThawed(pc *proxyConn) bool {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return false
		}
		if !p.frozenAll && !pc.frozen {
			p.mu.Unlock()
			return true
		}
		ch := p.changed
		p.mu.Unlock()
		<-ch
	}
}

func (p *freezeProxy) changedLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// freezeAll freezes every connection, present and future.
func (p *freezeProxy) freezeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozenAll = true
	p.changedLocked()
}

// freezeExisting freezes the connections open now; new ones pass.
func (p *freezeProxy) freezeExisting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		pc.frozen = true
	}
	p.changedLocked()
	return len(p.conns)
}

// thaw lets everything through again, including the bytes held while frozen.
func (p *freezeProxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozenAll = false
	for pc := range p.conns {
		pc.frozen = false
	}
	p.changedLocked()
}

func (p *freezeProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.changedLocked()
	for pc := range p.conns {
		pc.client.Close()
		pc.server.Close()
	}
	p.mu.Unlock()
	if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		p.t.Errorf("closing the proxy: %v", err)
	}
	p.wg.Wait()
}

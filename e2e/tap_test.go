package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// tap is the load balancer in front of the gateways in the mobile tests: every connection
// goes to the first backend that accepts it (so a draining gateway, which stops accepting,
// hands its clients to the next one), and what passes is recorded, so that a test can read
// on the wire what a client library sent (Last-Event-ID) and was sent (retry:), and when.
type tap struct {
	t        testing.TB
	Addr     string
	backends func() []string
	ln       net.Listener
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns []*tapConn
	open  map[net.Conn]struct{}
}

// tapConn is one client connection through the tap.
type tapConn struct {
	Accepted time.Time
	Backend  string
	mu       sync.Mutex
	request  bytes.Buffer // client -> gateway
	response bytes.Buffer // gateway -> client
	closed   time.Time    // when the gateway's side ended (zero while open)
}

// startTap listens on 127.0.0.1:0 and forwards to backends() (called per connection, so a
// test may add a gateway later). Everything stops at test cleanup.
func startTap(t testing.TB, backends func() []string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tap{t: t, Addr: ln.Addr().String(), backends: backends, ln: ln, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.stop)
	return p
}

func (p *tap) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// track registers c so that stop can close it; false when the tap is stopping.
func (p *tap) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open == nil {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *tap) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

func (p *tap) serve(client net.Conn) {
	defer p.wg.Done()
	defer client.Close()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	rec := &tapConn{Accepted: time.Now()}
	var server net.Conn
	for _, b := range p.backends() {
		c, err := net.DialTimeout("tcp", b, 2*time.Second)
		if err == nil {
			server, rec.Backend = c, b
			break
		}
	}
	if server == nil {
		return // no gateway accepts: the client sees its connection closed
	}
	defer server.Close()
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	p.mu.Lock()
	p.conns = append(p.conns, rec)
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		copyRecorded(server, client, rec, &rec.request)
		close(done)
	}()
	copyRecorded(client, server, rec, &rec.response)
	rec.mu.Lock()
	rec.closed = time.Now()
	rec.mu.Unlock()
	// The gateway ended the connection: end the client's side the same way (a close, which
	// the client sees as the end of its response) and stop reading it.
	client.Close()
	<-done
}

// copyRecorded copies src to dst, appending what passes to buf (under rec.mu).
func copyRecorded(dst, src net.Conn, rec *tapConn, buf *bytes.Buffer) {
	b := make([]byte, 32<<10)
	for {
		n, err := src.Read(b)
		if n > 0 {
			rec.mu.Lock()
			buf.Write(b[:n])
			rec.mu.Unlock()
			if _, werr := dst.Write(b[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok && err == io.EOF {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

func (p *tap) stop() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.open = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// tapStream is what the tap saw of one stream request.
type tapStream struct {
	Accepted    time.Time
	Closed      time.Time // zero while open
	Backend     string
	Path        string
	LastEventID string // the request's Last-Event-ID header ("" when absent)
	HasLastID   bool
	Retry       []int    // retry: values the gateway sent, ms
	IDs         []string // id: lines the gateway sent
}

var (
	retryLine = regexp.MustCompile(`(?m)^retry: ?(\d+)\r?$`)
	idLine    = regexp.MustCompile(`(?m)^id: ?(\S+)\r?$`)
)

// streams returns the stream requests seen so far, in the order they were accepted.
func (p *tap) streams() []tapStream {
	p.mu.Lock()
	conns := append([]*tapConn(nil), p.conns...)
	p.mu.Unlock()
	var out []tapStream
	for _, c := range conns {
		c.mu.Lock()
		req := append([]byte(nil), c.request.Bytes()...)
		resp := append([]byte(nil), c.response.Bytes()...)
		s := tapStream{Accepted: c.Accepted, Closed: c.closed, Backend: c.Backend}
		c.mu.Unlock()
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(req)))
		if err != nil || r.URL.Path != "/event-stream" {
			continue
		}
		s.Path = r.URL.RequestURI()
		_, s.HasLastID = r.Header["Last-Event-Id"]
		s.LastEventID = r.Header.Get("Last-Event-ID")
		for _, m := range retryLine.FindAllSubmatch(resp, -1) {
			n, _ := strconv.Atoi(string(m[1]))
			s.Retry = append(s.Retry, n)
		}
		for _, m := range idLine.FindAllSubmatch(resp, -1) {
			s.IDs = append(s.IDs, string(m[1]))
		}
		out = append(out, s)
	}
	return out
}

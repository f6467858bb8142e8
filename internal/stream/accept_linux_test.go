//go:build linux

package stream

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

// pendingConn is a client connection whose request was sent before the server accepted it,
// so that the plain accept path finds the request whole (as it does in a connect storm,
// where accepts lag behind connects).
type pendingConn struct {
	net.Conn
	r *bufio.Reader
}

// servePending sends each request on a connection of its own to a listener that is not being
// served yet, then serves it with e's stream server as the gateway does, and returns the
// connections in order.
func servePending(t *testing.T, e *env, requests ...string) []*pendingConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := dialPending(t, ln.Addr().String(), requests...)
	serve(t, e, e.srv.Listener(ln, "/event-stream"))
	return conns
}

// dialPending sends each request on a connection of its own to addr, and waits until the
// server's kernel has each whole.
func dialPending(t *testing.T, addr string, requests ...string) []*pendingConn {
	t.Helper()
	conns := make([]*pendingConn, len(requests))
	for i, req := range requests {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		conns[i] = &pendingConn{Conn: c, r: bufio.NewReader(c)}
		// The server's kernel has the request once it acknowledged all of it.
		eventually(t, "the request acknowledged", func() bool { return acknowledged(t, c) })
	}
	return conns
}

// serve serves l (made by e's stream server) until the test ends.
func serve(t *testing.T, e *env, l net.Listener) {
	hs := &http.Server{Handler: e.srv, ConnContext: e.srv.ConnContext, MaxHeaderBytes: maxHeaderBytes}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.Serve(l) }()
	t.Cleanup(func() { hs.Close(); <-served })
}

// acknowledged reports whether the peer acknowledged everything sent on c.
func acknowledged(t *testing.T, c net.Conn) bool {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	if err := raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || info == nil {
		t.Fatalf("TCP_INFO: %v", err)
	}
	return info.Unacked == 0 && info.Notsent_bytes == 0
}

func (c *pendingConn) response(t *testing.T, method string) *http.Response {
	t.Helper()
	res, err := http.ReadResponse(c.r, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	return res
}

// TestPlainAcceptPath: requests that arrive whole with their connection are served by the
// plain accept path when they are plain stream GETs, with the same answers net/http would
// give (a stream with its CORS head and events; a refusal with the JSON error), and by
// net/http otherwise, which gets every byte that was read.
func TestPlainAcceptPath(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour, AllowedOrigins: []string{"https://app.example"}})
	stream := "GET " + e.streamPath(secretAll, "c") + " HTTP/1.1\r\nHost: gw\r\nOrigin: https://app.example\r\nAccept: text/event-stream\r\n\r\n"
	badKey := "GET " + e.streamPath("no-such-key", "c") + " HTTP/1.1\r\nHost: gw\r\nOrigin: https://app.example\r\n\r\n"
	head := "HEAD " + e.streamPath(secretAll, "c") + " HTTP/1.1\r\nHost: gw\r\n\r\n"
	pipelined := "GET " + e.streamPath(secretAll, "c") + " HTTP/1.1\r\nHost: gw\r\n\r\nGET / HTTP/1.1\r\nHost: gw\r\n\r\n"
	opens0, refused0 := e.counter(e.srv.metrics.opens, "ok"), e.counter(e.srv.metrics.opens, "401")
	conns := servePending(t, e, stream, badKey, head, pipelined)

	res := conns[0].response(t, http.MethodGet)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" ||
		res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || res.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("stream: %d %v", res.StatusCode, res.Header)
	}
	eventually(t, "the stream subscribed", func() bool { return e.registered() == 1 })
	m := e.publish("c", 1700000000001, "")
	body := bufio.NewReader(res.Body)
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before the event: %v", err)
		}
		if strings.HasPrefix(line, "id: ") {
			if got := strings.TrimSpace(strings.TrimPrefix(line, "id: ")); got != m.ID {
				t.Fatalf("event id %q, want %q", got, m.ID)
			}
			break
		}
	}

	res = conns[1].response(t, http.MethodGet)
	var msg struct{ Error string }
	if err := json.NewDecoder(res.Body).Decode(&msg); err != nil {
		t.Fatalf("refusal body: %v", err)
	}
	if res.StatusCode != http.StatusUnauthorized || msg.Error != "unknown key" || !res.Close ||
		res.Header.Get("Content-Type") != "application/json" || res.Header.Get("Cache-Control") != "no-store" ||
		res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("refusal: %d %v %q", res.StatusCode, res.Header, msg.Error)
	}
	if _, err := conns[1].r.ReadByte(); err != io.EOF {
		t.Fatalf("after a refusal the connection is closed; read: %v", err)
	}

	res = conns[2].response(t, http.MethodHead)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("HEAD (net/http): %d %v", res.StatusCode, res.Header)
	}
	res = conns[3].response(t, http.MethodGet)
	expectError(t, res, http.StatusBadRequest, "unexpected data")

	if got := testutil.ToFloat64(e.srv.metrics.plain); got != 2 {
		t.Errorf("plain accept path read %v requests, want 2 (the stream and the refused one)", got)
	}
	if got := e.counter(e.srv.metrics.opens, "ok") - opens0; got != 2 {
		t.Errorf("opens ok +%v, want 2 (the stream and HEAD)", got)
	}
	if got := e.counter(e.srv.metrics.opens, "401") - refused0; got != 1 {
		t.Errorf("opens 401 +%v, want 1", got)
	}
}

// TestPlainAcceptPathStopsWithTheListener: closing the listener (http.Server.Close, as a
// drain does) ends the accepting goroutine's wait and stops the socket listening: the
// duplicate the plain path waits on is closed with it.
func TestPlainAcceptPathStopsWithTheListener(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := e.srv.Listener(ln, "/event-stream")
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if err == nil {
			t.Fatal("Accept returned a connection from a closed listener")
		}
	case <-time.After(waitLimit):
		t.Fatal("Accept still waiting after Close")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the socket still listens after Close")
	}
}

// TestPlainAcceptPathLateRequest: a connection whose request comes after it was accepted gets
// its stream either way: from the plain path if the request comes while the connection
// waits for it, from net/http after that.
func TestPlainAcceptPathLateRequest(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	for _, late := range []time.Duration{0, plainWait / 2, 4 * plainWait} {
		c, err := net.Dial("tcp", e.ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		time.Sleep(late) // not a measurement: either path must answer the same
		if _, err := io.WriteString(c, "GET "+e.streamPath(secretAll, "c")+" HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("request %v after connecting: %v %v", late, res, err)
		}
	}
	eventually(t, "three streams", func() bool { return e.registered() == 3 })
}

// blockingSink holds its channel's fan-out until released, as a fan-out to a large channel
// does for a while.
type blockingSink struct {
	entered chan struct{}
	release chan struct{}
}

func (s *blockingSink) Offer(int, *hub.Message) {
	s.entered <- struct{}{}
	<-s.release
}

// TestPlainAcceptPathDoesNotWaitForAFanOut: a stream whose channel is being fanned out to is
// opened off the accepting goroutine, which meanwhile accepts and opens the next stream.
func TestPlainAcceptPathDoesNotWaitForAFanOut(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	sink := &blockingSink{entered: make(chan struct{}), release: make(chan struct{})}
	sub, _ := e.hub.Subscribe(sink, []string{"c"}, hub.Version{})
	defer e.hub.Unsubscribe(sub)
	published := make(chan struct{})
	go func() { defer close(published); e.publish("c", 1700000000001, "") }()
	<-sink.entered // c's fan-out is in progress, holding c's lock
	conns := servePending(t, e,
		"GET "+e.streamPath(secretAll, "c")+" HTTP/1.1\r\nHost: gw\r\n\r\n",
		"GET "+e.streamPath(secretAll, "d")+" HTTP/1.1\r\nHost: gw\r\n\r\n")
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(sink.release) }) }
	t.Cleanup(release) // before the server's cleanup, should the accepting goroutine be stuck
	// Accepted after c's stream: it could not be answered if that one held the accept.
	if res := conns[1].response(t, http.MethodGet); res.StatusCode != http.StatusOK {
		t.Fatalf("d: %d", res.StatusCode)
	}
	release()
	<-published
	if res := conns[0].response(t, http.MethodGet); res.StatusCode != http.StatusOK {
		t.Fatalf("c: %d", res.StatusCode)
	}
	if got := testutil.ToFloat64(e.srv.metrics.plain); got != 2 {
		t.Errorf("plain accept path read %v requests, want 2", got)
	}
}

// TestPlainAcceptPathSocketOptions: a stream opened by the plain accept path has the socket
// options a net/http connection's stream has: TCP_NODELAY (the Go runtime sets it on every
// connection it accepts; without it a frame waits for the acknowledgement of the one
// before), TCP_USER_TIMEOUT and the fixed send buffer.
func TestPlainAcceptPathSocketOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen func(e *env, requests ...string) []*pendingConn
	}{
		// Listener: a socket listening already; each accepted socket gets every option.
		{"Listener", func(e *env, requests ...string) []*pendingConn { return servePending(e.t.(*testing.T), e, requests...) }},
		// Listen: options set before listen(2), which accepted sockets inherit.
		{"Listen", func(e *env, requests ...string) []*pendingConn {
			l, err := e.srv.Listen(context.Background(), "127.0.0.1:0", "/event-stream")
			if err != nil {
				e.t.Fatal(err)
			}
			conns := dialPending(e.t.(*testing.T), l.Addr().String(), requests...)
			serve(e.t.(*testing.T), e, l)
			return conns
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, modes[0], Config{Heartbeat: time.Hour, WriteTimeout: 7 * time.Second, SendBuffer: 32 << 10})
			conns := tc.listen(e, "GET "+e.streamPath(secretAll, "c")+" HTTP/1.1\r\nHost: gw\r\n\r\n")
			if res := conns[0].response(t, http.MethodGet); res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			if got := testutil.ToFloat64(e.srv.metrics.plain); got != 1 {
				t.Fatalf("plain accept path read %v requests, want 1", got)
			}
			var fd int
			e.srv.mu.Lock()
			for _, st := range e.srv.streams {
				if ps, ok := st.(*pollStream); ok {
					fd = ps.fd
				}
			}
			e.srv.mu.Unlock()
			for _, o := range []struct {
				name       string
				level, opt int
				want       int
			}{
				{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
				{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 7000},
				{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, 2 * (32 << 10)}, // the kernel doubles it
			} {
				if got, err := unix.GetsockoptInt(fd, o.level, o.opt); err != nil || got != o.want {
					t.Errorf("%s = %d (%v), want %d", o.name, got, err, o.want)
				}
			}
		})
	}
}

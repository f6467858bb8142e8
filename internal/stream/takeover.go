package stream

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// This file is the HTTP adapter of a taken-over stream: it takes the connection away from
// net/http (hijack), renders the response head that net/http would have written, and hands
// both to the poller (poller_linux.go), which owns the stream from then on
// (pollstream_linux.go). Only plain HTTP/1.1 streams are taken over, and only where there is a
// poller (Linux); every other stream stays on the net/http path (loop.go).

// chunkedHeartbeat is the heartbeat as one HTTP/1.1 chunk: taken-over streams write the
// chunked framing net/http would have added.
var chunkedHeartbeat = wire.Chunk(wire.Heartbeat)

// serveTakeover hijacks the connection of an admitted HTTP/1.1 stream request and hands it to
// the poller; the handler goroutine (and net/http's buffers) are gone once the poller has
// written the response head.
func (s *Server) serveTakeover(w http.ResponseWriter, r *http.Request, b *streamBase, channels []string, from start) {
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable after all (a wrapped writer): serve it the ordinary way.
		s.serveLoop(w, r, b, channels, from)
		return
	}
	b.protocol = protoHTTP1
	cors := s.corsLines(r.Header.Get("Origin"))
	sock, ok := socketFD(nc)
	if !ok || brw.Reader.Buffered() > 0 {
		// Not a plain socket, or the client pipelined bytes after its request: not a
		// well-behaved SSE client; refuse rather than guess.
		s.refuseConn(nc, b, &refusal{status: http.StatusBadRequest, msg: "unexpected data after request"}, cors)
		return
	}
	if r.Context().Value(tunedKey{}) == nil {
		s.tuneSocket(sock) // not accepted through ConnContext (an embedding server)
	}
	fd, err := detach(nc)
	if err != nil {
		// Out of descriptors for the duplicate (--max-streams above what the open-files
		// limit allows): the client is told to come back, as over --max-streams.
		s.log.Warn("taking over a stream's socket failed", "err", err)
		s.refuseConn(nc, b, &refusal{http.StatusServiceUnavailable, "stream could not be opened", 1}, "")
		return
	}
	head := plainHead
	if cors != "" {
		head = responseHead(cors)
	}
	s.poller.takeOver(fd, b, channels, from, head)
}

// refuseConn answers a request whose connection net/http no longer has (hijacked, or never
// given to it: accept.go) with the error ServeHTTP would have sent, closes the connection and
// undoes b's admission (b may be nil: not admitted).
func (s *Server) refuseConn(nc net.Conn, b *streamBase, no *refusal, cors string) {
	_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	_, _ = nc.Write(rawRefusal(no, cors))
	_ = nc.Close()
	if b != nil {
		s.unadmit(b)
	}
	s.metrics.refused(no.status)
}

// rawRefusal renders the whole HTTP/1.1 response httperr.Write would give no (with cors
// header lines), closing the connection: written outside net/http, it cannot be kept alive.
func rawRefusal(no *refusal, cors string) []byte {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{no.msg})
	body = append(body, '\n') // as httperr's json.Encoder ends it
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"+
		"X-Content-Type-Options: nosniff\r\n", no.status, http.StatusText(no.status))
	if no.retryAfter > 0 {
		fmt.Fprintf(&b, "Retry-After: %d\r\n", no.retryAfter)
	}
	b.WriteString(cors)
	fmt.Fprintf(&b, "Connection: close\r\nContent-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return []byte(b.String())
}

// plainHead is the head of every taken-over stream without CORS headers (most: SDKs outside a
// browser), shared: nothing writes to it.
var plainHead = responseHead("")

// responseHead is what net/http would have written for a stream response on HTTP/1.1 (see
// writeHeaders), followed by a first heartbeat chunk that makes clients see the stream open.
func responseHead(corsLines string) []byte {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n" +
		"Connection: keep-alive\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n")
	b.WriteString(corsLines)
	b.WriteString("\r\n")
	b.Write(chunkedHeartbeat)
	return []byte(b.String())
}

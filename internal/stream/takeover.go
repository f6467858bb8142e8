package stream

import (
	"context"
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

// unavailableResponse is the whole answer to a stream whose hijacked connection could not be
// taken over after all (out of descriptors): net/http can no longer write one.
const unavailableResponse = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n" +
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: 38\r\n\r\n{\"error\":\"stream could not be opened\"}"

// unexpectedDataResponse is the whole answer to a request whose connection cannot be taken
// over once hijacked: net/http can no longer write one, so it is written raw.
const unexpectedDataResponse = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n" +
	"Connection: close\r\nContent-Length: 41\r\n\r\n{\"error\":\"unexpected data after request\"}"

// serveTakeover hijacks the connection of an admitted HTTP/1.1 stream request and hands it to
// the poller; the handler goroutine (and net/http's buffers) are gone once the poller has
// written the response head.
func (s *Server) serveTakeover(w http.ResponseWriter, r *http.Request, b *streamBase, channels []string, from start) {
	cors := corsHeaderLines(w.Header())
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable after all (a wrapped writer): serve it the ordinary way.
		s.serveLoop(w, r, b, channels, from)
		return
	}
	b.protocol = protoHTTP1
	fd, ok := socketFD(nc)
	if !ok || brw.Reader.Buffered() > 0 {
		// Not a plain socket, or the client pipelined bytes after its request: not a
		// well-behaved SSE client; refuse rather than guess.
		_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, _ = nc.Write([]byte(unexpectedDataResponse))
		_ = nc.Close()
		s.unadmit(b)
		s.metrics.opens.WithLabelValues("400").Inc()
		return
	}
	if r.Context().Value(tunedKey{}) == nil {
		s.tuneSocket(fd) // not accepted through ConnContext (an embedding server)
	}
	head := plainHead
	if cors != "" {
		head = responseHead(cors)
	}
	s.poller.takeOver(context.WithoutCancel(r.Context()), nc, b, channels, from, head)
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

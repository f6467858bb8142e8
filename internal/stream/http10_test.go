package stream

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestHTTP10 serves an HTTP/1.0 client (no chunked encoding: the body runs until the
// connection closes) on the net/http path: headers without Transfer-Encoding, then the
// heartbeat and events as plain bytes.
func TestHTTP10(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	c := e.dialRaw(nil)
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: gw\r\n\r\n", e.streamPath(secretAll, "c"))
	status, lines := c.head(t)
	if !strings.HasPrefix(status, "HTTP/1.") || !strings.HasSuffix(status, " 200 OK") {
		t.Fatalf("status %q", status)
	}
	h := headerMap(t, lines)
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Transfer-Encoding") != "" {
		t.Fatalf("headers %q", lines)
	}
	if got := h.Get("Connection"); strings.EqualFold(got, "keep-alive") {
		t.Errorf("Connection: %s on an HTTP/1.0 response whose body ends only when the connection closes", got)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != ":\n\n" {
		t.Fatalf("first bytes %q %v", buf, err)
	}
	m := e.publish("c", 1, "")
	frame := make([]byte, len(m.Frame))
	if _, err := io.ReadFull(bufio.NewReader(c.br), frame); err != nil || string(frame) != string(m.Frame) {
		t.Fatalf("event %q %v", frame, err)
	}
	if got := testutilGauge(e, "all", protoHTTP1); got != 1 {
		t.Fatalf("streams_open{all,http1} = %v", got)
	}
}

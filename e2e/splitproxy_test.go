package e2e

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// splitProxy stands between an SDK and the gateway the way any HTTP proxy or TCP path may: it
// forwards each stream request to the gateway and hands the response body on in pieces of 1 to
// 7 bytes, each flushed on its own (its own HTTP chunk and TCP write, 1 ms apart), so that every
// frame the gateway writes, heartbeats and retry: included, reaches the client split mid-line
// and mid-field. A stream the gateway cuts is cut towards the client; one it ends cleanly ends
// cleanly. Point an SDK's sse.hostname at URL.
type splitProxy struct {
	URL      string
	upstream string // the gateway's host:port

	mu      sync.Mutex
	streams int // responses with status 200 it relayed
}

func startSplitProxy(t testing.TB, gw *gateway) *splitProxy {
	t.Helper()
	p := &splitProxy{upstream: gw.Addr}
	srv := httptest.NewServer(http.HandlerFunc(p.serveHTTP))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// opened is how many streams (200 responses) it has relayed.
func (p *splitProxy) opened() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.streams
}

func (p *splitProxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.upstream+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for _, h := range []string{"Accept", "Cache-Control", "Last-Event-ID", "Origin"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	if resp.StatusCode == http.StatusOK {
		p.mu.Lock()
		p.streams++
		p.mu.Unlock()
	}
	buf := make([]byte, 32<<10)
	size := 0
	for {
		n, err := resp.Body.Read(buf)
		for rest := buf[:n]; len(rest) > 0; {
			size = size%7 + 1
			piece := rest[:min(size, len(rest))]
			rest = rest[len(piece):]
			if _, werr := w.Write(piece); werr != nil || rc.Flush() != nil {
				return // the client went away
			}
			time.Sleep(time.Millisecond)
		}
		switch {
		case errors.Is(err, io.EOF):
			return // a clean end
		case err != nil:
			// Cut by the gateway (a drain or a lifetime close ends without the final chunk):
			// cut the client's response too.
			panic(http.ErrAbortHandler)
		}
	}
}
